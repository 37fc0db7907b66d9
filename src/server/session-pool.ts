// The page server's session workers: started (replacements in SCHED_IDLE, so their start-up
// does not slow the guests being served), kept warm, handed guests, released when idle beyond
// --warm-workers, restarted with a growing delay when they fail to start, and watched: a session
// stuck in one turn of its loop (a policy that never returns) past the deadline has its worker
// terminated, and whatever a worker that is gone still held is closed here.
import { Worker } from 'node:worker_threads'
import { FillNotifier } from '../cache/fill-notifier.js'
import { describeError } from '../errors.js'
import type { ChunkStore } from '../store/chunk-store.js'
import * as uffd from '../uffd/index.js'
import { workerEntry } from '../util/worker-url.js'
import type { SessionStats } from './session.js'
import { createSlot, SessionSlot, SLOT_SERVING } from './session-slot.js'
import { killGuest } from './unservable.js'
import type { GuestHandoff, SessionWorkerData, ToSessionWorker, WorkerMessage } from './worker-protocol.js'

export type LogLevel = 'info' | 'warn' | 'error'

export interface SessionRecord {
  id: number
  pid: number
  form: string
  bytes: number
  /** How the guest's memory is backed: anonymous, or the decoded cache mapped over it. */
  map?: 'anonymous' | 'cache'
  /** The session's live counters (session-meters.ts), read while it runs. */
  counters?: SharedArrayBuffer
  stats?: SessionStats
  error?: string
  /** Heap and ArrayBuffer bytes the session's worker held after it, less before it, collected
   * (only where gc is exposed: tests). */
  retainedBytes?: number
}

/** What the pool tells the server, and asks of it. */
export interface SessionPoolHost {
  log(line: string, level?: LogLevel): void
  refused(pid: number, error: string): void
  sessionStarted(rec: SessionRecord): void
  sessionEnded(rec: SessionRecord, stats: SessionStats | undefined, error: string | undefined): void
  /** A worker got ready or went away, or a session started: hand out waiting guests. */
  changed(): void
  /** Guests waiting for a worker (workers are started for them). */
  waitingGuests(): number
}

export interface SessionPoolOptions {
  workerData: Omit<SessionWorkerData, 'slot'>
  warm: number
  maxSessions: number
  singleGuest: boolean
  idleStartLimitMs: number
  stallTimeoutMs: number
  policySpec: string
  store: ChunkStore | undefined
}

/** How often a pool with workers getting ready in SCHED_IDLE looks for a waiting guest. */
const IDLE_START_CHECK_MS = 50
/** A worker that failed to start is retried after this long, doubling up to the cap. */
const RESTART_BACKOFF_MS = 500,
  RESTART_BACKOFF_MAX_MS = 30000

let sessionWorker: ReturnType<typeof workerEntry> | undefined

interface WorkerEntry {
  worker: Worker
  slot: SessionSlot
  state: 'starting' | 'ready' | 'busy' | 'exiting'
  readyFd: number
  /** The guest handed to it (its descriptors are the worker's until its slot says released). */
  guest?: GuestHandoff
  session?: SessionRecord
  /** Whether the session's uffd can poison (from its start). */
  canPoison?: boolean
  /** Last heartbeat seen, and since when it has not moved. */
  beat: number
  sinceMs: number
  /** Set when the server ends it: why (told to the guest). */
  stopReason?: string
}

export class SessionPool {
  private readonly host: SessionPoolHost
  private readonly opts: SessionPoolOptions
  /** The decoded cache's fill notifier, to release a slot a terminated worker held. */
  private readonly fillNotifier: FillNotifier | undefined
  private readonly entries = new Map<Worker, WorkerEntry>()
  private closing = false
  /** Set once the server has its warm workers: later start failures are retried. */
  private started = false
  private startFailures = 0
  /** The last reason a worker could not start (for guests refused meanwhile). */
  lastStartFailure = ''
  private restartTimer: NodeJS.Timeout | undefined
  private stallTimer: NodeJS.Timeout | undefined
  /** Workers getting ready in SCHED_IDLE: their thread(s), and since when. */
  private readonly idleStarts = new Map<Worker, { tids: number[]; sinceMs: number }>()
  private idleStartTimer: NodeJS.Timeout | undefined
  private handedOut = 0
  private startedCount = 0

  constructor(host: SessionPoolHost, opts: SessionPoolOptions) {
    this.host = host
    this.opts = opts
    this.fillNotifier = opts.workerData.fills !== undefined ? new FillNotifier(opts.workerData.fills.notifier) : undefined
  }

