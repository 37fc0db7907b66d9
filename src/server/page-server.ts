// PageServer: owns the listening socket, one acceptor thread that reads and checks each guest's
// first message (a pending handshake costs a descriptor, not a worker), and a pool of session
// workers, one guest each, with some kept warm (snapshot open, policy loaded) so a guest never
// waits for a worker to start. The main thread hands checked guests to warm workers, bounds the
// sessions served at once, watches each session's progress, and keeps one descriptor of the
// snapshot open for its lifetime.
import { EventEmitter } from 'node:events'
import { closeSync, constants, existsSync, lstatSync, openSync, statSync, unlinkSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { describeError, FaultlineError } from '../errors.js'
import type { FaultPolicy } from '../policy/policy.js'
import { createPolicy, policyModulePath } from '../policy/registry.js'
import { SnapshotReader } from '../snapshot/reader.js'
import { checkTracePath } from '../trace/recorder.js'
import { ChunkStore, remoteStoreDefaults, type ChunkStoreOptions } from '../store/chunk-store.js'
import { isS3Url } from '../store/s3-config.js'
import * as uffd from '../uffd/index.js'
import { openFileCount, openFileLimit } from '../util/fd-limit.js'
import { assertBuildFresh } from '../util/build-freshness.js'
import { inputIdentities, type FileIdentity } from '../util/output-file.js'
import type { SessionStats } from './session.js'
import { createSlot, SessionSlot, SLOT_SERVING } from './session-slot.js'
import type { AcceptorData, AcceptorMessage, GuestHandoff, SessionWorkerData, ToSessionWorker, WorkerMessage } from './worker-protocol.js'

export interface PageServerOptions {
  socketPath: string
  snapshotPath: string
  /** `--policy` spec; default ondemand. */
  policy?: string
  tracePath?: string
  /** Peer uids allowed besides our own (the socket is then made connectable by others too:
   * SO_PEERCRED does the refusing). */
  allowUids?: number[]
  allowAnyUid?: boolean
  /** Workers kept waiting for the next guest (1..MAX_WARM_WORKERS, default 1). */
  warmWorkers?: number
  /** A replacement worker getting ready in SCHED_IDLE is raised after this long even when no
   * guest waits for it (default 2000 ms). */
  idleStartLimitMs?: number
  /** Guests served at once (1..MAX_SESSIONS, default 256); more wait for a slot, up to the
   * handshake timeout. */
  maxSessions?: number
  /** Serve one guest: no worker starts after the first one takes a guest, so nothing but that
   * guest's session runs in the process (benchmarks measure the server's own cost). */
  singleGuest?: boolean
  handshakeTimeoutMs?: number
  /** Connections whose first message is awaited, at most (default 128); more wait in the
   * socket's backlog. */
  maxPendingHandshakes?: number
  /** A session whose loop has not moved for this long while its guest has faults waiting is
   * ended and its guest failed closed (default 20000 ms). */
  stallTimeoutMs?: number
  /** Files a --trace must not overwrite, besides the snapshot and the policy's inputs. */
  protectedFiles?: FileIdentity[]
  /** For an s3:// snapshot: its chunk cache and how to reach the store (--cache-dir,
   * --cache-size, --endpoint); defaults from remoteStoreDefaults(). */
  remote?: Partial<ChunkStoreOptions>
}

export const MAX_WARM_WORKERS = 64
export const MAX_SESSIONS = 4096
export const MAX_PENDING_HANDSHAKES = 4096
const DEFAULT_STALL_TIMEOUT_MS = 20000

export interface SessionRecord {
  id: number
  pid: number
  form: string
  bytes: number
  stats?: SessionStats
  error?: string
  /** Heap and ArrayBuffer bytes the session's worker held after it, less before it, collected
   * (only where gc is exposed: tests). */
  retainedBytes?: number
}

export type LogLevel = 'info' | 'warn' | 'error'

export interface PageServerEvents {
  /** A line for the operator; `level` is 'warn' for what went wrong (default 'info'). */
  log: [line: string, level?: LogLevel]
  session: [record: SessionRecord]
  rejected: [pid: number, error: string]
  ended: [record: SessionRecord]
}

export class ServerError extends FaultlineError {
  override readonly code: string = 'FL_ERR_SERVER'
}

/** Workers run compiled JS even when the server itself runs from TypeScript sources (tests): a
 * TS worker would transpile every module again on each start, which takes seconds on a loaded
 * machine while a guest waits. `npm test` builds dist/ first. */
function workerEntry(name: string): { url: URL; options: { execArgv?: string[] } } {
  const dist = new URL(`../../dist/server/${name}.js`, import.meta.url)
  const compiled = import.meta.url.endsWith('.ts') && existsSync(dist)
  // A compiled worker also goes without this process's --import hooks: a TypeScript loader
  // inherited by each worker multiplies its start-up time by ~10 and adds ~90 MB to it.
  return { url: compiled ? dist : new URL(`./${name}.js`, import.meta.url), options: compiled ? { execArgv: [] } : {} }
}
const SESSION_WORKER = workerEntry('session-worker')
const ACCEPTOR = workerEntry('acceptor')

/** How often a server with workers getting ready in SCHED_IDLE looks for a waiting guest, and
 * how long such a worker may take before it is raised regardless. */
const IDLE_START_CHECK_MS = 50, IDLE_START_LIMIT_MS = 2000
/** A worker that failed to start is retried after this long, doubling up to the cap. */
const RESTART_BACKOFF_MS = 500, RESTART_BACKOFF_MAX_MS = 30000

interface WorkerEntry {
  worker: Worker
  slot: SessionSlot
  state: 'starting' | 'ready' | 'busy' | 'exiting'
  readyFd: number
  /** The guest handed to it (its descriptors are the worker's until its slot says released). */
  guest?: GuestHandoff
  session?: SessionRecord
  /** Last heartbeat seen, and since when faults have waited with it unchanged. */
  beat: number
  waitingSinceMs: number
  /** Set when the server ends it: why (told to the guest). */
  stopReason?: string
}

interface QueuedGuest { guest: GuestHandoff; deadlineMs: number }

function checkBound(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw new ServerError(`--${name}: expected ${min}..${max}, got ${value}`)
  return value
}

export class PageServer extends EventEmitter<PageServerEvents> {
  readonly socketPath: string
  /** Set for an s3:// snapshot: fetches and caches chunks for every session. */
  readonly store: ChunkStore | undefined
  private readonly snapshotPath: string
  /** The local snapshot's one descriptor (-1 for s3://), and what it is. */
  private readonly snapshotFd: number
  private readonly snapshotId: { dev: bigint; ino: bigint } | undefined
  /** The snapshot's geometry, for checking handshakes. */
  private readonly shape: { pageSize: number; pageCount: number }
  private snapshotNotice: 'removed' | 'replaced' | undefined
  private readonly policySpec: string
  private readonly workerData: Omit<SessionWorkerData, 'slot'>
  private readonly listenFd: number
  private readonly stopFd: number
  private readonly acceptorStopFd: number
  private readonly pendingCounter = new SharedArrayBuffer(4)
  private readonly warm: number
  private readonly idleStartLimitMs: number
  private readonly maxSessions: number
  private readonly maxPending: number
  private readonly handshakeTimeoutMs: number
  private readonly stallTimeoutMs: number
  private readonly singleGuest: boolean
  private acceptedCount = 0
  private readonly entries = new Map<Worker, WorkerEntry>()
  private readonly queue: QueuedGuest[] = []
  private queueTimer: NodeJS.Timeout | undefined
  private acceptor: Worker | undefined
  private acceptorExited: Promise<unknown> = Promise.resolve()
  private closing = false
  /** Set once start() has its warm workers: later worker failures are retried. */
  private started = false
  private startFailures = 0
  private lastStartFailure = ''
  private restartTimer: NodeJS.Timeout | undefined
  private stallTimer: NodeJS.Timeout | undefined
  readonly active = new Map<number, SessionRecord>()
  readonly ended: SessionRecord[] = []
  rejected = 0
  /** What start() had to say before anyone could listen to 'log' (warnings). */
  readonly startNotices: string[] = []
  /** Session workers started so far (a refused client must not cost one). */
  workersStarted = 0
  /** Workers getting ready in SCHED_IDLE: their thread(s), and since when. */
  private readonly idleStarts = new Map<Worker, { tids: number[]; sinceMs: number }>()
  private idleStartTimer: NodeJS.Timeout | undefined

  private constructor(opts: PageServerOptions, listenFd: number, store: ChunkStore | undefined, snapshot: SnapshotReader | undefined, snapshotFd: number, traceInputs: FileIdentity[]) {
    super()
    this.store = store
    this.socketPath = opts.socketPath
    this.snapshotPath = opts.snapshotPath
    this.snapshotFd = snapshotFd
    this.snapshotId = snapshot ? { dev: snapshot.dev, ino: snapshot.ino } : undefined
    const shape = snapshot ?? store!.snapshot.header
    this.shape = { pageSize: shape.pageSize, pageCount: shape.pageCount }
    this.policySpec = opts.policy ?? 'ondemand'
    this.listenFd = listenFd
    this.stopFd = uffd.createEventFd()
    this.acceptorStopFd = uffd.createEventFd()
    this.warm = opts.warmWorkers ?? 1
    this.idleStartLimitMs = opts.idleStartLimitMs ?? IDLE_START_LIMIT_MS
    this.maxSessions = opts.maxSessions ?? 256
    this.maxPending = opts.maxPendingHandshakes ?? 128
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 5000
    this.stallTimeoutMs = opts.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS
    this.singleGuest = opts.singleGuest ?? false
    this.workerData = {
      stopFd: this.stopFd,
      snapshotPath: opts.snapshotPath,
      snapshotFd,
      policy: this.policySpec,
      cwd: process.cwd(),
      tracePath: opts.tracePath,
      traceInputs,
      handshakeTimeoutMs: this.handshakeTimeoutMs,
      sessionCounter: new SharedArrayBuffer(4),
      remote: store?.workerData(),
    }
  }

  /** Checks the snapshot and policy, listens, starts the warm worker(s), then accepts. */
  static async start(opts: PageServerOptions): Promise<PageServer> {
    if (SESSION_WORKER.url.pathname.endsWith('.js')) assertBuildFresh()
    checkBound('warm-workers', opts.warmWorkers ?? 1, 1, MAX_WARM_WORKERS)
    checkBound('max-sessions', opts.maxSessions ?? 256, 1, MAX_SESSIONS)
    checkBound('max-pending-handshakes', opts.maxPendingHandshakes ?? 128, 1, MAX_PENDING_HANDSHAKES)
    if (!isS3Url(opts.snapshotPath)) return PageServer.startLocal(opts)
    const store = await ChunkStore.open(opts.snapshotPath, { ...remoteStoreDefaults(), ...opts.remote })
    try {
      return await PageServer.startWith(opts, store, undefined, -1)
    } catch (err) {
      await store.close()
      throw err
    }
  }

  /** A local snapshot: opened once here; every worker reads through this descriptor. */
  private static async startLocal(opts: PageServerOptions): Promise<PageServer> {
    let fd: number
    try {
      fd = openSync(opts.snapshotPath, constants.O_RDONLY | constants.O_NONBLOCK)
    } catch (err) {
      throw new ServerError(describeError(err).startsWith(opts.snapshotPath) ? describeError(err) : `${opts.snapshotPath}: ${describeError(err)}`)
    }
    let reader: SnapshotReader
    try {
      reader = SnapshotReader.fromDescriptor(fd, opts.snapshotPath)
    } catch (err) {
      closeSync(fd)
      throw err
    }
    return PageServer.startWith(opts, undefined, reader, fd)
  }

  /** Owns `snapshotFd` from here: closed on failure, or by close(). */
  private static async startWith(opts: PageServerOptions, store: ChunkStore | undefined, snapshot: SnapshotReader | undefined, snapshotFd: number): Promise<PageServer> {
    let listenFd: number, traceInputs: FileIdentity[]
    try {
      const shape = snapshot ?? store!.snapshot.header
      const policy = await createPolicy(opts.policy ?? 'ondemand', process.cwd(), shape)
      traceInputs = PageServer.traceInputs(opts, snapshot, policy)
      if (opts.tracePath) checkTracePath(opts.tracePath, traceInputs)
      if (existsSync(opts.socketPath)) {
        if (!lstatSync(opts.socketPath).isSocket()) throw new ServerError(`--socket ${opts.socketPath}: exists and is not a socket`)
        let live = false
        try { uffd.closeFd(uffd.connectUnix(opts.socketPath)); live = true } catch { /* stale */ }
        if (live) throw new ServerError(`--socket ${opts.socketPath}: another server is listening there`)
        unlinkSync(opts.socketPath)
      }
      // Others may connect only when other uids are allowed: SO_PEERCRED refuses the rest.
      const mode = opts.allowAnyUid || (opts.allowUids ?? []).length > 0 ? 0o666 : 0o600
      listenFd = uffd.listenUnix(opts.socketPath, 128, mode)
    } catch (err) {
      if (snapshotFd >= 0) closeSync(snapshotFd)
      throw err
    }
    const server = new PageServer(opts, listenFd, store, snapshot, snapshotFd, traceInputs)
    try {
      await server.fillPool(false)
      server.started = true
      await server.startAcceptor(opts)
    } catch (err) {
      await server.close()
      throw err instanceof FaultlineError ? err : new ServerError(describeError(err))
    }
    server.stallTimer = setInterval(() => server.checkProgress(), Math.max(10, Math.min(1000, server.stallTimeoutMs / 4)))
    server.stallTimer.unref()
    return server
  }

  /** What a session's trace must never overwrite: the snapshot, what the policy read, the
   * policy module, and what the caller names. */
  private static traceInputs(opts: PageServerOptions, snapshot: SnapshotReader | undefined, policy: FaultPolicy): FileIdentity[] {
    const out: FileIdentity[] = [...(opts.protectedFiles ?? [])]
    if (snapshot) out.push({ dev: snapshot.dev, ino: snapshot.ino, name: `the snapshot ${opts.snapshotPath}` })
    const module = policyModulePath(opts.policy ?? 'ondemand')
    const files = [...(policy.inputFiles ?? []).map(path => ({ path, name: `the policy's input ${path}` }))]
    if (module) files.push({ path: module, name: `the policy module ${module}` })
    return [...out, ...inputIdentities(files)]
  }

  /** Pending handshakes at most: --max-pending-handshakes, and no more than half the
   * descriptors still free (the rest are for the sessions), so that a flood of silent clients
   * cannot take the descriptors a guest's session needs. */
  private pendingBound(): number {
    const limit = openFileLimit()
    if (limit === undefined) return this.maxPending
    const free = Math.max(0, limit - openFileCount())
    const bound = Math.max(1, Math.min(this.maxPending, Math.floor(free / 2)))
    if (bound < this.maxPending) {
      this.startNotices.push(`descriptor limit ${limit} (${free} free): at most ${bound} handshakes pending at once instead of ${this.maxPending}`)
    }
    return bound
  }

  /** Resolves once the acceptor thread accepts. */
  private startAcceptor(opts: PageServerOptions): Promise<void> {
    const uid = process.getuid?.() ?? 0
    const acceptorData: AcceptorData = {
      listenFd: this.listenFd, stopFd: this.acceptorStopFd,
      pageSize: this.shape.pageSize, pageCount: this.shape.pageCount,
      allowUids: [uid, ...(opts.allowUids ?? [])], allowAnyUid: opts.allowAnyUid ?? false,
      handshakeTimeoutMs: this.handshakeTimeoutMs, maxPending: this.pendingBound(), pendingCounter: this.pendingCounter,
    }
    const acceptor = new Worker(ACCEPTOR.url, { ...ACCEPTOR.options, workerData: acceptorData })
    this.acceptor = acceptor
    this.acceptorExited = new Promise(r => acceptor.once('exit', r))
    let listening!: () => void
    let failure = 'exited'
    const ready = new Promise<void>((resolve, reject) => {
      listening = resolve
      acceptor.once('exit', () => reject(new ServerError(`acceptor thread failed to start: ${failure}`)))
    })
    acceptor.on('message', (m: AcceptorMessage) => {
      switch (m.type) {
        case 'listening': listening(); break
        case 'guest': this.onGuest(m); break
        case 'rejected': this.refused(m.pid, m.error); break
        case 'log': this.emit('log', m.line, 'warn'); break
        case 'fatal':
          failure = m.error
          this.emit('log', `acceptor failed: ${m.error}; no new guests are accepted`, 'warn')
          break
      }
    })
    acceptor.on('error', err => this.emit('log', `acceptor crashed: ${describeError(err)}; no new guests are accepted`, 'warn'))
    return ready
  }

  private refused(pid: number, error: string): void {
    this.rejected++
    this.emit('rejected', pid, error)
  }

  /** Refuses a guest the acceptor handed over, from this thread. */
  private refuseGuest(g: GuestHandoff, error: string): void {
    try { uffd.sendBytes(g.conn, Buffer.from(JSON.stringify({ ok: false, error }) + '\n')) } catch { /* gone */ }
    uffd.closeFd(g.uffd)
    uffd.closeFd(g.conn)
    this.refused(g.peer.pid, error)
  }

  /** The snapshot's path still names the file the server opened? A removed one is still
   * served (through the open descriptor); a replaced one is not: new guests are refused. */
  private snapshotReplaced(): string | undefined {
    if (this.snapshotId === undefined) return undefined
    let now: { dev: bigint; ino: bigint } | undefined
    try { now = statSync(this.snapshotPath, { bigint: true }) } catch { now = undefined }
    if (now === undefined) {
      if (this.snapshotNotice === undefined) {
        this.snapshotNotice = 'removed'
        this.emit('log', `snapshot ${this.snapshotPath} was removed; serving on from the descriptor opened at start`)
      }
      return undefined
    }
    if (now.dev === this.snapshotId.dev && now.ino === this.snapshotId.ino) return undefined
    const why = `snapshot ${this.snapshotPath} was replaced since the server started (another file is at that path now); ` +
      'refusing new guests: restart the server to serve the new file'
    if (this.snapshotNotice !== 'replaced') {
      this.snapshotNotice = 'replaced'
      this.emit('log', why, 'warn')
    }
    return why
  }

  private onGuest(g: GuestHandoff): void {
    if (this.closing) { this.refuseGuest(g, 'server stopping'); return }
    const replaced = this.snapshotReplaced()
    if (replaced !== undefined) { this.refuseGuest(g, replaced); return }
    if (this.queue.length >= this.maxPending) {
      this.refuseGuest(g, `server busy: ${this.queue.length} guests already wait for a session slot (--max-sessions ${this.maxSessions})`)
      return
    }
    this.queue.push({ guest: g, deadlineMs: Date.now() + this.handshakeTimeoutMs })
    this.dispatch()
  }

  private get busyCount(): number {
    let n = 0
    for (const e of this.entries.values()) if (e.state === 'busy') n++
    return n
  }

  private countState(state: WorkerEntry['state']): number {
    let n = 0
    for (const e of this.entries.values()) if (e.state === state) n++
    return n
  }

  /** Hands waiting guests to ready workers, within --max-sessions; starts workers for the
   * rest; refuses those that waited past their deadline. */
  private dispatch(): void {
    const now = Date.now()
    while (this.queue.length > 0 && this.queue[0].deadlineMs <= now) {
      const { guest } = this.queue.shift()!
      const why = this.busyCount >= this.maxSessions
        ? `server busy: ${this.maxSessions} session(s) served at once (--max-sessions) for ${this.handshakeTimeoutMs} ms`
        : `no session worker got ready within ${this.handshakeTimeoutMs} ms${this.lastStartFailure ? ` (last failure: ${this.lastStartFailure})` : ''}`
      this.refuseGuest(guest, why)
    }
    while (this.queue.length > 0 && this.busyCount < this.maxSessions) {
      const ready = [...this.entries.values()].find(e => e.state === 'ready')
      if (ready === undefined) break
      const { guest } = this.queue.shift()!
      ready.state = 'busy'
      ready.guest = guest
      ready.beat = ready.slot.heartbeat
      ready.waitingSinceMs = 0
      this.acceptedCount++
      ready.worker.postMessage(guest satisfies ToSessionWorker)
    }
    void this.fillPool().catch(() => { /* logged by the worker's handlers */ })
    this.trimPool()
    clearTimeout(this.queueTimer)
    this.queueTimer = undefined
    if (this.queue.length > 0) {
      this.queueTimer = setTimeout(() => this.dispatch(), Math.max(1, this.queue[0].deadlineMs - Date.now()))
    }
  }

  /** Starts workers until `warm` (or as many as guests wait for, within --max-sessions) are
   * ready or getting ready. Replacements (`startIdle`) get ready in SCHED_IDLE, so their
   * start-up does not compete with the guests being served. */
  private fillPool(startIdle = true): Promise<void> {
    const starts: Promise<void>[] = []
    if (this.restartTimer !== undefined) return Promise.resolve()
    const waitingGuests = Math.min(this.queue.length, Math.max(0, this.maxSessions - this.busyCount))
    const target = Math.max(this.warm, waitingGuests)
    // A worker still checking the guest it was handed counts as ready: if it refuses the guest
    // it is ready again, so a refused client costs no worker start. Its replacement starts once
    // its session does.
    const admitting = [...this.entries.values()].filter(e => e.state === 'busy' && e.session === undefined).length
    while (!this.closing && this.countState('ready') + this.countState('starting') + admitting < target &&
      this.entries.size < this.maxSessions + this.warm && !(this.singleGuest && this.acceptedCount > 0)) {
      starts.push(this.spawn(startIdle))
    }
    return Promise.all(starts).then(() => undefined)
  }

  /** Idle workers beyond `warm` (left by guests refused after the hand-off) are released. */
  private trimPool(): void {
    if (this.queue.length > 0) return
    let extra = this.countState('ready') - this.warm
    for (const e of this.entries.values()) {
      if (extra <= 0) break
      if (e.state !== 'ready') continue
      e.state = 'exiting'
      e.worker.postMessage({ type: 'exit' } satisfies ToSessionWorker)
      extra--
    }
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
      const guestWaiting = this.queue.length > 0 && this.countState('ready') === 0
      const now = Date.now()
      for (const [worker, start] of this.idleStarts) {
        if (!guestWaiting && now - start.sinceMs < this.idleStartLimitMs) continue
        this.idleStarts.delete(worker)
        for (const tid of start.tids) {
          try { uffd.setThreadIdle(tid, false) } catch { /* it ended, or raised itself */ }
        }
      }
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
      try { uffd.setThreadIdle(tid, false) } catch { /* exited meanwhile */ }
    }
  }

  private spawn(startIdle: boolean): Promise<void> {
    // Remote snapshots: the store signals this eventfd when a chunk the worker asked for is in.
    let readyFd = this.store !== undefined ? uffd.createEventFd() : -1
    // A new thread inherits its creator's scheduling class: created while this thread is in
    // SCHED_IDLE, the worker is idle-class from its first instruction (Node's own start-up of
    // a worker is most of its cost). It raises itself once ready; this thread now.
    const idle = startIdle && uffd.canLowerThreadPriority()
    const slotBuffer = createSlot()
    const workerData: SessionWorkerData = { ...this.workerData, slot: slotBuffer, startIdle: idle }
    if (readyFd >= 0) workerData.readyFd = readyFd
    const tidsBefore = idle ? uffd.threadIds() : []
    if (idle) uffd.setThreadIdle(0, true)
    let worker: Worker
    try {
      worker = new Worker(SESSION_WORKER.url, { ...SESSION_WORKER.options, workerData })
    } catch (err) {
      uffd.closeFd(readyFd)
      return Promise.reject(this.startFailed(describeError(err)))
    } finally {
      if (idle) uffd.setThreadIdle(0, false)
    }
    this.workersStarted++
    if (idle) {
      const tids = uffd.threadIds().filter(t => !tidsBefore.includes(t))
      if (tids.length > 0) {
        this.idleStarts.set(worker, { tids, sinceMs: Date.now() })
        this.watchIdleStarts()
      }
    }
    const entry: WorkerEntry = { worker, slot: new SessionSlot(slotBuffer), state: 'starting', readyFd, beat: 0, waitingSinceMs: 0 }
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
            this.dispatch()
            break
          case 'log': this.emit('log', m.line, /: cannot serve |lacks|refused/.test(m.line) ? 'warn' : 'info'); break
          case 'fetch': if (readyFd >= 0) this.store!.request(m.chunks, m.priority, readyFd); break
          case 'invalid': this.store?.invalidate(m.chunk); break
          case 'rejected': this.refused(m.pid, m.error); break
          case 'session': {
            const rec: SessionRecord = { id: m.id, pid: m.pid, form: m.form, bytes: m.bytes }
            entry.session = rec
            this.active.set(m.id, rec)
            this.emit('session', rec)
            this.dispatch()
            break
          }
          case 'ended': {
            const rec = this.active.get(m.id) ?? { id: m.id, pid: m.pid, form: '?', bytes: 0 }
            entry.session = undefined
            entry.guest = undefined
            rec.retainedBytes = m.retainedBytes
            this.endSession(rec, m.stats, m.error)
            break
          }
          case 'fatal':
            failure = m.error
            break
        }
      })
      worker.on('error', err => { failure = describeError(err) })
      worker.on('exit', () => {
        this.entries.delete(worker)
        this.idleStarts.delete(worker)
        if (readyFd >= 0) {
          this.store!.detach(readyFd)
          uffd.closeFd(readyFd)
          readyFd = -1
        }
        this.releaseLeftovers(entry, failure)
        if (entry.state === 'starting') {
          reject(this.startFailed(failure ?? 'session worker exited while starting'))
        } else {
          if (failure !== undefined) this.emit('log', `session worker failed: ${failure}`, 'warn')
          resolve()
        }
        if (!this.closing) this.dispatch()
      })
    })
  }

  /** A worker could not get ready: say so once, and retry later (doubling the wait). */
  private startFailed(message: string): ServerError {
    this.startFailures++
    this.lastStartFailure = message
    // While the server starts, the failure is its caller's to report (nothing is retried).
    if (this.started && !this.closing && this.restartTimer === undefined) {
      const delay = Math.min(RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_MS * 2 ** (this.startFailures - 1))
      this.emit('log', `session worker failed to start: ${message} (retrying in ${delay} ms)`, 'warn')
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined
        this.dispatch()
      }, delay)
      this.restartTimer.unref()
    }
    return new ServerError(message)
  }

  /** A worker that is gone closes nothing more: what its slot says it still held is closed
   * here (after telling the guest why), and a session it did not report ended is ended. */
  private releaseLeftovers(entry: WorkerEntry, failure: string | undefined): void {
    const left = entry.slot.leftOpen()
    const why = entry.stopReason ?? (failure !== undefined ? `session worker failed: ${failure}` : 'session worker exited')
    if (left !== undefined) {
      if (left.conn >= 0) {
        try { uffd.sendBytes(left.conn, Buffer.from(JSON.stringify({ ok: false, error: why }) + '\n')) } catch { /* gone */ }
      }
      for (const fd of [left.trace, left.uffd, left.conn]) uffd.closeFd(fd)
    }
    if (entry.session !== undefined) {
      this.endSession(entry.session, undefined, why)
    } else if (entry.guest !== undefined && left !== undefined) {
      this.refused(entry.guest.peer.pid, why)
    }
  }

  private endSession(rec: SessionRecord, stats: SessionStats | undefined, error: string | undefined): void {
    rec.stats = stats
    rec.error = error
    this.active.delete(rec.id)
    this.ended.push(rec)
    this.emit('ended', rec)
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
      if (beat === 0 || beat !== e.beat || beat % 2 === 1) { e.beat = beat; e.waitingSinceMs = now; continue }
      if (e.waitingSinceMs === 0) { e.waitingSinceMs = now; continue }
      const stuckMs = now - e.waitingSinceMs
      if (stuckMs < this.stallTimeoutMs) continue
      const s = e.session
      e.stopReason = `session stalled: no progress for ${stuckMs} ms with faults waiting (policy ${this.policySpec}: a call into it has not returned); ` +
        'the server ended it'
      this.emit('log', `session ${s?.id ?? '?'} (pid ${s?.pid ?? e.guest?.peer.pid ?? '?'}): ${e.stopReason}`, 'warn')
      void e.worker.terminate()
    }
  }

  /** Session workers alive: the warm ones and one per guest being served. */
  get workerCount(): number { return this.entries.size }

  /** Resolves when no guest is being served or waits for an answer. */
  async idle(): Promise<void> {
    const pending = new Int32Array(this.pendingCounter)
    const busy = () => this.active.size > 0 || Atomics.load(pending, 0) > 0 || this.queue.length > 0 ||
      [...this.entries.values()].some(e => e.state === 'busy' && e.session === undefined)
    while (busy()) await new Promise(r => setTimeout(r, 20))
  }

  /** Ends every session now (their guests see the socket close and stop). */
  stopSessions(): void {
    uffd.signalEventFd(this.stopFd)
  }

  private stopTimers(): void {
    for (const t of [this.idleStartTimer, this.stallTimer]) clearInterval(t)
    for (const t of [this.queueTimer, this.restartTimer]) clearTimeout(t)
    this.idleStartTimer = this.stallTimer = this.queueTimer = this.restartTimer = undefined
  }

  /** Stops accepting, refuses guests still waiting, releases idle workers. */
  private async stopAccepting(): Promise<void> {
    try { unlinkSync(this.socketPath) } catch { /* gone */ }
    if (this.acceptor !== undefined) {
      this.acceptor = undefined
      uffd.signalEventFd(this.acceptorStopFd)
      await this.acceptorExited
    }
    uffd.closeFd(this.listenFd)
    for (const { guest } of this.queue.splice(0)) this.refuseGuest(guest, 'server stopping')
    for (const e of this.entries.values()) {
      if (e.state === 'ready' || e.state === 'starting') {
        e.state = 'exiting'
        e.worker.postMessage({ type: 'exit' } satisfies ToSessionWorker)
      }
    }
  }

  private closed: Promise<void> | undefined

  /** Stops accepting; with `drain`, waits for the guests being served to finish first. */
  close(opts: { drain?: boolean } = {}): Promise<void> {
    this.closed ??= this.shutdown(opts.drain === true, Infinity)
    return this.closed
  }

  /** Stops everything now: sessions are told to end, and workers still running after
   * `graceMs` (a session stuck in a policy) are terminated. */
  stopNow(graceMs = 1000): Promise<void> {
    this.closing = true
    this.stopSessions()
    const done = this.close()
    const timer = setTimeout(() => { for (const e of this.entries.values()) void e.worker.terminate() }, graceMs)
    return done.finally(() => clearTimeout(timer))
  }

  private async shutdown(drain: boolean, _graceMs: number): Promise<void> {
    this.closing = true
    this.stopTimers()
    await this.stopAccepting()
    if (drain) await this.idle()
    uffd.signalEventFd(this.stopFd)
    await Promise.all([...this.entries.keys()].map(w => new Promise(r => w.once('exit', r))))
    uffd.closeFd(this.stopFd)
    uffd.closeFd(this.acceptorStopFd)
    if (this.snapshotFd >= 0) closeSync(this.snapshotFd)
    await this.store?.close()
  }
}
