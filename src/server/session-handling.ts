// What a session does with each fault and event its guest's uffd reports (the poll loop that
// reads them is Session's, session.ts): a fault is looked up, shown to the policy and answered
// with the policy's plan; remove/unmap/remap update the guest's memory map; a fork gets the
// child served. Installing pages is the installer's, asking for fills FillRequests'.
import type { DecodedCache } from '../cache/decoded-cache.js'
import type { FaultInfo, FaultPolicy, PolicyContext } from '../policy/policy.js'
import { InstallCause, RunList } from '../policy/policy.js'
import type { PageSource } from '../snapshot/page-source.js'
import { isDeferredSource } from '../store/deferred-source.js'
import { TRACE_FLAG_BEFORE_RESUME, TRACE_FLAG_START_SET } from '../trace/format.js'
import * as uffd from '../uffd/index.js'
import { BREAKDOWN_ENABLED } from './fault-breakdown.js'
import { CacheFaults } from './cache-faults.js'
import { FillRequests, type CacheAccess } from './fill-requests.js'
import { serveForkedChild } from './fork-child.js'
import { ABSENT, BAD, DISCARDED, GONE, GuestMemory, PRESENT, type MappedRegion } from './guest-memory.js'
import { ForkedChildren, type GuestView } from './guest-views.js'
import type { GuestRegion } from './handshake.js'
import { CUR_ADDRESS, CUR_T0, CURRENT_SLOTS, GuestInstaller, MAX_RUN_BYTES, type TraceSink } from './installer.js'
import { RemoteWaits } from './remote-waits.js'
import { StartSet } from './start-set.js'
import type { UsageRecorder } from './usage-recorder.js'
import { K_EVENTS, K_FORKS, K_REMOVED_PAGES, SessionMeters } from './session-meters.js'

/** Forked children of a cache-mapped guest served at once (each a uffd in the poll set). */
const MAX_CHILDREN = 32

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
  /** The snapshot's decoded cache and its fill workers' queue, when the server has them. */
  cacheAccess?: CacheAccess
  /** The guest's regions map the decoded cache (MAP_PRIVATE) instead of anonymous memory. */
  cacheMapped?: boolean
  /** Live counters and service-time histogram the server reads (SESSION_METER_BYTES). */
  counters?: SharedArrayBuffer
  /** Records which pages the guest used, for `serve --learn`. */
  usage?: UsageRecorder
  /** Heartbeat: word 0 is bumped before and after run()'s poll, so it is odd while the session
   * waits and even while it works: the server's main thread sees a turn that never ends (a
   * policy that never returns) as an even value that stops moving (session-slot.ts). */
  heartbeat?: Int32Array
  /** Called when a page can be neither served nor poisoned, before the uffd waiting on it is
   * let go (`forkedChild`: a forked child's fill failed); `why` names the page and the file. */
  failClosed?: (forkedChild: boolean, why: string) => void
}

/** The poll set's slots; forked children's uffds from SLOT_CHILDREN on. */
export const SLOT_UFFD = 0,
  SLOT_CONN = 1,
  SLOT_STOP = 2,
  SLOT_REMOTE = 3,
  SLOT_CHILDREN = 4

export abstract class SessionHandling implements PolicyContext {
  readonly pageSize: number
  readonly pageCount: number
  readonly memory: GuestMemory
  readonly meters: SessionMeters
  protected readonly opts: SessionOptions
  protected readonly source: PageSource
  protected readonly policy: FaultPolicy
  protected readonly copyBuffer = new uffd.CopySourceBuffer(MAX_RUN_BYTES)
  protected readonly plan = new RunList(64)
  protected readonly poll = new uffd.PollSet(SLOT_CHILDREN + MAX_CHILDREN)
  protected readonly counters: Float64Array
  protected readonly fault: FaultInfo = { page: 0, address: 0, write: false, threadId: 0, timeNs: 0 }
  protected readonly current = new Float64Array(CURRENT_SLOTS)
  protected readonly scratch = Buffer.alloc(256)
  protected readonly parent: GuestView
  protected readonly children: ForkedChildren
  protected readonly remote: RemoteWaits | undefined
  protected readonly fills: FillRequests | undefined
  protected readonly cache: DecodedCache | undefined
  protected readonly cacheMapped: boolean
  protected readonly cacheFaults: CacheFaults | undefined
  /** With the breakdown on: the last uffd read's time per message it returned, ns. */
  protected readShareNs = 0
  /** Time zero of fault times and traces: when start() finished and the guest was acked. */
  protected resumeMs = 0
  protected readonly bytesReadAtStart: number
  protected idleWork: boolean
  /** onStart's runs still to install after the ack (anonymous guests without fill workers). */
  protected readonly startSet: StartSet
  protected readonly usage: UsageRecorder | undefined
  protected stopped = ''

