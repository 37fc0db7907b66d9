// Session: serves one guest's faults until it goes away. Runs inside a worker thread and
// blocks in poll(2) on the guest's uffd, its socket and the server's stop eventfd, so the
// main event loop never waits on a fault. The fault path reuses preallocated buffers.
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import type { FaultInfo, FaultPolicy, PolicyContext } from '../policy/policy.js'
import { InstallCause, RunList } from '../policy/policy.js'
import type { PageSource } from '../snapshot/page-source.js'
import * as uffd from '../uffd/index.js'
import { ABSENT, DISCARDED, GONE, GuestMemory, MappedRegion, PRESENT } from './guest-memory.js'
import type { GuestRegion } from './handshake.js'
import { LatencyHistogram } from './latency-histogram.js'
import { BREAKDOWN_ENABLED, FaultBreakdown, type FaultBreakdownSummary } from './fault-breakdown.js'
import { HeapGrowth, WARM_FAULTS, type HeapGrowthSummary } from './heap-growth.js'
import { TRACE_FLAG_BEFORE_RESUME } from '../trace/format.js'
import { isDeferredSource, type DeferredPageSource } from '../store/deferred-source.js'
import { serveForkedChild } from './fork-child.js'

/** Largest run installed with one UFFDIO_COPY (and decoded with one read). */
export const MAX_RUN_BYTES = 2 * 1024 * 1024
/** Pages of background work between two polls of the uffd: faults wait at most this long. */
const IDLE_BATCH_PAGES = 256
/** Remote sources: prefetch runs kept waiting for their chunk (more are fetched, not installed);
 * background work pauses while this many wait, so it goes at the pace of the fetches. */
const PARKED_RUN_LIMIT = 256, PARKED_IDLE_LIMIT = 32
/** Remote sources: how often waiting faults are re-checked without a wake-up (a safety net:
 * the store signals every completion). */
const REMOTE_RECHECK_MS = 1000

/** Receives one record per install; implemented by src/trace/. */
export interface TraceSink {
  /** `timeNs`: since the guest resumed (0 before it). `flags`: bit 0 write fault, bit 1
   * installed before the guest resumed (TRACE_FLAG_*). `count` 0 means the page was already
   * there. `latencyNs`: a fault's service time, or how long the run took to install. */
  record(timeNs: number, page: number, count: number, cause: InstallCause, flags: number, threadId: number, latencyNs: number): void
  close(): void
}

export interface SessionStats {
  faults: number
  pagesInstalled: [number, number, number]
  zeroPagesInstalled: number
  copyIoctls: number
  bytesDecoded: number
  removedPages: number
  /** Children the guest forked, each filled with its own copy of the memory (fork-child.ts). */
  forks: number
  events: number
  /** Stored snapshot bytes read to serve this guest. */
  bytesRead: number
  /** Faults that had to wait for their chunk to arrive from the object store. */
  remoteWaits: number
  latency: ReturnType<LatencyHistogram['summary']>
  /** Per-stage times and system-call counts, with FAULTLINE_BREAKDOWN=1. */
  breakdown?: FaultBreakdownSummary
  /** What the session's thread allocated (see heap-growth.ts for when it is meaningful). */
  heap: HeapGrowthSummary
  /** CPU time of the session's thread (start() to the end), ns; NaN where not measurable. */
  cpuNs: number
  durationMs: number
  endReason: string
}

export interface SessionOptions {
  uffd: uffd.Userfaultfd
  connectionFd: number
  stopFd: number
  source: PageSource
  policy: FaultPolicy
  regions: GuestRegion[]
  trace?: TraceSink
  /** Poison pages whose snapshot data fails verification (needs UFFD_FEATURE_POISON). */
  canPoison: boolean
  log: (line: string) => void
  /** Heartbeat: word 0 is bumped before and after run()'s poll, so it is odd while the session
   * waits and even while it works: the server's main thread sees a turn that never ends (a
   * policy that never returns) as an even value that stops moving (session-slot.ts). */
  heartbeat?: Int32Array
}

