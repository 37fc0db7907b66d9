// PageServer: owns the listening socket, one acceptor thread that reads and checks each guest's
// first message (a pending handshake costs a descriptor, not a worker), and a pool of session
// workers (session-pool.ts), one guest each, some kept warm so a guest never waits for a worker
// to start. It hands checked guests to warm workers within --max-sessions (the rest wait, up to
// the handshake deadline), and keeps one descriptor of the snapshot open for its lifetime.
// Its options are checked in server-options.ts, its decoded cache is server-cache.ts'.
import { EventEmitter } from 'node:events'
import { closeSync, constants, openSync, statSync, unlinkSync } from 'node:fs'
import { describeError, FaultlineError } from '../errors.js'
import { createPolicy } from '../policy/registry.js'
import { SnapshotReader } from '../snapshot/reader.js'
import { checkTracePath } from '../trace/recorder.js'
import { ChunkStore, remoteStoreDefaults } from '../store/chunk-store.js'
import { isS3Url } from '../store/s3-config.js'
import * as uffd from '../uffd/index.js'
import type { FileIdentity } from '../util/output-file.js'
import type { SessionStats } from './session.js'
import type { DecodedCache, CacheCounts } from '../cache/decoded-cache.js'
import type { FillPool, FillPoolStats } from '../cache/fill-pool.js'
import { learnedSetPath, recordLearnedSession, type SnapshotIdentity } from '../trace/learned-set.js'
import { SessionPool, type LogLevel, type SessionRecord } from './session-pool.js'
import type { GuestHandoff } from './worker-protocol.js'
import { AcceptorThread, pendingBound } from './acceptor-thread.js'
import { closeCache, formatCacheBound, startCache, STRAY_CHECK_MS, type CacheParts } from './server-cache.js'
import {
  checkOptions,
  DEFAULT_STALL_TIMEOUT_MS,
  policyFor,
  prepareSocketPath,
  ServerError,
  snapshotIdentity,
  traceInputs,
  type PageServerOptions,
} from './server-options.js'

export { MAX_PENDING_HANDSHAKES, MAX_SESSIONS, MAX_WARM_WORKERS, ServerError, type PageServerOptions } from './server-options.js'
export type { LogLevel, SessionRecord }

export interface PageServerEvents {
  /** A line for the operator; `level` is 'warn' for what went wrong (default 'info'). */
  log: [line: string, level?: LogLevel]
  session: [record: SessionRecord]
  rejected: [pid: number, error: string]
  ended: [record: SessionRecord]
}

/** A replacement worker getting ready in SCHED_IDLE is raised after this long regardless. */
const IDLE_START_LIMIT_MS = 2000

interface QueuedGuest {
  guest: GuestHandoff
  deadlineMs: number
}