  constructor(opts: SessionOptions) {
    this.opts = opts
    this.source = opts.source
    this.policy = opts.policy
    this.pageSize = opts.source.pageSize
    this.pageCount = opts.source.pageCount
    this.meters = new SessionMeters(opts.counters)
    this.counters = this.meters.counters
    this.memory = new GuestMemory(opts.regions, this.pageSize)
    const access = opts.cacheAccess
    this.fills = access === undefined ? undefined : new FillRequests(access.cache, access.queue, access.notifier, this.memory, this.counters)
    this.cache = access?.cache
    this.cacheMapped = opts.cacheMapped === true && this.cache !== undefined
    this.cacheFaults = this.cacheMapped ? new CacheFaults(this.fills!, this.source, this.copyBuffer, this.counters, !isDeferredSource(this.source)) : undefined
    this.startSet = new StartSet(this.pageCount)
    this.usage = opts.usage
    this.parent = this.view(opts.uffd, this.memory)
    this.children = new ForkedChildren(this.poll, SLOT_CHILDREN, MAX_CHILDREN, this.pageSize)
    this.bytesReadAtStart = opts.source.bytesRead ?? 0
    this.idleWork = typeof this.policy.onIdle === 'function'
    this.poll.set(SLOT_UFFD, opts.uffd.fd, uffd.POLLIN)
    this.poll.set(SLOT_CONN, opts.connectionFd, uffd.POLLIN | uffd.POLLRDHUP)
    this.poll.set(SLOT_STOP, opts.stopFd, uffd.POLLIN)
    this.poll.set(SLOT_REMOTE, -1, 0)
    if (isDeferredSource(opts.source)) {
      this.remote = new RemoteWaits(opts.source, this.parent.installer, this.counters)
      this.parent.installer.parking = this.remote
      this.poll.set(SLOT_REMOTE, opts.source.readyFd, uffd.POLLIN)
    }
  }

  protected view(fd: uffd.Userfaultfd, memory: GuestMemory): GuestView {
    const installer = new GuestInstaller({
      uffd: fd,
      memory,
      source: this.source,
      copyBuffer: this.copyBuffer,
      cache: this.cache,
      canPoison: this.opts.canPoison,
      meters: this.meters,
      current: this.current,
      trace: this.opts.trace,
      log: this.opts.log,
    })
    return { fd, memory, installer, messages: new uffd.UffdMessages(64) }
  }

  // PolicyContext: pages are snapshot pages of the guest (the parent's layout).
  get ranges(): Array<{ firstPage: number; pageCount: number }> {
    return this.memory.ranges()
  }
  isResident(page: number): boolean {
    if (this.memory.isResident(page)) return true
    return this.cacheMapped && this.fills!.isCovered(page)
  }
  kindOf(page: number): number {
    return this.source.kindOf(page)
  }

  /** Serves a fault at `address` as if the uffd had reported it (a read fault of thread 0):
   * the warm worker's rehearsal on memory of its own (rehearsal.ts). */
  rehearseFault(address: number): void {
    this.current[CUR_ADDRESS] = address
    this.current[CUR_T0] = this.meters.clock.nowMs()
    this.handleFault(this.parent, 0, 0)
  }

  protected handleEvent(view: GuestView, event: number, i: number): void {
    const msgs = view.messages
    this.counters[K_EVENTS]++
    if (event === uffd.UFFD_EVENT_REMOVE) {
      // Anonymous memory reads zeros where the guest discarded it; a private mapping of the
      // cache reads the snapshot's page again (as the mmap baseline would).
      this.counters[K_REMOVED_PAGES] += view.memory.markRange(msgs.rangeStart(i), msgs.rangeEnd(i), this.cacheMapped ? ABSENT : DISCARDED)
    } else if (event === uffd.UFFD_EVENT_UNMAP) {
      view.memory.unmap(msgs.rangeStart(i), msgs.rangeEnd(i))
    } else if (event === uffd.UFFD_EVENT_REMAP) {
      view.memory.remap(msgs.remapFrom(i), msgs.remapTo(i), msgs.remapLength(i))
    } else if (event === uffd.UFFD_EVENT_FORK) {
      this.serveFork(view, msgs.forkFd(i))
    }
  }