const SLOT_UFFD = 0, SLOT_CONN = 1, SLOT_STOP = 2, SLOT_READY = 3
/** Slots of Session.current. */
const CUR_ADDRESS = 0, CUR_T0 = 1, CUR_READ_START = 2

export class Session implements PolicyContext {
  readonly pageSize: number
  readonly pageCount: number
  readonly memory: GuestMemory
  private readonly opts: SessionOptions
  private readonly fd: uffd.Userfaultfd
  private readonly source: PageSource
  private readonly policy: FaultPolicy
  private readonly copyBuffer = new uffd.CopySourceBuffer(MAX_RUN_BYTES)
  private readonly maxRunPages: number
  private readonly messages = new uffd.UffdMessages(64)
  private readonly plan = new RunList(64)
  private readonly poll = new uffd.PollSet(4)
  private readonly histogram = new LatencyHistogram()
  private readonly breakdown = new FaultBreakdown()
  private readonly heap = new HeapGrowth()
  /** The fault path's clock: performance.now() allocates a heap number per call. */
  private readonly clock = new uffd.MonotonicClock()
  /** With the breakdown on: the last uffd read's time per message it returned, ns. */
  private readShareNs = 0
  private readonly fault: FaultInfo = { page: 0, address: 0, write: false, threadId: 0, timeNs: 0 }
  // The fault being served: its address (-1 when the plan being installed holds none), when it
  // was read (ms) and, with the stage timers, when the read began. They travel the install path
  // in these slots, not as arguments: a double passed to a function V8 did not inline is boxed
  // into a fresh heap number, every fault.
  private readonly current = new Float64Array(3)
  private readonly scratch = Buffer.alloc(256)
  /** Faults the kernel asked us to retry (EAGAIN while the guest's mappings change). */
  private deferred: number[] = []
  private readonly startMs = performance.now()
  /** Time zero of fault times and traces: when start() finished and the guest was acked. */
  private resumeMs = this.startMs
  private readonly cpuAtStartNs = threadCpuNs()
  private readonly bytesReadAtStart: number
  private idleWork: boolean
  /** While installing a traced non-fault run: the record flags; -1 otherwise. */
  private traceRunFlags = -1
  /** Set when pages come from an object store: a fault may have to wait for its chunk. */
  private readonly remote: DeferredPageSource | undefined
  /** Faults waiting for a chunk, as (guest address, fault time) pairs; `retrying` is the
   * list being retried while chunks arrive. */
  private waitingFaults: number[] = []
  private retrying: number[] = []
  /** Prefetch/background runs waiting for their chunk, installed when it arrives. */
  private readonly parkedRuns = new RunList(64)
  /** Time of the fault being installed; set by park() when that fault had to wait. */
  private faultT0 = 0
  private faultParked = false
  private retryingWaits = false
  private stopped = ''
  readonly stats = {
    faults: 0, pagesInstalled: [0, 0, 0] as [number, number, number], zeroPagesInstalled: 0,
    copyIoctls: 0, bytesDecoded: 0, removedPages: 0, events: 0, remoteWaits: 0, forks: 0,
  }

  constructor(opts: SessionOptions) {
    this.opts = opts
    this.fd = opts.uffd
    this.source = opts.source
    this.policy = opts.policy
    this.pageSize = opts.source.pageSize
    this.pageCount = opts.source.pageCount
    this.maxRunPages = MAX_RUN_BYTES / this.pageSize
    this.memory = new GuestMemory(opts.regions, this.pageSize)
    this.bytesReadAtStart = opts.source.bytesRead ?? 0
    this.idleWork = typeof this.policy.onIdle === 'function'
    this.poll.set(SLOT_UFFD, this.fd.fd, uffd.POLLIN)
    this.poll.set(SLOT_CONN, opts.connectionFd, uffd.POLLIN | uffd.POLLRDHUP)
    this.poll.set(SLOT_STOP, opts.stopFd, uffd.POLLIN)
    this.remote = isDeferredSource(opts.source) ? opts.source : undefined
    if (this.remote !== undefined) this.poll.set(SLOT_READY, this.remote.readyFd, uffd.POLLIN)
  }