/** How long start() waits for the fill workers to load before serving without them. */
const FILL_WORKERS_READY_MS = 10_000

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
  private readonly listenFd: number
  private readonly stopFd: number
  private readonly acceptorStopFd: number
  private readonly pendingCounter = new SharedArrayBuffer(4)
  private readonly maxSessions: number
  private readonly maxPending: number
  private readonly handshakeTimeoutMs: number
  private readonly pool: SessionPool
  private readonly queue: QueuedGuest[] = []
  private queueTimer: NodeJS.Timeout | undefined
  private acceptor: AcceptorThread | undefined
  private acceptorExited: Promise<unknown> = Promise.resolve()
  private closing = false
  private closed: Promise<void> | undefined
  readonly active = new Map<number, SessionRecord>()
  readonly ended: SessionRecord[] = []
  rejected = 0
  /** What start() had to say before anyone could listen to 'log' (warnings). */
  readonly startNotices: string[] = []
  /** The snapshot's decoded cache and its fill workers (local snapshots, unless
   * --cache-memory 0). */
  private readonly cache: DecodedCache | undefined
  private readonly fills: FillPool | undefined
  private strayTimer: NodeJS.Timeout | undefined
  /** The policy the sessions run (a learned set's, with --learn and no --policy). */
  readonly policySpec: string
  private readonly learnDir: string | undefined
  private readonly identity: SnapshotIdentity

  private constructor(
    opts: PageServerOptions,
    listenFd: number,
    store: ChunkStore | undefined,
    snapshot: SnapshotReader | undefined,
    snapshotFd: number,
    traceInputs: FileIdentity[],
    policySpec: string,
    cacheParts: CacheParts | undefined,
  ) {
    super()
    this.cache = cacheParts?.cache
    this.fills = cacheParts?.fills
    this.policySpec = policySpec
    this.learnDir = opts.learnDir
    this.identity = snapshotIdentity(snapshot, store)
    this.store = store
    this.socketPath = opts.socketPath
    this.snapshotPath = opts.snapshotPath
    this.snapshotFd = snapshotFd
    this.snapshotId = snapshot ? { dev: snapshot.dev, ino: snapshot.ino } : undefined
    const shape = snapshot ?? store!.snapshot.header
    this.shape = { pageSize: shape.pageSize, pageCount: shape.pageCount }
    this.listenFd = listenFd
    this.stopFd = uffd.createEventFd()
    this.acceptorStopFd = uffd.createEventFd()
    this.maxSessions = opts.maxSessions ?? 256
    this.maxPending = opts.maxPendingHandshakes ?? 128
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 5000
    this.pool = new SessionPool(
      {
        log: (line, level) => this.emit('log', line, level),
        refused: (pid, error) => this.refused(pid, error),
        sessionStarted: rec => {
          this.active.set(rec.id, rec)
          this.emit('session', rec)
        },
        sessionEnded: (rec, stats, error) => this.endSession(rec, stats, error),
        changed: () => {
          if (!this.closing) this.dispatch()
        },
        waitingGuests: () => this.queue.length,
      },
      {
        workerData: {
          stopFd: this.stopFd,
          snapshotPath: opts.snapshotPath,
          snapshotFd,
          policy: policySpec,
          cwd: process.cwd(),
          tracePath: opts.tracePath,
          traceInputs,
          handshakeTimeoutMs: this.handshakeTimeoutMs,
          sessionCounter: new SharedArrayBuffer(4),
          remote: store?.workerData(),
          cache: this.cache?.info,
          fills: this.fills?.sessionData(),
          learn: opts.learnDir !== undefined,
          onUnservable: opts.onUnservable ?? 'kill',
        },
        warm: opts.warmWorkers ?? 1,
        maxSessions: this.maxSessions,
        singleGuest: opts.singleGuest ?? false,
        idleStartLimitMs: opts.idleStartLimitMs ?? IDLE_START_LIMIT_MS,
        stallTimeoutMs: opts.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS,
        policySpec,
        store,
      },
    )
  }

  /** Checks the snapshot and policy, listens, starts the warm worker(s), then accepts. */
  static async start(opts: PageServerOptions): Promise<PageServer> {
    checkOptions(opts)
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
  private static async startWith(
    opts: PageServerOptions,
    store: ChunkStore | undefined,
    snapshot: SnapshotReader | undefined,
    snapshotFd: number,
  ): Promise<PageServer> {
    let listenFd: number, protectedInputs: FileIdentity[], policySpec: string
    let cacheParts: CacheParts | undefined
    try {
      const shape = snapshot ?? store!.snapshot.header
      policySpec = policyFor(opts, snapshotIdentity(snapshot, store))
      const policy = await createPolicy(policySpec, process.cwd(), shape)
      protectedInputs = traceInputs(opts, snapshot, policy)
      if (opts.tracePath) checkTracePath(opts.tracePath, protectedInputs)
      const mode = prepareSocketPath(opts)
      if (opts.cacheMemoryBytes !== 0) cacheParts = startCache(opts, snapshot, snapshotFd, store)
      listenFd = uffd.listenUnix(opts.socketPath, 128, mode)
    } catch (err) {
      await closeCache(cacheParts)
      if (snapshotFd >= 0) closeSync(snapshotFd)
      throw err
    }
    const server = new PageServer(opts, listenFd, store, snapshot, snapshotFd, protectedInputs, policySpec, cacheParts)
    if (cacheParts !== undefined) {
      cacheParts.log = (line, level) => server.emit('log', line, level)
      server.startNotices.push(
        `decoded cache: ${cacheParts.cache.info.why}; ${formatCacheBound(cacheParts.cache)}; ${cacheParts.fills.workerCount} fill worker(s)`,
      )
      server.strayTimer = setInterval(() => server.removeStrays(), STRAY_CHECK_MS)
      server.strayTimer.unref()
    }
    if (policySpec !== (opts.policy ?? 'ondemand'))
      server.startNotices.push(`--learn ${opts.learnDir}: prefetching the set learned for this snapshot (policy ${policySpec})`)
    try {
      await server.pool.fill(false)
      // Fill workers boot after the warm session workers (threads loading modules at once hold
      // many descriptors: beside them a server under nofile 100 ran out) and are waited for:
      // started with the first cache-mapped guest they came 100-300 ms late, and a short guest
      // had every fault served privately before the first fill.
      cacheParts?.fills.startWorkers()
      await cacheParts?.fills.whenReady(FILL_WORKERS_READY_MS)
      server.pool.markStarted()
      await server.startAcceptor(opts)
    } catch (err) {
      await server.close()
      throw err instanceof FaultlineError ? err : new ServerError(describeError(err))
    }
    return server
  }

  /** How the decoded cache is, for the log and the benchmarks (undefined without one). */
  get cacheDescription(): string | undefined {
    return this.cache?.info.why
  }

  cacheCounts(): CacheCounts | undefined {
    return this.cache?.counts()
  }

  /** Folios of the cache that something other than this server put there (a process mapping the
   * cache outside a registered region reads a hole as a zero folio of the file): punched out, so
   * guests fault and get the snapshot's pages again. */
  private removeStrays(): void {
    const removed = this.cache?.removeStrayFolios() ?? 0
    if (removed > 0) {
      this.emit(
        'log',
        `decoded cache: ${removed} folio(s) were put in the cache by a process the server does not serve ` +
          '(mapping the cache outside a registered region); punched out',
        'warn',
      )
    }
  }

  /** Resolves once the acceptor thread accepts. */
  private startAcceptor(opts: PageServerOptions): Promise<void> {
    const uid = process.getuid?.() ?? 0
    this.acceptor = new AcceptorThread(
      {
        listenFd: this.listenFd,
        stopFd: this.acceptorStopFd,
        pageSize: this.shape.pageSize,
        pageCount: this.shape.pageCount,
        allowUids: [uid, ...(opts.allowUids ?? [])],
        allowAnyUid: opts.allowAnyUid ?? false,
        handshakeTimeoutMs: this.handshakeTimeoutMs,
        maxPending: pendingBound(this.maxPending, this.startNotices),
        pendingCounter: this.pendingCounter,
        needPidfd: (opts.onUnservable ?? 'kill') === 'kill',
      },
      {
        guest: g => this.onGuest(g),
        rejected: (pid, error) => this.refused(pid, error),
        log: line => this.emit('log', line, 'warn'),
      },
    )
    this.acceptorExited = this.acceptor.exited
    return this.acceptor.ready
  }

  private refused(pid: number, error: string): void {
    this.rejected++
    this.emit('rejected', pid, error)
  }

  /** Refuses a guest the acceptor handed over, from this thread. */
  private refuseGuest(g: GuestHandoff, error: string): void {
    try {
      uffd.sendBytes(g.conn, Buffer.from(JSON.stringify({ ok: false, error }) + '\n'))
    } catch {
      /* gone */
    }
    uffd.closeFd(g.uffd)
    uffd.closeFd(g.conn)
    uffd.closeFd(g.pidfd)
    this.refused(g.peer.pid, error)
  }

  private endSession(rec: SessionRecord, stats: SessionStats | undefined, error: string | undefined): void {
    rec.stats = stats
    rec.error = error
    if (this.learnDir !== undefined && stats?.usedPages !== undefined && stats.usedPages.length > 0) {
      try {
        const set = recordLearnedSession(this.learnDir, this.identity, stats.usedPages)
        this.emit(
          'log',
          `session ${rec.id}: learned ${stats.usedPages.length} pages for this snapshot (${set.sessions.length} session(s) kept in ${learnedSetPath(this.learnDir, this.identity)})`,
        )
      } catch (err) {
        this.emit('log', `session ${rec.id}: could not keep its learned pages: ${describeError(err)}`, 'warn')
      }
    }
    this.active.delete(rec.id)
    this.ended.push(rec)
    this.emit('ended', rec)
  }

  /** The snapshot's path still names the file the server opened? A removed one is still
   * served (through the open descriptor); a replaced one is not: new guests are refused. */
  private snapshotReplaced(): string | undefined {
    if (this.snapshotId === undefined) return undefined
    let now: { dev: bigint; ino: bigint } | undefined
    try {
      now = statSync(this.snapshotPath, { bigint: true })
    } catch {
      now = undefined
    }
    if (now === undefined) {
      if (this.snapshotNotice === undefined) {
        this.snapshotNotice = 'removed'
        this.emit('log', `snapshot ${this.snapshotPath} was removed; serving on from the descriptor opened at start`)
      }
      return undefined
    }
    if (now.dev === this.snapshotId.dev && now.ino === this.snapshotId.ino) return undefined
    const why =
      `snapshot ${this.snapshotPath} was replaced since the server started (another file is at that path now); ` +
      'refusing new guests: restart the server to serve the new file'
    if (this.snapshotNotice !== 'replaced') {
      this.snapshotNotice = 'replaced'
      this.emit('log', why, 'warn')
    }
    return why
  }

  private onGuest(g: GuestHandoff): void {
    if (this.closing) {
      this.refuseGuest(g, 'server stopping')
      return
    }
    const replaced = this.snapshotReplaced()
    if (replaced !== undefined) {
      this.refuseGuest(g, replaced)
      return
    }
    if (this.queue.length >= this.maxPending) {
      this.refuseGuest(g, `server busy: ${this.queue.length} guests already wait for a session slot (--max-sessions ${this.maxSessions})`)
      return
    }
    this.queue.push({ guest: g, deadlineMs: Date.now() + this.handshakeTimeoutMs })
    this.dispatch()
  }

  /** Hands waiting guests to ready workers, within --max-sessions; starts workers for the
   * rest; refuses those that waited past their deadline. */
  private dispatch(): void {
    const now = Date.now()
    while (this.queue.length > 0 && this.queue[0].deadlineMs <= now) {
      const { guest } = this.queue.shift()!
      const why =
        this.pool.busyCount >= this.maxSessions
          ? `server busy: ${this.maxSessions} session(s) served at once (--max-sessions) for ${this.handshakeTimeoutMs} ms`
          : `no session worker got ready within ${this.handshakeTimeoutMs} ms${this.pool.lastStartFailure ? ` (last failure: ${this.pool.lastStartFailure})` : ''}`
      this.refuseGuest(guest, why)
    }
    while (this.queue.length > 0 && this.pool.give(this.queue[0].guest)) this.queue.shift()
    void this.pool.fill().catch(() => {
      /* logged by the pool */
    })
    this.pool.trim()
    clearTimeout(this.queueTimer)
    this.queueTimer = undefined
    if (this.queue.length > 0) {
      this.queueTimer = setTimeout(() => this.dispatch(), Math.max(1, this.queue[0].deadlineMs - Date.now()))
    }
  }

  /** Session workers alive: the warm ones and one per guest being served. */
  get workerCount(): number {
    return this.pool.size
  }

  /** Session workers started so far (a refused client must not cost one). */
  get workersStarted(): number {
    return this.pool.workersStarted
  }

  /** Connections whose first message the acceptor still awaits. */
  pendingHandshakes(): number {
    return Atomics.load(new Int32Array(this.pendingCounter), 0)
  }

  /** The fill workers' totals (undefined without a decoded cache). */
  fillTotals(): FillPoolStats | undefined {
    return this.fills?.totals()
  }

  /** Resolves when no guest is being served or waits for an answer. */
  async idle(): Promise<void> {
    const pending = new Int32Array(this.pendingCounter)
    const busy = () => this.active.size > 0 || Atomics.load(pending, 0) > 0 || this.queue.length > 0 || this.pool.admittingCount > 0
    while (busy()) await new Promise(r => setTimeout(r, 20))
  }

  /** Ends every session now (their guests see the socket close and stop). */
  stopSessions(): void {
    uffd.signalEventFd(this.stopFd)
  }

  /** Stops accepting; with `drain`, waits for the guests being served to finish first. */
  close(opts: { drain?: boolean } = {}): Promise<void> {
    this.closed ??= this.shutdown(opts.drain === true)
    return this.closed
  }

  /** Stops everything now: sessions are told to end, and workers still running after
   * `graceMs` (a session stuck in a policy) are terminated. */
  stopNow(graceMs = 1000): Promise<void> {
    this.closing = true
    this.stopSessions()
    const done = this.close()
    const timer = setTimeout(() => this.pool.terminateAll(), graceMs)
    return done.finally(() => clearTimeout(timer))
  }

  private async shutdown(drain: boolean): Promise<void> {
    this.closing = true
    clearTimeout(this.queueTimer)
    // Stop accepting, refuse the guests still waiting, release idle workers.
    try {
      unlinkSync(this.socketPath)
    } catch {
      /* gone */
    }
    if (this.acceptor !== undefined) {
      this.acceptor = undefined
      uffd.signalEventFd(this.acceptorStopFd)
      await this.acceptorExited
    }
    uffd.closeFd(this.listenFd)
    for (const { guest } of this.queue.splice(0)) this.refuseGuest(guest, 'server stopping')
    this.pool.close()
    if (drain) await this.idle()
    uffd.signalEventFd(this.stopFd)
    await this.pool.exited()
    clearInterval(this.strayTimer)
    await closeCache(this.cache && this.fills ? { cache: this.cache, fills: this.fills } : undefined)
    uffd.closeFd(this.stopFd)
    uffd.closeFd(this.acceptorStopFd)
    if (this.snapshotFd >= 0) closeSync(this.snapshotFd)
    await this.store?.close()
  }
}