  /** The guest forked. A cache-mapped child shares the cache: its uffd joins this session's
   * poll set and its faults are served as the parent's. An anonymous child gets every page it
   * lacks now (its faults wait meanwhile, as do the parent's), then runs on its own. */
  protected serveFork(view: GuestView, childFd: number): void {
    this.counters[K_FORKS]++
    if (this.cacheMapped && !this.children.full) {
      const child = this.view(new uffd.Userfaultfd(childFd), view.memory.clone())
      child.installer.resumeMs = this.resumeMs
      const n = this.children.add(child)
      this.opts.log(`guest forked: child ${n} shares the decoded cache; its faults are served here`)
      return
    }
    const t0 = performance.now()
    const r = serveForkedChild(childFd, view.memory.clone(), {
      source: this.source,
      copyBuffer: this.copyBuffer,
      canPoison: this.opts.canPoison,
      log: this.opts.log,
      meters: this.meters,
      current: this.current,
      cache: this.cache,
      failClosed: why => this.opts.failClosed?.(true, why),
    })
    this.opts.log(
      `guest forked: filled ${r.children} child(ren) with ${r.pagesCopied} snapshot + ${r.zeroPages} zero pages` +
        `${r.poisonedPages ? `, ${r.poisonedPages} poisoned` : ''}${r.exited ? ' (a child exited first)' : ''} in ${Math.round(performance.now() - t0)} ms`,
    )
    // A page the child could neither get nor have poisoned would read as zeros there: fail closed.
    if (r.error !== undefined && !this.opts.canPoison) {
      this.stopped = r.error
      this.parent.installer.unservable = true
    }
  }

  /** The installer stopped serving `view`: the session ends with the guest's, a child is let go. */
  protected checkStopped(view: GuestView): boolean {
    const why = view.installer.stopped
    if (why === '') return false
    if (view === this.parent) this.stopped = why
    else this.children.drop(view)
    return true
  }

  /** The fault in `current`. */
  protected handleFault(view: GuestView, flags: number, threadId: number): void {
    const address = this.current[CUR_ADDRESS]
    const region = view.memory.regionAt(address)
    if (region === undefined) {
      view.installer.answerOutside(address)
      this.checkStopped(view)
      return
    }
    const guestPage = Math.floor((address - region.start) / this.pageSize)
    const state = region.state[guestPage]
    if (this.cacheMapped && state === PRESENT) {
      // What a cache-mapped guest has of its own (pages written, served privately) leaves only
      // with an event; a page marked here may also be one the cache held when an install found
      // it mapped (EEXIST) and that eviction took away since. Either way: serve it again (a
      // second thread's fault on a page still there gets EEXIST and a wake).
      region.state[guestPage] = ABSENT
    } else if (state === PRESENT || state === GONE) {
      view.installer.answerPresent(address, region.pagesPerGuestPage > 1 || this.cacheMapped)
      this.checkStopped(view)
      return
    }
    this.meters.fault()
    const page = region.firstPage + guestPage
    const fault = this.fault
    fault.page = page
    fault.address = address
    fault.write = (flags & uffd.UFFD_PAGEFAULT_FLAG_WRITE) !== 0
    fault.threadId = threadId
    fault.timeNs = Math.round((this.current[CUR_T0] - this.resumeMs) * 1e6)
    const plan = this.plan
    plan.clear()
    plan.add(page, 1, InstallCause.Fault)
    this.policy.onFault(fault, this, plan)
    if (this.usage !== undefined) this.usage.note(page)
    if (this.startSet.pending) this.startSet.onFault(page)
    if (this.remote !== undefined) this.remote.faultT0 = this.current[CUR_T0]
    if (this.cacheMapped && state !== BAD) this.serveCacheFault(view, region, guestPage, page, flags, threadId)
    else this.installPlan(view, flags & 1, threadId)
  }

  /** A cache-mapped guest's fault (cache-faults.ts); the policy's other runs become fill
   * requests. */
  protected serveCacheFault(view: GuestView, region: MappedRegion, guestPage: number, page: number, flags: number, threadId: number): void {
    const installer = view.installer
    const installed = this.cacheFaults!.answer(view, region, guestPage, page)
    if (this.checkStopped(view)) return
    if (!installer.faultParked) this.faultServed(page, installed, flags, threadId)
    installer.faultParked = false
    const plan = this.plan
    for (let r = 1; r < plan.length; r++) this.fills!.request(plan.first[r], plan.count[r], plan.cause[r])
  }