  get ranges(): Array<{ firstPage: number; pageCount: number }> { return this.memory.ranges() }
  isResident(page: number): boolean { return this.memory.isResident(page) }
  kindOf(page: number): number { return this.source.kindOf(page) }

  /** Serves a fault at `address` as if the uffd had reported it (a read fault of thread 0):
   * the warm worker's rehearsal on memory of its own (rehearsal.ts). */
  rehearseFault(address: number): void {
    this.current[CUR_ADDRESS] = address
    this.current[CUR_T0] = this.clock.nowMs()
    this.handleFault(0, 0)
  }

  /** Runs the policy's up-front work (before the guest is acknowledged). */
  start(): void {
    if (this.policy.onStart) {
      this.plan.clear()
      this.policy.onStart(this, this.plan)
      this.installPlanWithoutFault(TRACE_FLAG_BEFORE_RESUME)
    }
    this.resumeMs = performance.now()
  }

  /** Serves until the guest disconnects or exits, or the server stops. */
  run(): SessionStats {
    const poll = this.poll
    const heartbeat = this.opts.heartbeat
    this.heap.start()
    while (this.stopped === '') {
      const idle = this.idleWork && this.parkedRuns.length < PARKED_IDLE_LIMIT
      const timeout = this.deferred.length ? 1 : idle ? 0 : this.waitingFaults.length + this.parkedRuns.length > 0 ? REMOTE_RECHECK_MS : -1
      if (BREAKDOWN_ENABLED) this.breakdown.polls++
      // Heartbeat: odd while waiting in poll, even while working (SessionOptions.heartbeat).
      if (heartbeat !== undefined) Atomics.add(heartbeat, 0, 1)
      const ready = poll.wait(timeout)
      if (heartbeat !== undefined) Atomics.add(heartbeat, 0, 1)
      if (ready > 0) {
        if (poll.revents(SLOT_UFFD) !== 0) this.drainEvents()
        if (poll.revents(SLOT_CONN) !== 0) this.checkConnection()
        if (poll.revents(SLOT_STOP) !== 0) this.stopped = 'server stopping'
        if (this.remote !== undefined && this.stopped === '' && poll.revents(SLOT_READY) !== 0) this.onChunksReady()
      } else if (this.deferred.length) {
        this.retryDeferred()
      } else if (idle) {
        this.runIdle()
      } else if (this.remote !== undefined) {
        this.onChunksReady()
      }
    }
    return this.finish()
  }

  private finish(): SessionStats {
    this.opts.trace?.close()
    return {
      ...this.stats,
      bytesRead: (this.source.bytesRead ?? 0) - this.bytesReadAtStart,
      latency: this.histogram.summary(),
      breakdown: BREAKDOWN_ENABLED ? this.breakdown.finish() : undefined,
      heap: this.heap.finish(this.stats.faults),
      cpuNs: threadCpuNs() - this.cpuAtStartNs,
      durationMs: Math.round(performance.now() - this.startMs),
      endReason: this.stopped,
    }
  }

  private checkConnection(): void {
    // A guest has nothing to say after the handshake: data is drained, EOF/HUP ends it.
    const n = uffd.receiveBytes(this.opts.connectionFd, this.scratch)
    if (n === 0 || (n < 0 && (this.poll.revents(SLOT_CONN) & (uffd.POLLHUP | uffd.POLLERR | uffd.POLLRDHUP)) !== 0)) {
      this.stopped = 'guest disconnected'
    }
  }