  /** Workers started so far (a refused client must not cost one). */
  get workersStarted(): number {
    return this.startedCount
  }
  /** Workers alive: the warm ones and one per guest being served. */
  get size(): number {
    return this.entries.size
  }
  get busyCount(): number {
    return this.count(e => e.state === 'busy')
  }
  /** Workers checking a guest they were handed (no session yet). */
  get admittingCount(): number {
    return this.count(e => e.state === 'busy' && e.session === undefined)
  }
  get readyCount(): number {
    return this.count(e => e.state === 'ready')
  }

  private count(pred: (e: WorkerEntry) => boolean): number {
    let n = 0
    for (const e of this.entries.values()) if (pred(e)) n++
    return n
  }

  /** The server has its warm workers: from now on start failures are retried, sessions watched. */
  markStarted(): void {
    this.started = true
    this.stallTimer = setInterval(() => this.checkProgress(), Math.max(10, Math.min(1000, this.opts.stallTimeoutMs / 4)))
    this.stallTimer.unref()
  }

  /** Hands `guest` to a ready worker, within --max-sessions; false when none can take it. */
  give(guest: GuestHandoff): boolean {
    if (this.busyCount >= this.opts.maxSessions) return false
    const ready = [...this.entries.values()].find(e => e.state === 'ready')
    if (ready === undefined) return false
    ready.state = 'busy'
    ready.guest = guest
    ready.beat = ready.slot.heartbeat
    ready.sinceMs = 0
    this.handedOut++
    ready.worker.postMessage(guest satisfies ToSessionWorker)
    return true
  }

  /** Starts workers until `warm` (or as many as guests wait for, within --max-sessions) are
   * ready or getting ready. Replacements (`startIdle`) get ready in SCHED_IDLE. */
  fill(startIdle = true): Promise<void> {
    const starts: Promise<void>[] = []
    if (this.restartTimer !== undefined) return Promise.resolve()
    const { warm, maxSessions, singleGuest } = this.opts
    const target = Math.max(warm, Math.min(this.host.waitingGuests(), Math.max(0, maxSessions - this.busyCount)))
    // A worker still checking the guest it was handed counts as ready: if it refuses the guest
    // it is ready again, so a refused client costs no worker start. Its replacement starts once
    // its session does.
    const admitting = this.admittingCount
    while (
      !this.closing &&
      this.readyCount + this.count(e => e.state === 'starting') + admitting < target &&
      this.entries.size < maxSessions + warm &&
      !(singleGuest && this.handedOut > 0)
    ) {
      starts.push(this.spawn(startIdle))
    }
    return Promise.all(starts).then(() => undefined)
  }

  /** Idle workers beyond `warm` (left by guests refused after the hand-off) are released. */
  trim(): void {
    if (this.host.waitingGuests() > 0) return
    let extra = this.readyCount - this.opts.warm
    for (const e of this.entries.values()) {
      if (extra <= 0) break
      if (e.state !== 'ready') continue
      e.state = 'exiting'
      e.worker.postMessage({ type: 'exit' } satisfies ToSessionWorker)
      extra--
    }
  }

  /** No more starts; idle workers (and those still getting ready) are told to exit. */
  close(): void {
    this.closing = true
    for (const t of [this.idleStartTimer, this.stallTimer]) clearInterval(t)
    clearTimeout(this.restartTimer)
    this.idleStartTimer = this.stallTimer = this.restartTimer = undefined
    for (const e of this.entries.values()) {
      if (e.state === 'ready' || e.state === 'starting') {
        e.state = 'exiting'
        e.worker.postMessage({ type: 'exit' } satisfies ToSessionWorker)
      }
    }
  }

  /** Resolves once every worker alive now has exited. */
  exited(): Promise<void> {
    return Promise.all([...this.entries.keys()].map(w => new Promise(r => w.once('exit', r)))).then(() => undefined)
  }

  /** Terminates every worker (sessions stuck in a policy included). */
  terminateAll(): void {
    for (const e of this.entries.values()) void e.worker.terminate()
  }

  /** A worker getting ready in SCHED_IDLE is raised to normal priority when a guest waits for
   * it or after idleStartLimitMs: on a machine kept busy, an idle-class thread might never run. */
  private watchIdleStarts(): void {
    if (this.idleStartTimer !== undefined || this.idleStarts.size === 0) return
    this.idleStartTimer = setInterval(() => {
      if (this.idleStarts.size === 0 || this.closing) {
        clearInterval(this.idleStartTimer)
        this.idleStartTimer = undefined
        return
      }
      const guestWaiting = this.host.waitingGuests() > 0 && this.readyCount === 0
      const now = Date.now()
      for (const [worker, start] of this.idleStarts) {
        if (!guestWaiting && now - start.sinceMs < this.opts.idleStartLimitMs) continue
        this.idleStarts.delete(worker)
        for (const tid of start.tids) {
          try {
            uffd.setThreadIdle(tid, false)
          } catch {
            /* it ended, or raised itself */
          }
        }
      }
      // Threads Node started for a worker after its tids were taken (a loader-hooks thread)
      // inherited SCHED_IDLE: beside busy cores the worker would wait on them forever.
      if (guestWaiting) this.raiseStrayIdleThreads()
    }, IDLE_START_CHECK_MS)
    this.idleStartTimer.unref()
  }