  protected faultServed(page: number, installed: number, flags: number, threadId: number): void {
    // Whole ns: a small integer is passed unboxed, a fraction would not be.
    const latencyNs = Math.round((this.meters.clock.nowMs() - this.current[CUR_T0]) * 1e6)
    this.meters.served(latencyNs)
    if (BREAKDOWN_ENABLED) this.meters.breakdown.serviceNs += this.readShareNs
    this.opts.trace?.record(this.fault.timeNs, page, installed, InstallCause.Fault, flags, threadId, latencyNs)
  }

  /** Installs every run of the plan into an anonymous guest; the first run holds the fault in
   * `current` when CUR_T0 is set. */
  protected installPlan(view: GuestView, flags: number, threadId: number): void {
    const plan = this.plan
    const trace = this.opts.trace
    const installer = view.installer
    const holdsFault = this.current[CUR_T0] > 0
    for (let r = 0; r < plan.length; r++) {
      const first = plan.first[r]
      const isFault = r === 0 && holdsFault
      // Runs other than the fault's are traced per install.
      installer.traceRunFlags = trace && !isFault ? flags & (TRACE_FLAG_BEFORE_RESUME | TRACE_FLAG_START_SET) : -1
      installer.faultParked = false
      const installed = installer.installRun(first, plan.count[r], plan.cause[r] as InstallCause, isFault)
      // A fault that waits for its chunk is timed and traced when it is finally served.
      if (isFault && !installer.faultParked) this.faultServed(first, installed, flags, threadId)
      if (this.checkStopped(view)) break
    }
    installer.traceRunFlags = -1
    installer.faultParked = false
  }

  /** installPlan for runs that hold no waiting fault (start-up, background, arrivals). */
  protected installPlanWithoutFault(flags: number): void {
    this.current[CUR_ADDRESS] = -1
    this.current[CUR_T0] = 0
    this.installPlan(this.parent, flags, 0)
  }

  /** Faults the kernel asked us to retry (EAGAIN while the guest's mappings changed). */
  protected retryDeferredOf(view: GuestView): void {
    const installer = view.installer
    const pending = installer.deferred
    installer.deferred = []
    const t0 = this.meters.clock.nowMs()
    for (const address of pending) {
      const region = view.memory.regionAt(address)
      if (region === undefined) {
        installer.answerOutside(address)
        continue
      }
      const guestPage = Math.floor((address - region.start) / this.pageSize)
      const s = region.state[guestPage]
      if (s !== ABSENT && s !== DISCARDED && s !== BAD) {
        installer.wake(address)
        continue
      }
      this.current[CUR_ADDRESS] = address
      this.current[CUR_T0] = t0
      this.fault.timeNs = Math.round((t0 - this.resumeMs) * 1e6)
      this.plan.clear()
      this.plan.add(region.firstPage + guestPage, 1, InstallCause.Fault)
      if (this.cacheMapped) this.serveCacheFault(view, region, guestPage, region.firstPage + guestPage, 0, 0)
      else this.installPlan(view, 0, 0)
    }
  }

  /** RemoteWaits: a waiting fault's chunk may be here now. */
  retryFault(address: number, t0: number): void {
    const region = this.memory.regionAt(address)
    if (region === undefined) return
    const guestPage = Math.floor((address - region.start) / this.pageSize)
    const s = region.state[guestPage]
    // Installed meanwhile (by a prefetch run, which wakes nobody): wake the faulting thread.
    if (s !== ABSENT && s !== DISCARDED) {
      this.parent.installer.wake(address)
      return
    }
    this.fault.timeNs = Math.round((t0 - this.resumeMs) * 1e6)
    this.plan.clear()
    this.plan.add(region.firstPage + guestPage, 1, InstallCause.Fault)
    this.current[CUR_ADDRESS] = address
    this.current[CUR_T0] = t0
    this.remote!.faultT0 = t0
    this.installPlan(this.parent, 0, 0)
  }

  /** RemoteWaits: parked runs whose chunks may be here now (already in the plan). */
  installParked(): void {
    this.installPlanWithoutFault(0)
  }
}