  private drainEvents(): void {
    const msgs = this.messages
    for (;;) {
      let n: number
      if (BREAKDOWN_ENABLED) this.current[CUR_READ_START] = this.clock.nowMs()
      try {
        n = this.fd.readMessages(msgs)
      } catch (err) {
        this.stopped = `uffd read failed: ${(err as Error).message}`
        return
      }
      if (BREAKDOWN_ENABLED) this.noteRead(n)
      if (n === 0) return
      const t0 = this.clock.nowMs()
      const current = this.current
      for (let i = 0; i < n; i++) {
        const event = msgs.event(i)
        if (event === uffd.UFFD_EVENT_PAGEFAULT) {
          if (this.stopped === '') {
            current[CUR_ADDRESS] = msgs.faultAddress(i)
            current[CUR_T0] = t0
            this.handleFault(msgs.faultFlags(i), msgs.faultThreadId(i))
          }
        } else if (this.stopped === '' || event === uffd.UFFD_EVENT_FORK) {
          // A forked child's uffd was installed in this process by the read: it is served
          // even when the session is stopping, or the child would read zeros.
          this.handleEvent(event, i)
        }
      }
      if (this.deferred.length) this.retryDeferred()
      if (n < msgs.capacity) return
    }
  }

  private noteRead(n: number): void {
    const start = this.current[CUR_READ_START]
    const ns = (this.clock.nowMs() - start) * 1e6
    const b = this.breakdown
    b.uffdReads++
    b.uffdReadNs += ns
    if (n === 0) b.emptyReads++
    this.readShareNs = n > 0 ? ns / n : 0
  }

  private handleEvent(event: number, i: number): void {
    const msgs = this.messages
    this.stats.events++
    if (event === uffd.UFFD_EVENT_REMOVE) {
      this.stats.removedPages += this.memory.markRange(msgs.rangeStart(i), msgs.rangeEnd(i), DISCARDED)
    } else if (event === uffd.UFFD_EVENT_UNMAP) {
      this.memory.unmap(msgs.rangeStart(i), msgs.rangeEnd(i))
    } else if (event === uffd.UFFD_EVENT_REMAP) {
      this.memory.remap(msgs.remapFrom(i), msgs.remapTo(i), msgs.remapLength(i))
    } else if (event === uffd.UFFD_EVENT_FORK) {
      this.serveFork(msgs.forkFd(i))
    }
  }

  /** The guest forked: its child gets every page it lacks now (its faults wait meanwhile,
   * as do the parent's), then runs on its own. See fork-child.ts. */
  private serveFork(childFd: number): void {
    const t0 = performance.now()
    const r = serveForkedChild(childFd, this.memory.clone(), {
      source: this.source, copyBuffer: this.copyBuffer, canPoison: this.opts.canPoison, log: this.opts.log,
    })
    this.stats.forks += r.children
    this.opts.log(`guest forked: filled ${r.children} child(ren) with ${r.pagesCopied} snapshot + ${r.zeroPages} zero pages` +
      `${r.poisonedPages ? `, ${r.poisonedPages} poisoned` : ''}${r.exited ? ' (a child exited first)' : ''} in ${Math.round(performance.now() - t0)} ms`)
    // A page the child could neither get nor have poisoned would read as zeros there: fail closed.
    if (r.error !== undefined && !this.opts.canPoison) this.stopped = r.error
  }

  /** A fault at an address outside the guest's snapshot regions: a range that grew (mremap)
   * or that the guest registered itself. Nothing of the snapshot belongs there and anonymous
   * memory reads as zeros; a range gone meanwhile (ENOENT) is only woken, so the thread
   * retries against its current mappings. */
  private answerUnknown(address: number): void {
    const page = address - (address % this.pageSize)
    let done = this.pageSize
    try {
      done = this.fd.zeropage(page, this.pageSize, this.pageSize)
    } catch (err) {
      if (err instanceof uffd.GuestGoneError) { this.stopped = 'guest exited'; return }
      // Huge-page memory has no UFFDIO_ZEROPAGE: leave it to the wake-up.
    }
    if (done < this.pageSize) this.deferred.push(address) // EAGAIN: retried after the guest's events
    else this.fd.wake(page, this.pageSize)
  }

