// Session: serves one guest until it goes away. Runs inside a worker thread and blocks in
// poll(2) on the guest's uffd (and its forked children's, when they share the decoded cache),
// its socket, the server's stop eventfd and the eventfds of the object store and the fill
// workers, so the main event loop never waits on a fault. It reads faults and events and says
// what to do with each; installing pages is the installer's, asking for fills FillRequests'.
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
import { CHILD_PROBE_MS, ForkedChildren, type GuestView } from './guest-views.js'
import type { GuestRegion } from './handshake.js'
import { CUR_ADDRESS, CUR_READ_START, CUR_T0, CURRENT_SLOTS, GuestInstaller, MAX_RUN_BYTES, type TraceSink } from './installer.js'
import { RemoteWaits, REMOTE_RECHECK_MS } from './remote-waits.js'
import { StartSet } from './start-set.js'
import type { UsageRecorder } from './usage-recorder.js'
import { K_EVENTS, K_FORKS, K_LOOP_TURNS, K_REMOVED_PAGES, SessionMeters, type SessionStats } from './session-meters.js'

export { MAX_RUN_BYTES, type TraceSink, type SessionStats }

/** Pages of background or start-up work between two polls of the uffd: faults wait at most
 * this long. */
export const IDLE_BATCH_PAGES = 256
/** Pages of the start set installed between two looks at the uffd: a fault arriving meanwhile
 * waits for at most this many installs. */
export const START_BATCH_PAGES = 64
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
  /** Live counters the server reads (COUNTER_SLOTS Float64 slots). */
  counters?: SharedArrayBuffer
  /** Records which pages the guest used, for `serve --learn`. */
  usage?: UsageRecorder
  /** Heartbeat: word 0 is bumped before and after run()'s poll, so it is odd while the session
   * waits and even while it works: the server's main thread sees a turn that never ends (a
   * policy that never returns) as an even value that stops moving (session-slot.ts). */
  heartbeat?: Int32Array
}

const SLOT_UFFD = 0,
  SLOT_CONN = 1,
  SLOT_STOP = 2,
  SLOT_REMOTE = 3,
  SLOT_CHILDREN = 4

export class Session implements PolicyContext {
  readonly pageSize: number
  readonly pageCount: number
  readonly memory: GuestMemory
  readonly meters: SessionMeters
  private readonly opts: SessionOptions
  private readonly source: PageSource
  private readonly policy: FaultPolicy
  private readonly copyBuffer = new uffd.CopySourceBuffer(MAX_RUN_BYTES)
  private readonly plan = new RunList(64)
  private readonly poll = new uffd.PollSet(SLOT_CHILDREN + MAX_CHILDREN)
  private readonly counters: Float64Array
  private readonly fault: FaultInfo = { page: 0, address: 0, write: false, threadId: 0, timeNs: 0 }
  private readonly current = new Float64Array(CURRENT_SLOTS)
  private readonly scratch = Buffer.alloc(256)
  private readonly parent: GuestView
  private readonly children: ForkedChildren
  private readonly remote: RemoteWaits | undefined
  private readonly fills: FillRequests | undefined
  private readonly cache: DecodedCache | undefined
  private readonly cacheMapped: boolean
  private readonly cacheFaults: CacheFaults | undefined
  /** With the breakdown on: the last uffd read's time per message it returned, ns. */
  private readShareNs = 0
  /** Time zero of fault times and traces: when start() finished and the guest was acked. */
  private resumeMs = 0
  private readonly bytesReadAtStart: number
  private idleWork: boolean
  /** onStart's runs still to install after the ack (anonymous guests without fill workers). */
  private readonly startSet: StartSet
  private readonly usage: UsageRecorder | undefined
  private stopped = ''

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

