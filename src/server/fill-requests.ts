// A session's side of the fill pipeline: asks the snapshot's fill workers for the folios of
// runs it wants (a fault's folio first, then prefetch, then background), and keeps the runs an
// anonymous guest waits to have installed from the cache until the workers say they are in.
// The session's thread never waits for a fill: it polls the eventfd the workers signal.
import { ABSENT, FILLING, PRESENT, QUEUED, UNSERVABLE, ZERO, type DecodedCache } from '../cache/decoded-cache.js'
import type { FillNotifier } from '../cache/fill-notifier.js'
import type { FillQueue } from '../cache/fill-queue.js'
import { type InstallCause, RunList } from '../policy/policy.js'
import type { PageSource } from '../snapshot/page-source.js'
import * as uffd from '../uffd/index.js'
import type { GuestMemory } from './guest-memory.js'
import { K_FOLIOS_REQUESTED } from './session-meters.js'

/** What a session is given to use the decoded cache: the cache, and its fill workers' queue and
 * notifier (one set per snapshot, shared by every session). */
export interface CacheAccess {
  cache: DecodedCache
  queue: FillQueue
  notifier: FillNotifier
}

/** Runs of the waiting list looked at past the first that is not ready yet: fills complete in
 * about the order they were asked for. */
const SCAN_AHEAD = 32
/** While waiting for fills: how often they are re-checked without a wake-up. */
const RECHECK_MS = 1000

export class FillRequests {
  /** Signalled by fill workers while this session waits for fills: made on the first wait
   * (most sessions never wait, and hold no descriptor for it). */
  private readyFd = -1
  private slot = -1
  /** Runs waiting for their folios, in order. */
  private waiting = new RunList(64)
  private spare = new RunList(64)

  constructor(
    readonly cache: DecodedCache,
    private readonly queue: FillQueue,
    private readonly notifier: FillNotifier,
    private readonly memory: GuestMemory,
    private readonly counters: Float64Array,
  ) {}

  private ensureNotified(): void {
    if (this.readyFd >= 0) return
    this.readyFd = uffd.createEventFd()
    this.slot = this.notifier.acquire(this.readyFd)
  }

  get waitingRuns(): number {
    return this.waiting.length
  }

  /** Free requests at `priority` (background work paces itself by it). */
  room(priority: number): number {
    return this.queue.room(priority)
  }

  /** Asks for every folio of snapshot pages [first, first+count) that lies in the guest's
   * regions and is not in the cache or asked for already. Returns folios asked for. */
  request(first: number, count: number, priority: number): number {
    const cache = this.cache
    const shift = cache.folioShift
    const queuedAt = cache.states.queuedAt
    let asked = 0
    const end = first + count
    let page = first
    while (page < end) {
      const region = this.memory.regionOfPage(page)
      if (region === undefined) {
        page++
        continue
      }
      const stop = Math.min(end, region.firstPage + region.pages)
      for (let folio = page >>> shift, last = (stop - 1) >>> shift; folio <= last; folio++) {
        if (cache.markQueued(folio)) {
          queuedAt[folio] = priority
          if (this.queue.push(folio, priority)) asked++
          else cache.states.move(folio, QUEUED, ABSENT)
        } else if (cache.states.get(folio) === QUEUED && priority < queuedAt[folio]) {
          // Queued for later work: a more urgent request queues it again, at its priority (the
          // entry left behind is skipped once the folio is filled).
          queuedAt[folio] = priority
          this.queue.push(folio, priority)
        } else if (cache.states.get(folio) === PRESENT) {
          cache.touch(folio)
        }
      }
      page = stop
    }
    this.counters[K_FOLIOS_REQUESTED] += asked
    return asked
  }

  /** Asks for the run's folios at `priority` and keeps the run (to be installed with `cause`)
   * until they are in (anonymous guests). */
  requestAndWait(first: number, count: number, cause: InstallCause, priority: number): void {
    this.ensureNotified()
    this.request(first, count, priority)
    this.waiting.add(first, count, cause)
    this.notifier.arm(this.slot, true)
  }