  /** A fault on a page already installed: a second thread's fault on it (the install woke that
   * thread already), or a page the guest dropped without us being told (a uffd without
   * EVENT_REMOVE), which must read as zeros now. ZEROPAGE answers both: where the page is,
   * EEXIST wakes the thread; where it is not, it installs zeros. */
  private answerInstalled(region: MappedRegion, address: number): void {
    const page = address - (address % this.pageSize)
    if (region.pagesPerGuestPage > 1) { this.fd.wake(page, this.pageSize); return }
    let done: number
    try {
      done = this.fd.zeropage(page, this.pageSize, this.pageSize)
    } catch (err) {
      if (err instanceof uffd.GuestGoneError) { this.stopped = 'guest exited'; return }
      throw err
    }
    if (done < this.pageSize) this.deferred.push(address)
  }

  /** The fault in `current`. */
  private handleFault(flags: number, threadId: number): void {
    const address = this.current[CUR_ADDRESS]
    const t0 = this.current[CUR_T0]
    const region = this.memory.regionAt(address)
    if (region === undefined) { this.answerUnknown(address); return }
    const guestPage = Math.floor((address - region.start) / this.pageSize)
    const state = region.state[guestPage]
    if (state === PRESENT || state === GONE) { this.answerInstalled(region, address); return }
    if (++this.stats.faults === WARM_FAULTS) this.heap.markWarm()
    const page = region.firstPage + guestPage
    const fault = this.fault
    fault.page = page
    fault.address = address
    fault.write = (flags & uffd.UFFD_PAGEFAULT_FLAG_WRITE) !== 0
    fault.threadId = threadId
    fault.timeNs = Math.round((t0 - this.resumeMs) * 1e6)
    const plan = this.plan
    plan.clear()
    plan.add(page, 1, InstallCause.Fault)
    this.policy.onFault(fault, this, plan)
    this.faultT0 = t0
    this.installPlan(flags & 1, threadId)
  }

  /** installPlan for a plan that holds no waiting fault (up-front, background, parked runs). */
  private installPlanWithoutFault(flags: number): void {
    this.current[CUR_ADDRESS] = -1
    this.current[CUR_T0] = 0
    this.installPlan(flags, 0)
  }

  /** Installs every run of the plan; the first run's latency is that of the fault in
   * `current`, if any. */
  private installPlan(flags: number, threadId: number): void {
    const plan = this.plan
    const trace = this.opts.trace
    const t0 = this.current[CUR_T0]
    for (let r = 0; r < plan.length; r++) {
      const first = plan.first[r]
      const count = plan.count[r]
      const cause = plan.cause[r] as InstallCause
      const isFault = r === 0 && t0 > 0
      // Runs other than the fault's are traced per install (see recordInstall).
      this.traceRunFlags = trace && !isFault ? flags & TRACE_FLAG_BEFORE_RESUME : -1
      this.faultParked = false
      const installed = this.installPages(first, count, cause, isFault)
      // A fault that waits for its chunk is timed and traced when it is finally served.
      if (isFault && this.faultParked && !this.retryingWaits) this.stats.remoteWaits++
      if (isFault && !this.faultParked) {
        // Whole ns: a small integer is passed unboxed, a fraction would not be.
        const latencyNs = Math.round((this.clock.nowMs() - t0) * 1e6)
        this.histogram.record(latencyNs)
        if (BREAKDOWN_ENABLED) { this.breakdown.serviceNs += latencyNs + this.readShareNs; this.breakdown.faults++ }
        if (trace) trace.record(this.fault.timeNs, first, installed, cause, flags, threadId, latencyNs)
      }
      if (this.stopped !== '') return
    }
  }

