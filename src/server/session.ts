// Session: serves one guest until it goes away. Runs inside a worker thread and blocks in
// poll(2) on the guest's uffd (and its forked children's, when they share the decoded cache),
// its socket, the server's stop eventfd and the eventfds of the object store and the fill
// workers, so the main event loop never waits on a fault. This is its loop and the work it
// does between faults (the start set, idle work, retries); what it does with each fault and
// event is SessionHandling's (session-handling.ts).
import { InstallCause, type RunList } from '../policy/policy.js'
import { TRACE_FLAG_BEFORE_RESUME, TRACE_FLAG_START_SET } from '../trace/format.js'
import * as uffd from '../uffd/index.js'
import { BREAKDOWN_ENABLED } from './fault-breakdown.js'
import { CHILD_PROBE_MS, type GuestView } from './guest-views.js'
import { CUR_READ_START, CUR_ADDRESS, CUR_T0, MAX_RUN_BYTES, type TraceSink } from './installer.js'
import { REMOTE_RECHECK_MS } from './remote-waits.js'
import { K_LOOP_TURNS, type SessionStats } from './session-meters.js'
import { SessionHandling, SLOT_CONN, SLOT_REMOTE, SLOT_STOP, SLOT_UFFD, type SessionOptions } from './session-handling.js'

export { MAX_RUN_BYTES, type SessionOptions, type TraceSink, type SessionStats }

/** Pages of background or start-up work between two polls of the uffd: faults wait at most
 * this long. */
export const IDLE_BATCH_PAGES = 256
/** Pages of the start set installed between two looks at the uffd: a fault arriving meanwhile
 * waits for at most this many installs. */
export const START_BATCH_PAGES = 64

export class Session extends SessionHandling {
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
    const sample = this.usage?.msUntilSample(this.meters.clock.nowMs()) ?? -1
    if (sample >= 0 && (timeout < 0 || timeout > sample)) timeout = sample
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
