// Session: serves one guest's faults until it goes away. Runs inside a worker thread and
// blocks in poll(2) on the guest's uffd, its socket and the server's stop eventfd, so the
// main event loop never waits on a fault. The fault path reuses preallocated buffers.
import { performance } from 'node:perf_hooks'
import type { FaultInfo, FaultPolicy, PolicyContext } from '../policy/policy.js'
import { InstallCause, RunList } from '../policy/policy.js'
import type { PageSource } from '../snapshot/page-source.js'
import * as uffd from '../uffd/index.js'
import { ABSENT, DISCARDED, GONE, GuestMemory, MappedRegion, PRESENT } from './guest-memory.js'
import type { GuestRegion } from './handshake.js'
import { LatencyHistogram } from './latency-histogram.js'

/** Largest run installed with one UFFDIO_COPY (and decoded with one read). */
export const MAX_RUN_BYTES = 2 * 1024 * 1024
/** Pages of background work between two polls of the uffd: faults wait at most this long. */
const IDLE_BATCH_PAGES = 256

/** Receives one record per install; implemented by src/trace/. */
export interface TraceSink {
  /** `flags`: bit 0 write fault. `count` 0 means the page was already there. */
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
  events: number
  /** Stored snapshot bytes read to serve this guest. */
  bytesRead: number
  latency: ReturnType<LatencyHistogram['summary']>
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
}

