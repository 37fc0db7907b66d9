// What a session counts and times, behind one object: its counters (in a SharedArrayBuffer
// when the server gives one, so the main thread reads them live), the service-time histogram,
// the optional per-stage timers, the heap growth and the fault path's clock. Counting is a
// typed-array store: the fault path pays nothing more for it.
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import * as uffd from '../uffd/index.js'
import { BREAKDOWN_ENABLED, FaultBreakdown, type FaultBreakdownSummary } from './fault-breakdown.js'
import { HeapGrowth, WARM_FAULTS, type HeapGrowthSummary } from './heap-growth.js'
import { HISTOGRAM_CELLS, LatencyHistogram } from './latency-histogram.js'

/** Counter slots. Pages installed by cause take three consecutive slots (K_PAGES + cause). */
export const K_FAULTS = 0
export const K_PAGES = 1
export const K_ZERO_PAGES = 4
export const K_INSTALL_IOCTLS = 5
export const K_BYTES_DECODED = 6
export const K_REMOVED_PAGES = 7
export const K_EVENTS = 8
export const K_REMOTE_WAITS = 9
export const K_FORKS = 10
/** Cache-mapped guests: faults whose folio was in the decoded cache by the time the server
 * read them (answered with a wake), and pages served into the guest's private memory because
 * their folio was not in the cache yet. */
export const K_CACHE_WAKES = 11
export const K_CACHE_PRIVATE = 12
/** Folios this session asked the fill workers for. */
export const K_FOLIOS_REQUESTED = 13
/** Pages an install read from the decoded cache instead of decoding them. */
export const K_PAGES_FROM_CACHE = 14
/** Turns of the session's loop: a heartbeat the main thread can watch. */
export const K_LOOP_TURNS = 15
/** Pages poisoned (they failed verification, or could not be had). */
export const K_POISONED = 16
/** Pages a prefetch or background run skipped because they failed verification. */
export const K_BAD_SKIPPED = 17
export const COUNTER_SLOTS = 18
/** A session's shared memory: COUNTER_SLOTS counters, then its service-time histogram. */
export const SESSION_METER_BYTES = (COUNTER_SLOTS + HISTOGRAM_CELLS) * 8

export interface SessionCacheStats {
  wakes: number
  privatePages: number
  foliosRequested: number
  pagesFromCache: number
}

export interface SessionStats {
  faults: number
  pagesInstalled: [number, number, number]
  zeroPagesInstalled: number
  copyIoctls: number
  bytesDecoded: number
  removedPages: number
  /** Children the guest forked. */
  forks: number
  events: number
  /** Stored snapshot bytes read to serve this guest. */
  bytesRead: number
  /** Faults that had to wait for their chunk to arrive from the object store. */
  remoteWaits: number
  poisonedPages: number
  badPagesSkipped: number
  /** How the guest's memory was backed: 'anonymous' or 'cache'. */
  map: 'anonymous' | 'cache'
  cache: SessionCacheStats
  latency: ReturnType<LatencyHistogram['summary']>
  /** Per-stage times and system-call counts, with FAULTLINE_BREAKDOWN=1. */
  breakdown?: FaultBreakdownSummary
  /** What the session's thread allocated (see heap-growth.ts for when it is meaningful). */
  heap: HeapGrowthSummary
  /** CPU time of the session's thread (start() to the end), ns; NaN where not measurable. */
  cpuNs: number
  durationMs: number
  endReason: string
  /** With `serve --learn`: the snapshot pages the guest used, in first-use order. */
  usedPages?: Uint32Array
}

export class SessionMeters {
  readonly counters: Float64Array
  readonly histogram: LatencyHistogram
  readonly breakdown = new FaultBreakdown()
  readonly heap = new HeapGrowth()
  /** The fault path's clock: performance.now() allocates a heap number per call. */
  readonly clock = new uffd.MonotonicClock()
  private readonly startMs = performance.now()
  private readonly cpuAtStartNs = threadCpuNs()

  /** `shared`: SESSION_METER_BYTES the server reads live (default: private ones). */
  constructor(shared?: SharedArrayBuffer) {
    const buffer = shared ?? new ArrayBuffer(SESSION_METER_BYTES)
    this.counters = new Float64Array(buffer, 0, COUNTER_SLOTS)
    this.histogram = new LatencyHistogram(new Float64Array(buffer, COUNTER_SLOTS * 8, HISTOGRAM_CELLS))
  }

  /** Counts a fault on an absent page; at the WARM_FAULTS-th, marks the heap. */
  fault(): void {
    if (++this.counters[K_FAULTS] === WARM_FAULTS) this.heap.markWarm()
  }

  /** A fault's service time, from when it was read to its install. */
  served(latencyNs: number): void {
    this.histogram.record(latencyNs)
    if (BREAKDOWN_ENABLED) {
      this.breakdown.serviceNs += latencyNs
      this.breakdown.faults++
    }
  }

  finish(map: 'anonymous' | 'cache', bytesRead: number, endReason: string): SessionStats {
    const c = this.counters
    return {
      faults: c[K_FAULTS],
      pagesInstalled: [c[K_PAGES], c[K_PAGES + 1], c[K_PAGES + 2]],
      zeroPagesInstalled: c[K_ZERO_PAGES],
      copyIoctls: c[K_INSTALL_IOCTLS],
      bytesDecoded: c[K_BYTES_DECODED],
      removedPages: c[K_REMOVED_PAGES],
      forks: c[K_FORKS],
      events: c[K_EVENTS],
      bytesRead,
      remoteWaits: c[K_REMOTE_WAITS],
      poisonedPages: c[K_POISONED],
      badPagesSkipped: c[K_BAD_SKIPPED],
      map,
      cache: { wakes: c[K_CACHE_WAKES], privatePages: c[K_CACHE_PRIVATE], foliosRequested: c[K_FOLIOS_REQUESTED], pagesFromCache: c[K_PAGES_FROM_CACHE] },
      latency: this.histogram.summary(),
      breakdown: BREAKDOWN_ENABLED ? this.breakdown.finish() : undefined,
      heap: this.heap.finish(c[K_FAULTS]),
      cpuNs: threadCpuNs() - this.cpuAtStartNs,
      durationMs: Math.round(performance.now() - this.startMs),
      endReason,
    }
  }
}

/** CPU time the calling thread has run, in ns (first field of /proc/thread-self/schedstat). */
function threadCpuNs(): number {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ', 1)[0])
  } catch {
    return NaN
  }
}