  /** requestAndWait for each piece of [first, first+count) that lies in one folio: each piece
   * goes in as soon as its own folio is there. */
  requestAndWaitByFolio(first: number, count: number, cause: InstallCause, priority: number): void {
    const shift = this.cache.folioShift
    const end = first + count
    for (let p = first; p < end; ) {
      const next = Math.min(end, ((p >>> shift) + 1) << shift)
      this.requestAndWait(p, next - p, cause, priority)
      p = next
    }
  }

  /** Blocks until every run waited for is in, handing each to `install` as its folios arrive
   * (nothing to install for a cache-mapped guest: it maps them). False when `stopFd` was
   * signalled first. */
  waitAll(stopFd: number, install: ((ready: RunList) => void) | undefined, source: PageSource, staging: Buffer): boolean {
    const poll = new uffd.PollSet(2)
    this.ensureNotified()
    // With no notifier slot free, the re-check is all there is: make it short.
    const recheckMs = this.slot >= 0 ? RECHECK_MS : 5
    poll.set(0, this.readyFd, uffd.POLLIN)
    poll.set(1, stopFd, uffd.POLLIN)
    const ready = new RunList(64)
    // Runs whose folios are in already (a server that served this snapshot before) get no
    // signal from a fill worker: taken now, not after the first re-check.
    this.takeReady(ready)
    if (install !== undefined && ready.length > 0) install(ready)
    while (this.waiting.length > 0) {
      // This thread has nothing else to do: it fills folios too (and the work gets done even
      // when no fill worker could start).
      const folio = this.queue.pop()
      if (folio >= 0) {
        if (this.cache.fill(folio, source, staging) === 'filled') this.notifier.notifyArmed()
      } else {
        poll.wait(recheckMs)
      }
      if (poll.wait(0) > 0 && poll.revents(1) !== 0) return false
      ready.clear()
      this.takeReady(ready)
      if (install !== undefined && ready.length > 0) install(ready)
    }
    return true
  }

  /** Moves the runs whose folios are all in (or will never be) into `ready`, in order; the
   * others keep waiting. A folio evicted before its run went in is asked for again. */
  takeReady(ready: RunList): void {
    if (this.readyFd >= 0) uffd.drainEventFd(this.readyFd)
    const w = this.waiting
    const keep = this.spare
    keep.clear()
    let notReady = 0
    for (let r = 0; r < w.length; r++) {
      if (notReady <= SCAN_AHEAD && this.runReady(w.first[r], w.count[r], w.cause[r])) ready.add(w.first[r], w.count[r], w.cause[r] as InstallCause)
      else {
        keep.add(w.first[r], w.count[r], w.cause[r] as InstallCause)
        notReady++
      }
    }
    this.spare = w
    this.waiting = keep
    if (keep.length === 0) this.notifier.arm(this.slot, false)
  }

  private runReady(first: number, count: number, cause: number): boolean {
    const cache = this.cache
    const shift = cache.folioShift
    for (let folio = first >>> shift, last = (first + count - 1) >>> shift; folio <= last; folio++) {
      const s = cache.states.get(folio)
      if (s === PRESENT || s === ZERO || s === UNSERVABLE) continue
      if (s === ABSENT) this.request(folio << shift, 1, cause)
      return false
    }
    return true
  }

  /** True when the folio of `page` is in the cache, on its way, or never stored (zero): a
   * policy need not ask for it. */
  isCovered(page: number): boolean {
    const s = this.cache.stateOfPage(page)
    return s === PRESENT || s === ZERO || s === QUEUED || s === FILLING
  }

  close(): void {
    if (this.readyFd < 0) return
    this.notifier.release(this.slot)
    uffd.closeFd(this.readyFd)
    this.readyFd = -1
  }
}