const SLOT_UFFD = 0, SLOT_CONN = 1, SLOT_STOP = 2

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
  private readonly poll = new uffd.PollSet(3)
  private readonly histogram = new LatencyHistogram()
  private readonly fault: FaultInfo = { page: 0, address: 0, write: false, threadId: 0, timeNs: 0 }
  private readonly scratch = Buffer.alloc(256)
  /** Faults the kernel asked us to retry (EAGAIN while the guest's mappings change). */
  private deferred: number[] = []
  private readonly startMs = performance.now()
  private readonly bytesReadAtStart: number
  private idleWork: boolean
  private stopped = ''
  readonly stats = {
    faults: 0, pagesInstalled: [0, 0, 0] as [number, number, number], zeroPagesInstalled: 0,
    copyIoctls: 0, bytesDecoded: 0, removedPages: 0, events: 0,
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
  }

  get ranges(): Array<{ firstPage: number; pageCount: number }> { return this.memory.ranges() }
  isResident(page: number): boolean { return this.memory.isResident(page) }
  kindOf(page: number): number { return this.source.kindOf(page) }

  /** Runs the policy's up-front work (before the guest is acknowledged). */
  start(): void {
    if (!this.policy.onStart) return
    this.plan.clear()
    this.policy.onStart(this, this.plan)
    this.installPlan(0, 0, 0, 0)
  }

  /** Serves until the guest disconnects or exits, or the server stops. */
  run(): SessionStats {
    const poll = this.poll
    while (this.stopped === '') {
      const timeout = this.deferred.length ? 1 : this.idleWork ? 0 : -1
      const ready = poll.wait(timeout)
      if (ready > 0) {
        if (poll.revents(SLOT_UFFD) !== 0) this.drainEvents()
        if (poll.revents(SLOT_CONN) !== 0) this.checkConnection()
        if (poll.revents(SLOT_STOP) !== 0) this.stopped = 'server stopping'
      } else if (this.deferred.length) {
        this.retryDeferred()
      } else if (this.idleWork) {
        this.runIdle()
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
      try {
        n = this.fd.readMessages(msgs)
      } catch (err) {
        this.stopped = `uffd read failed: ${(err as Error).message}`
        return
      }
      if (n === 0) return
      const t0 = performance.now()
      for (let i = 0; i < n && this.stopped === ''; i++) {
        const event = msgs.event(i)
        if (event === uffd.UFFD_EVENT_PAGEFAULT) {
          this.handleFault(msgs.faultAddress(i), msgs.faultFlags(i), msgs.faultThreadId(i), t0)
        } else {
          this.handleEvent(event, i)
        }
      }
      if (this.deferred.length) this.retryDeferred()
      if (n < msgs.capacity) return
    }
  }

  private handleEvent(event: number, i: number): void {
    const msgs = this.messages
    this.stats.events++
    if (event === uffd.UFFD_EVENT_REMOVE) {
      this.stats.removedPages += this.memory.markRange(msgs.rangeStart(i), msgs.rangeEnd(i), DISCARDED)
    } else if (event === uffd.UFFD_EVENT_UNMAP) {
      this.memory.markRange(msgs.rangeStart(i), msgs.rangeEnd(i), GONE)
    } else if (event === uffd.UFFD_EVENT_REMAP) {
      this.memory.remap(msgs.remapFrom(i), msgs.remapTo(i), msgs.remapLength(i))
    } else if (event === uffd.UFFD_EVENT_FORK) {
      // Not negotiated by faultline's handshake; a Firecracker-form guest that enabled it
      // gets its child refused rather than silently served zeros.
      uffd.closeFd(msgs.forkFd(i))
      this.opts.log('guest forked; the child is not served (its faults will not be answered)')
    }
  }

  private handleFault(address: number, flags: number, threadId: number, t0: number): void {
    const region = this.memory.regionAt(address)
    if (region === undefined) {
      // Not a range we know (the guest remapped it away meanwhile): waking lets the thread
      // retry the access against its current mappings.
      this.fd.wake(address - (address % this.pageSize), this.pageSize)
      return
    }
    this.stats.faults++
    const guestPage = Math.floor((address - region.start) / this.pageSize)
    const page = region.firstPage + guestPage
    const fault = this.fault
    fault.page = page
    fault.address = address
    fault.write = (flags & uffd.UFFD_PAGEFAULT_FLAG_WRITE) !== 0
    fault.threadId = threadId
    fault.timeNs = Math.round((t0 - this.startMs) * 1e6)
    const plan = this.plan
    plan.clear()
    plan.add(page, 1, InstallCause.Fault)
    this.policy.onFault(fault, this, plan)
    this.installPlan(t0, flags & 1, threadId, address)
  }

  /** Installs every run of the plan; the first run's latency is the fault's. */
  private installPlan(t0: number, flags: number, threadId: number, faultAddress: number): void {
    const plan = this.plan
    const trace = this.opts.trace
    for (let r = 0; r < plan.length; r++) {
      const first = plan.first[r]
      const count = plan.count[r]
      const cause = plan.cause[r] as InstallCause
      const installed = this.installPages(first, count, cause, r === 0 && t0 > 0 ? faultAddress : -1)
      if (r === 0 && t0 > 0) {
        const latencyNs = (performance.now() - t0) * 1e6
        this.histogram.record(latencyNs)
        if (trace) trace.record(this.fault.timeNs, first, installed, cause, flags, threadId, Math.round(latencyNs))
      } else if (trace && installed > 0) {
        trace.record(Math.round((performance.now() - this.startMs) * 1e6), first, installed, cause, 0, 0, 0)
      }
      if (this.stopped !== '') return
    }
  }

  /** Installs the absent pages among snapshot pages [first, first+count); returns how many
   * were installed. `faultAddress` >= 0 marks the run that holds a waiting fault. */
  private installPages(first: number, count: number, cause: InstallCause, faultAddress: number): number {
    let installed = 0
    const end = first + count
    let page = first
    while (page < end) {
      const region = this.memory.regionOfPage(page)
      if (region === undefined) { page++; continue }
      const regionEnd = Math.min(end, region.firstPage + region.pages)
      installed += this.installInRegion(region, page - region.firstPage, regionEnd - page, cause, faultAddress)
      page = regionEnd
    }
    return installed
  }

  private installInRegion(region: MappedRegion, from: number, count: number, cause: InstallCause, faultAddress: number): number {
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
      const n = j - i
      const dst = region.start + i * this.pageSize
      const bytes = n * this.pageSize
      let done: number
      try {
        if (zero) {
          done = this.fd.zeropage(dst, bytes, this.pageSize)
          this.stats.zeroPagesInstalled += done / this.pageSize
        } else {
          this.readRun(region, i, n, dst, faultAddress)
          done = this.fd.copy(dst, this.copyBuffer.address, bytes, this.pageSize * huge)
          this.stats.bytesDecoded += bytes
        }
      } catch (err) {
        if (err instanceof uffd.GuestGoneError) { this.stopped = 'guest exited'; return installed }
        if (err instanceof PoisonedRun) { i = j; continue }
        throw err
      }
      this.stats.copyIoctls++
      const donePages = done / this.pageSize
      state.fill(PRESENT, i, i + donePages)
      installed += donePages
      this.stats.pagesInstalled[cause] += donePages
      if (done < bytes) {
        // EAGAIN: the guest's address space is changing. Only a waiting fault must be
        // retried; prefetches are simply dropped.
        if (faultAddress >= 0 && faultAddress >= dst + done && faultAddress < dst + bytes) this.deferred.push(faultAddress)
        return installed
      }
      i = j
    }
    return installed
  }

  /** Decodes pages into the copy buffer; a page that fails verification is poisoned (the
   * guest gets SIGBUS on it, never wrong data) and the session ends. */
  private readRun(region: MappedRegion, i: number, n: number, dst: number, faultAddress: number): void {
    try {
      this.source.readPages(region.firstPage + i, n, this.copyBuffer.buffer, 0)
    } catch (err) {
      const message = (err as Error).message
      this.opts.log(`cannot serve pages ${region.firstPage + i}..${region.firstPage + i + n - 1}: ${message}`)
      if (this.opts.canPoison) {
        this.fd.poison(dst, n * this.pageSize, this.pageSize)
        region.state.fill(PRESENT, i, i + n)
      }
      this.stopped = `snapshot error: ${message}`
      void faultAddress
      throw new PoisonedRun()
    }
  }

  private retryDeferred(): void {
    const pending = this.deferred
    this.deferred = []
    const t0 = performance.now()
    for (const address of pending) {
      const region = this.memory.regionAt(address)
      if (region === undefined) continue
      const guestPage = Math.floor((address - region.start) / this.pageSize)
      if (region.state[guestPage] !== ABSENT && region.state[guestPage] !== DISCARDED) {
        this.fd.wake(address - (address % this.pageSize), this.pageSize)
        continue
      }
      this.plan.clear()
      this.plan.add(region.firstPage + guestPage, 1, InstallCause.Fault)
      this.installPlan(t0, 0, 0, address)
    }
  }

  private runIdle(): void {
    const plan = this.plan
    plan.clear()
    const more = this.policy.onIdle!(this, plan, IDLE_BATCH_PAGES)
    if (plan.length) this.installPlan(0, 0, 0, 0)
    if (!more) this.idleWork = false
  }
}

class PoisonedRun extends Error {}