  /** Installs the absent pages among snapshot pages [first, first+count); returns how many
   * were installed. `holdsFault`: the run holds the fault in `current`. */
  private installPages(first: number, count: number, cause: InstallCause, holdsFault: boolean): number {
    let installed = 0
    const end = first + count
    let page = first
    while (page < end) {
      const region = this.memory.regionOfPage(page)
      if (region === undefined) { page++; continue }
      const regionEnd = Math.min(end, region.firstPage + region.pages)
      installed += this.installInRegion(region, page - region.firstPage, regionEnd - page, cause, holdsFault)
      page = regionEnd
    }
    return installed
  }

  private installInRegion(region: MappedRegion, from: number, count: number, cause: InstallCause, holdsFault: boolean): number {
    const state = region.state
    const huge = region.pagesPerGuestPage
    let i = from, end = from + count
    if (huge > 1) {
      // Huge pages are installed whole, with COPY (ZEROPAGE does not exist for hugetlbfs).
      i -= i % huge
      end = Math.min(region.pages, Math.ceil(end / huge) * huge)
    }
    let installed = 0
    while (i < end) {
      const s = state[i]
      if (s === PRESENT || s === GONE) { i++; continue }
      const zero = huge === 1 && (s === DISCARDED || this.source.kindOf(region.firstPage + i) === 0)
      let j = i + 1
      const limit = Math.min(end, i + this.maxRunPages)
      while (j < limit) {
        const sj = state[j]
        if (sj === PRESENT || sj === GONE) break
        if (huge === 1 && (sj === DISCARDED || this.source.kindOf(region.firstPage + j) === 0) !== zero) break
        j++
      }
      if (!zero && this.remote !== undefined) {
        const ready = this.remote.availablePages(region.firstPage + i, j - i)
        if (ready === 0 || (huge > 1 && ready < j - i)) {
          i = this.park(region, i, j, cause, holdsFault)
          if (this.stopped !== '') return installed
          continue
        }
        j = i + ready
      }
      const n = j - i
      const dst = region.start + i * this.pageSize
      const bytes = n * this.pageSize
      const target = this.fd.target
      target[uffd.TARGET_DST] = dst
      const installStart = this.traceRunFlags >= 0 ? this.clock.nowMs() : 0
      let done: number
      try {
        const stageStart = BREAKDOWN_ENABLED ? this.clock.nowMs() : 0
        if (zero) {
          done = this.fd.zeropageAtTarget(bytes, this.pageSize)
          this.stats.zeroPagesInstalled += done / this.pageSize
          if (BREAKDOWN_ENABLED) { this.breakdown.zeropages++; this.breakdown.zeropageNs += (this.clock.nowMs() - stageStart) * 1e6 }
        } else {
          const readOk = this.readRun(region, i, n)
          const copyStart = BREAKDOWN_ENABLED ? this.clock.nowMs() : 0
          if (BREAKDOWN_ENABLED) { this.breakdown.sourceReads++; this.breakdown.sourceReadNs += (copyStart - stageStart) * 1e6 }
          if (!readOk) {
            // The chunk's cached copy went away (evicted, or failed its checksum): it is
            // being fetched again.
            i = this.park(region, i, j, cause, holdsFault)
            if (this.stopped !== '') return installed
            continue
          }
          target[uffd.TARGET_SRC] = this.copyBuffer.address
          done = this.fd.copyAtTarget(bytes, this.pageSize * huge)
          this.stats.bytesDecoded += bytes
          if (BREAKDOWN_ENABLED) { this.breakdown.copies++; this.breakdown.copyNs += (this.clock.nowMs() - copyStart) * 1e6 }
        }
      } catch (err) {
        if (err instanceof uffd.GuestGoneError) { this.stopped = 'guest exited'; return installed }
        if (err instanceof PoisonedRun) { i = j; continue }
        throw err
      }
      this.stats.copyIoctls++
      const donePages = done / this.pageSize
      state.fill(PRESENT, i, i + donePages)
      if (this.traceRunFlags >= 0 && donePages > 0) this.recordInstall(region.firstPage + i, donePages, cause, installStart)
      installed += donePages
      this.stats.pagesInstalled[cause] += donePages
      if (done < bytes) {
        // EAGAIN: the guest's address space is changing. Only a waiting fault must be
        // retried; prefetches are simply dropped.
        const faultAddress = this.current[CUR_ADDRESS]
        if (holdsFault && faultAddress >= dst + done && faultAddress < dst + bytes) this.deferred.push(faultAddress)
        return installed
      }
      i = j
    }
    return installed
  }