  /** A thread that Node started for a worker while it was idle-class (a loader-hooks thread,
   * say) inherited SCHED_IDLE and would keep it: once a worker is ready, every idle-class
   * thread that is not a worker still getting ready is raised. */
  private raiseStrayIdleThreads(): void {
    const starting = new Set<number>()
    for (const s of this.idleStarts.values()) for (const tid of s.tids) starting.add(tid)
    for (const tid of uffd.idleClassThreads()) {
      if (starting.has(tid)) continue
      try {
        uffd.setThreadIdle(tid, false)
      } catch {
        /* exited meanwhile */
      }
    }
  }

  private spawn(startIdle: boolean): Promise<void> {
    const store = this.opts.store
    // Remote snapshots: the store signals this eventfd when a chunk the worker asked for is in.
    let readyFd = store !== undefined ? uffd.createEventFd() : -1
    // A new thread inherits its creator's scheduling class: created while this thread is in
    // SCHED_IDLE, the worker is idle-class from its first instruction (Node's own start-up of
    // a worker is most of its cost). It raises itself once ready; this thread now.
    const idle = startIdle && uffd.canLowerThreadPriority()
    const slotBuffer = createSlot()
    const workerData: SessionWorkerData = { ...this.opts.workerData, slot: slotBuffer, startIdle: idle }
    if (readyFd >= 0) workerData.readyFd = readyFd
    const tidsBefore = idle ? uffd.threadIds() : []
    // Looked up once (the first start, while the server starts): a dist/ older than src/ is
    // refused there, with its own error.
    sessionWorker ??= workerEntry(
      import.meta.url,
      new URL('./session-worker.js', import.meta.url),
      new URL('../../dist/server/session-worker.js', import.meta.url),
    )
    let worker: Worker
    try {
      if (idle) uffd.setThreadIdle(0, true)
      try {
        worker = new Worker(sessionWorker.url, { ...sessionWorker.options, workerData })
      } finally {
        if (idle) uffd.setThreadIdle(0, false)
      }
    } catch (err) {
      uffd.closeFd(readyFd)
      return Promise.reject(this.startFailed(describeError(err)))
    }
    this.startedCount++
    if (idle) {
      const tids = uffd.threadIds().filter(t => !tidsBefore.includes(t))
      if (tids.length > 0) {
        this.idleStarts.set(worker, { tids, sinceMs: Date.now() })
        this.watchIdleStarts()
      }
    }
    const entry: WorkerEntry = { worker, slot: new SessionSlot(slotBuffer), state: 'starting', readyFd, beat: 0, sinceMs: 0 }
    this.entries.set(worker, entry)
    let failure: string | undefined
    return new Promise<void>((resolve, reject) => {
      worker.on('message', (m: WorkerMessage) => {
        switch (m.type) {
          case 'idle':
            if (this.idleStarts.delete(worker)) this.raiseStrayIdleThreads()
            if (entry.state === 'starting') this.startFailures = 0
            // Ready, or ready again after refusing a guest (no new worker needed for that).
            if (entry.state !== 'exiting') {
              entry.state = 'ready'
              entry.guest = undefined
            }
            resolve()
            this.host.changed()
            break
          case 'log':
            this.host.log(m.line, /: cannot serve |lacks|refused/.test(m.line) ? 'warn' : 'info')
            break
          case 'fetch':
            if (readyFd >= 0) store!.request(m.chunks, m.priority, readyFd)
            break
          case 'invalid':
            store?.invalidate(m.chunk)
            break
          case 'rejected':
            this.host.refused(m.pid, m.error)
            break
          case 'session': {
            const rec: SessionRecord = { id: m.id, pid: m.pid, form: m.form, bytes: m.bytes, map: m.map, counters: m.counters }
            entry.session = rec
            entry.canPoison = m.canPoison
            this.host.sessionStarted(rec)
            this.host.changed()
            break
          }
          case 'ended': {
            const rec = entry.session ?? { id: m.id, pid: m.pid, form: '?', bytes: 0 }
            entry.session = undefined
            entry.guest = undefined
            rec.retainedBytes = m.retainedBytes
            this.host.sessionEnded(rec, m.stats, m.error)
            break
          }
          case 'fatal':
            failure = m.error
            break
        }
      })
      worker.on('error', err => {
        failure = describeError(err)
      })
      worker.on('exit', () => {
        this.entries.delete(worker)
        this.idleStarts.delete(worker)
        if (readyFd >= 0) {
          store!.detach(readyFd)
          uffd.closeFd(readyFd)
          readyFd = -1
        }
        this.releaseLeftovers(entry, failure)
        if (entry.state === 'starting') {
          reject(this.startFailed(failure ?? 'session worker exited while starting'))
        } else {
          if (failure !== undefined) this.host.log(`session worker failed: ${failure}`, 'warn')
          resolve()
        }
        if (!this.closing) this.host.changed()
      })
    })
  }

