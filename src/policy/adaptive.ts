// adaptive[:MAX]: on-demand readahead in the spirit of Linux's (mm/readahead.c): a small table
// of streams; a fault that continues a stream grows its window (x2 up to MAX pages), a strided
// one shrinks it (/2), anything else is served alone and may start a stream.
import type { PolicyArgs } from './args.js'
import { InstallCause, type FaultInfo, type FaultPolicy, type PolicyContext, type RunList } from './policy.js'

/** Streams tracked at once (least recently used is replaced). */
export const ADAPTIVE_STREAMS = 8
/** Window of a stream's first prefetch, in pages. */
export const ADAPTIVE_INITIAL_WINDOW = 4
export const ADAPTIVE_DEFAULT_MAX = 256
/** A fault this few pages past a stream's end still continues it. */
export const ADAPTIVE_SKIP_PAGES = 8

/**
 * Stream s covers [start[s], next[s]): `start` is the fault that issued its last window,
 * `next` the first page past that window. A fault at:
 * - next:                 sequential: the window doubles (0 -> INITIAL) and is prefetched;
 * - (next, next + SKIP]:  the stream skipped pages. If several threads share the stream (one
 *                         scan split between them, racing), it is sequential: the window
 *                         grows and the skipped pages are prefetched too. If one thread does,
 *                         it is a strided scan: the window halves, the skipped pages are left;
 * - [start - SKIP, next): a page just behind or inside the stream (another thread of the same
 *                         scan, or a race): the stream is marked shared if the thread differs;
 * - anywhere else:        random; the least recently used stream restarts here, window 0.
 * Thread ids come with UFFD_FEATURE_THREAD_ID (faultline's handshake); without them (0) no
 * stream is ever shared, so a multi-threaded scan gets smaller windows, never wrong pages.
 */
export class AdaptivePolicy implements FaultPolicy {
  static fromArgs(args: PolicyArgs): AdaptivePolicy {
    return new AdaptivePolicy(args.int('a largest window of', 1, 65536, ADAPTIVE_DEFAULT_MAX, { unit: 'pages' }))
  }

  readonly name: string
  readonly maxWindow: number
  private readonly start = new Float64Array(ADAPTIVE_STREAMS).fill(-1)
  private readonly next = new Float64Array(ADAPTIVE_STREAMS).fill(-1)
  private readonly window = new Int32Array(ADAPTIVE_STREAMS)
  private readonly lastThread = new Float64Array(ADAPTIVE_STREAMS)
  private readonly shared = new Uint8Array(ADAPTIVE_STREAMS)
  private readonly lastUse = new Float64Array(ADAPTIVE_STREAMS)
  private tick = 0

  constructor(maxWindow: number) {
    this.maxWindow = maxWindow
    this.name = `adaptive:${maxWindow}`
  }

  /** Window of the stream whose next expected fault is `page`, or 0 (tests). */
  windowAt(page: number): number {
    for (let s = 0; s < ADAPTIVE_STREAMS; s++) if (this.next[s] === page) return this.window[s]
    return 0
  }

  onFault(fault: FaultInfo, _ctx: PolicyContext, plan: RunList): void {
    const p = fault.page
    const thread = fault.threadId
    const tick = ++this.tick
    let lru = 0
    for (let s = 0; s < ADAPTIVE_STREAMS; s++) {
      const next = this.next[s]
      if (next < 0) {
        lru = s
        this.lastUse[s] = -1
        continue
      }
      if (p >= this.start[s] - ADAPTIVE_SKIP_PAGES && p <= next + ADAPTIVE_SKIP_PAGES) {
        if (thread !== this.lastThread[s]) this.shared[s] = 1
        if (p === next) {
          this.grow(s)
        } else if (p > next) {
          if (this.shared[s]) {
            this.grow(s)
            plan.add(next, p - next, InstallCause.Prefetch)
          } else {
            this.window[s] >>= 1
          }
        } else {
          this.lastThread[s] = thread
          this.lastUse[s] = tick
          return
        }
        this.issue(s, p, plan, thread, tick)
        return
      }
      if (this.lastUse[s] < this.lastUse[lru]) lru = s
    }
    this.start[lru] = p
    this.next[lru] = p + 1
    this.window[lru] = 0
    this.shared[lru] = 0
    this.lastThread[lru] = thread
    this.lastUse[lru] = tick
  }

  private grow(s: number): void {
    const w = this.window[s]
    this.window[s] = w === 0 ? Math.min(ADAPTIVE_INITIAL_WINDOW, this.maxWindow) : Math.min(w * 2, this.maxWindow)
  }

  private issue(s: number, p: number, plan: RunList, thread: number, tick: number): void {
    const w = this.window[s]
    if (w > 0) plan.add(p + 1, w, InstallCause.Prefetch)
    this.start[s] = p
    this.next[s] = p + 1 + w
    this.lastThread[s] = thread
    this.lastUse[s] = tick
  }
}