  /** Decodes pages into the copy buffer; a page that fails verification is poisoned (the
   * guest gets SIGBUS on it, never wrong data) and the session ends. False when a remote
   * source no longer has the data locally. */
  private readRun(region: MappedRegion, i: number, n: number): boolean {
    try {
      if (this.remote !== undefined) return this.remote.tryReadPages(region.firstPage + i, n, this.copyBuffer.buffer, 0)
      this.source.readPages(region.firstPage + i, n, this.copyBuffer.buffer, 0)
      return true
    } catch (err) {
      const message = (err as Error).message
      this.opts.log(`cannot serve pages ${region.firstPage + i}..${region.firstPage + i + n - 1}: ${message}`)
      if (this.opts.canPoison) {
        this.fd.poison(region.start + i * this.pageSize, n * this.pageSize, this.pageSize)
        region.state.fill(PRESENT, i, i + n)
      }
      this.stopped = `snapshot error: ${message}`
      throw new PoisonedRun()
    }
  }

  /** Traces one install of a prefetch/background/onStart run: exactly the pages one ioctl
   * installed, and how long decoding and installing them took. */
  private recordInstall(page: number, count: number, cause: InstallCause, installStart: number): void {
    const now = this.clock.nowMs()
    const flags = this.traceRunFlags
    const timeNs = (flags & TRACE_FLAG_BEFORE_RESUME) !== 0 ? 0 : Math.round((now - this.resumeMs) * 1e6)
    this.opts.trace!.record(timeNs, page, count, cause, flags, 0, Math.round((now - installStart) * 1e6))
  }

  private retryDeferred(): void {
    const pending = this.deferred
    this.deferred = []
    const t0 = performance.now()
    this.fault.timeNs = Math.round((t0 - this.resumeMs) * 1e6)
    for (const address of pending) {
      const region = this.memory.regionAt(address)
      if (region === undefined) { this.answerUnknown(address); continue }
      const guestPage = Math.floor((address - region.start) / this.pageSize)
      if (region.state[guestPage] !== ABSENT && region.state[guestPage] !== DISCARDED) {
        this.fd.wake(address - (address % this.pageSize), this.pageSize)
        continue
      }
      this.plan.clear()
      this.plan.add(region.firstPage + guestPage, 1, InstallCause.Fault)
      this.current[CUR_ADDRESS] = address
      this.current[CUR_T0] = t0
      this.installPlan(0, 0)
    }
  }

  /** Remote sources: pages [i, j) of `region` need a chunk that is not local yet. Asks for it
   * and keeps the waiting fault (or the prefetch run) until it arrives; a fault whose chunk
   * could not be fetched ends the session closed. Returns where the caller goes on. */
  private park(region: MappedRegion, i: number, j: number, cause: InstallCause, holdsFaultRun: boolean): number {
    const faultAddress = holdsFaultRun ? this.current[CUR_ADDRESS] : -1
    const remote = this.remote!
    const first = region.firstPage + i
    // A normal page waits for one chunk at a time; a huge page for all of its chunks.
    const end = region.pagesPerGuestPage > 1 ? j : Math.min(j, i + remote.chunkPages - (first % remote.chunkPages))
    const count = end - i
    const dst = region.start + i * this.pageSize
    const holdsFault = faultAddress >= 0 && faultAddress >= dst && faultAddress < dst + count * this.pageSize
    const failure = remote.failure(first, count)
    if (failure !== undefined) {
      // A prefetch that could not be had is dropped; a fault cannot be served: fail closed.
      if (holdsFault) this.failRemote(failure, first, count, faultAddress)
      return end
    }
    remote.request(first, count, holdsFault ? InstallCause.Fault : cause)
    if (holdsFault) {
      this.waitingFaults.push(faultAddress, this.faultT0)
      this.faultParked = true
    } else if (this.parkedRuns.length < PARKED_RUN_LIMIT) {
      this.parkedRuns.add(first, count, cause)
    }
    return end
  }