  private view(fd: uffd.Userfaultfd, memory: GuestMemory): GuestView {
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

  /** Runs the policy's start (installed now when the policy says before the guest runs,
   * otherwise kept for after the ack), then marks the resume. */
  start(): void {
    if (this.policy.onStart) {
      this.plan.clear()
      this.policy.onStart(this, this.plan)
      if (this.policy.startBeforeResume) this.installBeforeResume()
      else for (let r = 0; r < this.plan.length; r++) this.queueStartRun(this.plan.first[r], this.plan.count[r], this.plan.cause[r] as InstallCause)
    }
    this.resumeMs = this.meters.clock.nowMs()
    this.parent.installer.resumeMs = this.resumeMs
  }

  /** Serves until the guest disconnects or exits, or the server stops. */
  run(): SessionStats {
    const poll = this.poll
    const heartbeat = this.opts.heartbeat
    this.meters.heap.start()
    while (this.stopped === '') {
      this.counters[K_LOOP_TURNS]++
      // Heartbeat: odd while waiting in poll, even while working (SessionOptions.heartbeat).
      if (heartbeat !== undefined) Atomics.add(heartbeat, 0, 1)
      const ready = poll.wait(this.pollTimeout())
      if (heartbeat !== undefined) Atomics.add(heartbeat, 0, 1)
      if (ready > 0) {
        if (poll.revents(SLOT_UFFD) !== 0) this.drainEvents(this.parent)
        // The start set goes on between faults (each batch where the last fault showed the
        // guest to be), or a guest that faults without pause would starve it.
        if (this.startSet.pending && this.stopped === '') this.installStartBatch()
        const children = this.children.list
        for (let c = children.length - 1; c >= 0; c--) if (this.children.readyIndex(c)) this.drainEvents(children[c])
        if (poll.revents(SLOT_CONN) !== 0) this.checkConnection()
        if (poll.revents(SLOT_STOP) !== 0) this.stopped = 'server stopping'
        if (this.stopped === '' && poll.revents(SLOT_REMOTE) !== 0) this.remote!.onReady(this, this.plan)
      } else if (this.hasDeferred()) {
        this.retryDeferred()
      } else if (this.startSet.pending) {
        this.installStartBatch()
      } else if (this.idleWork && !(this.remote?.busy ?? false)) {
        this.runIdle()
      } else if (this.remote?.waiting) {
        this.remote.onReady(this, this.plan)
      }
      if (this.children.list.length > 0) this.children.probe(this.meters.clock.nowMs())
      if (this.usage !== undefined) this.usage.maybeSample(this.memory, this.meters.clock.nowMs())
      const installer = this.parent.installer
      if (installer.stopped !== '' && this.stopped === '') this.stopped = installer.stopped
    }
    return this.finish()
  }

  private pollTimeout(): number {
    if (this.hasDeferred()) return 1
    if (this.startSet.pending) return 0
    if (this.idleWork && !(this.remote?.busy ?? false)) return 0
    let timeout = -1
    if (this.remote?.waiting) timeout = REMOTE_RECHECK_MS
    if (this.children.list.length > 0 && (timeout < 0 || timeout > CHILD_PROBE_MS)) timeout = CHILD_PROBE_MS
    return timeout
  }

  private finish(): SessionStats {
    this.opts.trace?.close()
    this.fills?.close()
    this.children.closeAll()
    const bytesRead = (this.source.bytesRead ?? 0) - this.bytesReadAtStart
    const stats = this.meters.finish(this.cacheMapped ? 'cache' : 'anonymous', bytesRead, this.stopped)
    if (this.usage !== undefined) stats.usedPages = this.usage.finish(this.memory)
    return stats
  }

  /** The installer stopped the session because a page could not be served (not poisoned). */
  get unservable(): boolean {
    return this.parent.installer.unservable
  }

  private checkConnection(): void {
    // A guest has nothing to say after the handshake: data is drained, EOF/HUP ends it.
    const n = uffd.receiveBytes(this.opts.connectionFd, this.scratch)
    if (n === 0 || (n < 0 && (this.poll.revents(SLOT_CONN) & (uffd.POLLHUP | uffd.POLLERR | uffd.POLLRDHUP)) !== 0)) {
      this.stopped = 'guest disconnected'
    }
  }

  private drainEvents(view: GuestView): void {
    const msgs = view.messages
    const current = this.current
    for (;;) {
      let n: number
      if (BREAKDOWN_ENABLED) current[CUR_READ_START] = this.meters.clock.nowMs()
      try {
        n = view.fd.readMessages(msgs)
      } catch (err) {
        if (view === this.parent) this.stopped = `uffd read failed: ${(err as Error).message}`
        else this.children.drop(view)
        return
      }
      if (BREAKDOWN_ENABLED) this.noteRead(n)
      if (n === 0) return
      const t0 = this.meters.clock.nowMs()
      for (let i = 0; i < n; i++) {
        const event = msgs.event(i)
        if (event === uffd.UFFD_EVENT_PAGEFAULT) {
          if (this.stopped === '') {
            current[CUR_ADDRESS] = msgs.faultAddress(i)
            current[CUR_T0] = t0
            this.handleFault(view, msgs.faultFlags(i), msgs.faultThreadId(i))
          }
        } else if (this.stopped === '' || event === uffd.UFFD_EVENT_FORK) {
          // A forked child's uffd was installed in this process by the read: it is served
          // even when the session is stopping, or the child would read zeros.
          this.handleEvent(view, event, i)
        }
      }
      if (view.installer.deferred.length) this.retryDeferredOf(view)
      if (n < msgs.capacity) return
    }
  }

  private noteRead(n: number): void {
    const ns = (this.meters.clock.nowMs() - this.current[CUR_READ_START]) * 1e6
    const b = this.meters.breakdown
    b.uffdReads++
    b.uffdReadNs += ns
    if (n === 0) b.emptyReads++
    this.readShareNs = n > 0 ? ns / n : 0
  }

  private handleEvent(view: GuestView, event: number, i: number): void {
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
  private serveFork(view: GuestView, childFd: number): void {
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
  private checkStopped(view: GuestView): boolean {
    const why = view.installer.stopped
    if (why === '') return false
    if (view === this.parent) this.stopped = why
    else this.children.drop(view)
    return true
  }

  /** The fault in `current`. */
  private handleFault(view: GuestView, flags: number, threadId: number): void {
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
  private serveCacheFault(view: GuestView, region: MappedRegion, guestPage: number, page: number, flags: number, threadId: number): void {
    const installer = view.installer
    const installed = this.cacheFaults!.answer(view, region, guestPage, page)
    if (this.checkStopped(view)) return
    if (!installer.faultParked) this.faultServed(page, installed, flags, threadId)
    installer.faultParked = false
    const plan = this.plan
    for (let r = 1; r < plan.length; r++) this.fills!.request(plan.first[r], plan.count[r], plan.cause[r])
  }

  private faultServed(page: number, installed: number, flags: number, threadId: number): void {
    // Whole ns: a small integer is passed unboxed, a fraction would not be.
    const latencyNs = Math.round((this.meters.clock.nowMs() - this.current[CUR_T0]) * 1e6)
    this.meters.served(latencyNs)
    if (BREAKDOWN_ENABLED) this.meters.breakdown.serviceNs += this.readShareNs
    this.opts.trace?.record(this.fault.timeNs, page, installed, InstallCause.Fault, flags, threadId, latencyNs)
  }

  /** Installs every run of the plan into an anonymous guest; the first run holds the fault in
   * `current` when CUR_T0 is set. */
  private installPlan(view: GuestView, flags: number, threadId: number): void {
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
  private installPlanWithoutFault(flags: number): void {
    this.current[CUR_ADDRESS] = -1
    this.current[CUR_T0] = 0
    this.installPlan(this.parent, flags, 0)
  }

  /** onStart of a policy that must finish before the guest runs (eager): everything goes in
   * now; with fill workers they decode it, every core at once, at fault priority (nothing
   * else should come first), each piece installed (anonymous guest) as its folio arrives. */
  private installBeforeResume(): void {
    const fills = this.fills
    if (fills === undefined) {
      this.installPlanWithoutFault(TRACE_FLAG_BEFORE_RESUME)
      return
    }
    const plan = this.plan
    for (let r = 0; r < plan.length; r++) fills.requestAndWaitByFolio(plan.first[r], plan.count[r], plan.cause[r] as InstallCause, InstallCause.Fault)
    const install = this.cacheMapped
      ? undefined
      : (ready: RunList) => {
          for (let r = 0; r < ready.length && this.stopped === ''; r++) {
            plan.clear()
            plan.add(ready.first[r], ready.count[r], ready.cause[r] as InstallCause)
            this.installPlanWithoutFault(TRACE_FLAG_BEFORE_RESUME)
          }
        }
    if (!fills.waitAll(this.opts.stopFd, install, this.source, this.copyBuffer.buffer)) this.stopped = 'server stopping'
  }

  /** A run of onStart's, for after the ack. A cache-mapped guest's goes to the fill workers
   * (the guest then maps it); an anonymous guest's is installed from the loop, batch by batch
   * between faults and following them (start-set.ts): its pages are often sparse, and a fill
   * worker would decode whole folios of pages it does not want. */
  private queueStartRun(first: number, count: number, cause: InstallCause): void {
    if (this.cacheMapped) this.fills!.request(first, count, InstallCause.Prefetch)
    else this.startSet.add(first, count, cause)
  }

  /** Up to START_BATCH_PAGES of onStart's runs. */
  private installStartBatch(): void {
    this.plan.clear()
    this.startSet.nextBatch(this.plan, START_BATCH_PAGES)
    this.noteStartSet(this.plan)
    this.installPlanWithoutFault(TRACE_FLAG_START_SET)
  }

  /** An anonymous guest's start set counts as used (its page tables cannot tell a page it
   * touched from one installed for it); a cache-mapped guest's use is sampled instead. */
  private noteStartSet(plan: RunList): void {
    if (this.usage === undefined || this.cacheMapped) return
    for (let r = 0; r < plan.length; r++) this.usage.noteRun(plan.first[r], plan.count[r])
  }

  private hasDeferred(): boolean {
    return this.parent.installer.deferred.length > 0 || this.children.anyDeferred()
  }

  private retryDeferred(): void {
    this.retryDeferredOf(this.parent)
    const children = this.children.list
    for (let c = children.length - 1; c >= 0; c--) if (c < children.length) this.retryDeferredOf(children[c])
  }

  /** Faults the kernel asked us to retry (EAGAIN while the guest's mappings changed). */
  private retryDeferredOf(view: GuestView): void {
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

  private runIdle(): void {
    const plan = this.plan
    plan.clear()
    const fills = this.fills
    // A cache-mapped guest's background work goes to the fill workers, paced by their queue; an
    // anonymous guest's is installed here, between faults.
    if (this.cacheMapped && fills!.room(InstallCause.Background) < IDLE_BATCH_PAGES) return
    const more = this.policy.onIdle!(this, plan, IDLE_BATCH_PAGES)
    if (!more) this.idleWork = false
    if (plan.length === 0) return
    if (!this.cacheMapped) {
      this.installPlanWithoutFault(0)
      return
    }
    for (let r = 0; r < plan.length; r++) fills!.request(plan.first[r], plan.count[r], InstallCause.Background)
  }
}