  /** A worker could not get ready: say so once, and retry later (doubling the wait). */
  private startFailed(message: string): Error {
    this.startFailures++
    this.lastStartFailure = message
    // While the server starts, the failure is its caller's to report (nothing is retried).
    if (this.started && !this.closing && this.restartTimer === undefined) {
      const delay = Math.min(RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_MS * 2 ** (this.startFailures - 1))
      this.host.log(`session worker failed to start: ${message} (retrying in ${delay} ms)`, 'warn')
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined
        this.host.changed()
      }, delay)
      this.restartTimer.unref()
    }
    return new Error(message)
  }

  /** A worker that is gone closes nothing more: what its slot says it still held is closed
   * here (after telling the guest why), and a session it did not report ended is ended. */
  private releaseLeftovers(entry: WorkerEntry, failure: string | undefined): void {
    const fill = entry.slot.leftFillSlot()
    if (fill !== undefined) {
      // Out of the notifier first: no fill worker signals the descriptor once it is closed.
      this.fillNotifier?.release(fill.slot)
      uffd.closeFd(fill.fd)
    }
    const left = entry.slot.leftOpen()
    const why = entry.stopReason ?? (failure !== undefined ? `session worker failed: ${failure}` : 'session worker exited')
    if (left !== undefined) {
      if (left.conn >= 0) {
        try {
          uffd.sendBytes(left.conn, Buffer.from(JSON.stringify({ ok: false, error: why }) + '\n'))
        } catch {
          /* gone */
        }
      }
      // A stalled session's guest has faults waiting that nobody will serve; closing its uffd
      // would let them read zeros. One whose uffd cannot poison (no watchdog to trust either:
      // Firecracker waits forever) is ended first, as an unservable page ends it.
      const pid = entry.session?.pid ?? entry.guest?.peer.pid
      if (entry.stopReason !== undefined && entry.canPoison === false && this.opts.workerData.onUnservable === 'kill' && pid !== undefined) {
        this.host.log(
          `session ${entry.session?.id ?? '?'}: stalled, and the guest's uffd cannot poison: ${killGuest(left.pidfd, pid, true)} (--on-unservable kill)`,
          'warn',
        )
      }
      for (const fd of [left.trace, left.uffd, left.conn, left.pidfd]) uffd.closeFd(fd)
    }
    if (entry.session !== undefined) {
      this.host.sessionEnded(entry.session, undefined, why)
    } else if (entry.guest !== undefined && left !== undefined) {
      this.host.refused(entry.guest.peer.pid, why)
    }
  }

  /** Sessions stuck in one turn of their loop (heartbeat even, not moving) past the deadline
   * are ended: while a turn lasts, every fault of the guest waits, and a policy that never
   * returns must not hold its guest forever. */
  private checkProgress(): void {
    const now = Date.now()
    for (const e of this.entries.values()) {
      if (e.state !== 'busy' || e.stopReason !== undefined || e.slot.state !== SLOT_SERVING) continue
      const beat = e.slot.heartbeat
      // 0: a session that has no heartbeat (never bumped): nothing can be told about it.
      if (beat === 0 || beat !== e.beat || beat % 2 === 1) {
        e.beat = beat
        e.sinceMs = now
        continue
      }
      if (e.sinceMs === 0) {
        e.sinceMs = now
        continue
      }
      const stuckMs = now - e.sinceMs
      if (stuckMs < this.opts.stallTimeoutMs) continue
      const s = e.session
      e.stopReason =
        `session stalled: no progress for ${stuckMs} ms with faults waiting (policy ${this.opts.policySpec}: a call into it has not returned); ` +
        'the server ended it'
      this.host.log(`session ${s?.id ?? '?'} (pid ${s?.pid ?? e.guest?.peer.pid ?? '?'}): ${e.stopReason}`, 'warn')
      void e.worker.terminate()
    }
  }
}