  /** Chunks arrived or failed (or the safety re-check): retry the waiting faults, then the
   * parked prefetch runs. Whatever is still missing parks again. */
  private onChunksReady(): void {
    this.remote!.drainReady()
    if (this.waitingFaults.length > 0) {
      const waiting = this.waitingFaults
      this.waitingFaults = this.retrying
      this.retrying = waiting
      this.retryingWaits = true
      for (let k = 0; k < waiting.length && this.stopped === ''; k += 2) {
        const address = waiting[k]
        const region = this.memory.regionAt(address)
        if (region === undefined) continue
        const guestPage = Math.floor((address - region.start) / this.pageSize)
        const s = region.state[guestPage]
        // Installed meanwhile (by a prefetch run): the install woke the faulting thread.
        if (s !== ABSENT && s !== DISCARDED) continue
        const t0 = waiting[k + 1]
        this.faultT0 = t0
        this.fault.timeNs = Math.round((t0 - this.resumeMs) * 1e6)
        this.plan.clear()
        this.plan.add(region.firstPage + guestPage, 1, InstallCause.Fault)
        this.current[CUR_ADDRESS] = address
        this.current[CUR_T0] = t0
        this.installPlan(0, 0)
      }
      this.retryingWaits = false
      waiting.length = 0
    }
    if (this.parkedRuns.length > 0 && this.stopped === '') {
      const plan = this.plan
      const parked = this.parkedRuns
      plan.clear()
      for (let r = 0; r < parked.length; r++) plan.add(parked.first[r], parked.count[r], parked.cause[r] as InstallCause)
      parked.clear()
      this.installPlanWithoutFault(0)
    }
  }

  /** The object store could not deliver pages a fault waits for (retries exhausted, missing
   * object, bad credentials...): poison every waiting fault's page, so no thread ever reads a
   * zero or wrong page, and end the session, which closes the guest's connection. */
  private failRemote(message: string, first: number, count: number, faultAddress: number): void {
    this.opts.log(`cannot serve pages ${first}..${first + count - 1}: ${message}`)
    if (this.opts.canPoison) {
      this.poisonAt(faultAddress)
      for (let k = 0; k < this.waitingFaults.length; k += 2) this.poisonAt(this.waitingFaults[k])
      for (let k = 0; k < this.retrying.length; k += 2) this.poisonAt(this.retrying[k])
    }
    this.stopped = `object store error: ${message}`
  }

  private poisonAt(address: number): void {
    const region = this.memory.regionAt(address)
    if (region === undefined) return
    const unit = region.pagesPerGuestPage
    let i = Math.floor((address - region.start) / this.pageSize)
    i -= i % unit
    const s = region.state[i]
    if (s === PRESENT || s === GONE) return
    try {
      this.fd.poison(region.start + i * this.pageSize, unit * this.pageSize, unit * this.pageSize)
      region.state.fill(PRESENT, i, i + unit)
    } catch { /* the guest is gone */ }
  }

  private runIdle(): void {
    const plan = this.plan
    plan.clear()
    const more = this.policy.onIdle!(this, plan, IDLE_BATCH_PAGES)
    if (plan.length) this.installPlanWithoutFault(0)
    if (!more) this.idleWork = false
  }
}

class PoisonedRun extends Error {}

/** CPU time the calling thread has run, in ns (first field of /proc/thread-self/schedstat). */
function threadCpuNs(): number {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ', 1)[0])
  } catch {
    return NaN
  }
}
