// PageServer: owns the listening socket and a pool of session workers, one guest each, with
// one kept warm (snapshot open, policy loaded) so a connecting guest never waits for a
// worker to start.
import { EventEmitter } from 'node:events'
import { existsSync, lstatSync, unlinkSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { FaultlineError } from '../errors.js'
import { createPolicy } from '../policy/registry.js'
import { SnapshotReader } from '../snapshot/reader.js'
import { checkTracePath } from '../trace/recorder.js'
import { ChunkStore, remoteStoreDefaults, type ChunkStoreOptions } from '../store/chunk-store.js'
import { isS3Url } from '../store/s3-config.js'
import * as uffd from '../uffd/index.js'
import { assertBuildFresh } from '../util/build-freshness.js'
import type { SessionStats } from './session.js'
import type { SessionWorkerData, WorkerMessage } from './worker-protocol.js'

export interface PageServerOptions {
  socketPath: string
  snapshotPath: string
  /** `--policy` spec; default ondemand. */
  policy?: string
  tracePath?: string
  /** Peer uids allowed besides our own. */
  allowUids?: number[]
  allowAnyUid?: boolean
  /** Workers kept waiting for the next guest. */
  warmWorkers?: number
  /** A replacement worker getting ready in SCHED_IDLE is raised after this long even when no
   * guest waits for it (default 2000 ms). */
  idleStartLimitMs?: number
  maxSessions?: number
  /** Serve one guest: no worker starts after the first one accepts, so nothing but that
   * guest's session runs in the process (benchmarks measure the server's own cost). */
  singleGuest?: boolean
  handshakeTimeoutMs?: number
  /** For an s3:// snapshot: its chunk cache and how to reach the store (--cache-dir,
   * --cache-size, --endpoint); defaults from remoteStoreDefaults(). */
  remote?: Partial<ChunkStoreOptions>
}

export interface SessionRecord {
  id: number
  pid: number
  form: string
  bytes: number
  stats?: SessionStats
  error?: string
}

export interface PageServerEvents {
  log: [line: string]
  session: [record: SessionRecord]
  rejected: [pid: number, error: string]
  ended: [record: SessionRecord]
}

export class ServerError extends FaultlineError {
  override readonly code: string = 'FL_ERR_SERVER'
}

/** The worker runs compiled JS even when the server itself runs from TypeScript sources
 * (tests): a TS worker would transpile every module again on each start, which takes
 * seconds on a loaded machine while a guest waits. `npm test` builds dist/ first. */
const distWorker = new URL('../../dist/server/session-worker.js', import.meta.url)
const workerIsCompiled = import.meta.url.endsWith('.ts') && existsSync(distWorker)
const workerUrl = workerIsCompiled ? distWorker : new URL('./session-worker.js', import.meta.url)
/** A compiled worker also goes without this process's --import hooks: a TypeScript loader
 * inherited by each worker multiplies its start-up time by ~10 and adds ~90 MB to it. */
const workerOptions = workerIsCompiled ? { execArgv: [] } : {}
/** How often a server with workers getting ready in SCHED_IDLE looks for a waiting guest, and
 * how long such a worker may take before it is raised regardless. */
const IDLE_START_CHECK_MS = 50, IDLE_START_LIMIT_MS = 2000

export class PageServer extends EventEmitter<PageServerEvents> {
  readonly socketPath: string
  /** Set for an s3:// snapshot: fetches and caches chunks for every session. */
  readonly store: ChunkStore | undefined
  private readonly workerData: SessionWorkerData
  private readonly listenFd: number
  private readonly stopFd: number
  private readonly stopAcceptFd: number
  private readonly warm: number
  private readonly idleStartLimitMs: number
  private readonly maxSessions: number
  private readonly singleGuest: boolean
  private acceptedCount = 0
  private readonly workers = new Set<Worker>()
  private readonly waitingWorkers = new Set<Worker>()
  private waiting = 0
  private closing = false
  readonly active = new Map<number, SessionRecord>()
  readonly ended: SessionRecord[] = []
  rejected = 0
  /** Guests accepted whose handshake has not been answered yet. */
  private handshaking = 0
  /** Workers getting ready in SCHED_IDLE: their thread(s), and since when. */
  private readonly idleStarts = new Map<Worker, { tids: number[]; sinceMs: number }>()
  private idleStartTimer: NodeJS.Timeout | undefined
  /** The listening socket alone, to see whether a guest waits for a worker. */
  private readonly listenPoll = new uffd.PollSet(1)

  private constructor(opts: PageServerOptions, listenFd: number, store: ChunkStore | undefined) {
    super()
    this.store = store
    const stopFd = uffd.createEventFd()
    const stopAcceptFd = uffd.createEventFd()
    this.stopAcceptFd = stopAcceptFd
    this.socketPath = opts.socketPath
    this.listenFd = listenFd
    this.listenPoll.set(0, listenFd, uffd.POLLIN)
    this.stopFd = stopFd
    this.warm = Math.max(1, opts.warmWorkers ?? 1)
    this.idleStartLimitMs = opts.idleStartLimitMs ?? IDLE_START_LIMIT_MS
    this.maxSessions = opts.maxSessions ?? 256
    this.singleGuest = opts.singleGuest ?? false
    const uid = process.getuid?.() ?? 0
    this.workerData = {
      listenFd, stopFd, stopAcceptFd,
      snapshotPath: opts.snapshotPath,
      policy: opts.policy ?? 'ondemand',
      cwd: process.cwd(),
      tracePath: opts.tracePath,
      allowUids: [uid, ...(opts.allowUids ?? [])],
      allowAnyUid: opts.allowAnyUid ?? false,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 5000,
      sessionCounter: new SharedArrayBuffer(4),
      remote: store?.workerData(),
    }
  }

  /** Checks the snapshot and policy, listens, and starts the warm worker(s). */
  static async start(opts: PageServerOptions): Promise<PageServer> {
    if (workerUrl.pathname.endsWith('.js')) assertBuildFresh()
    if (!isS3Url(opts.snapshotPath)) return PageServer.startWith(opts, undefined)
    const store = await ChunkStore.open(opts.snapshotPath, { ...remoteStoreDefaults(), ...opts.remote })
    try {
      return await PageServer.startWith(opts, store)
    } catch (err) {
      await store.close()
      throw err
    }
  }

  private static async startWith(opts: PageServerOptions, store: ChunkStore | undefined): Promise<PageServer> {
    if (store === undefined) SnapshotReader.open(opts.snapshotPath).close()
    if (opts.tracePath) checkTracePath(opts.tracePath)
    await createPolicy(opts.policy ?? 'ondemand')
    if (existsSync(opts.socketPath)) {
      if (!lstatSync(opts.socketPath).isSocket()) throw new ServerError(`--socket ${opts.socketPath}: exists and is not a socket`)
      let live = false
      try { uffd.closeFd(uffd.connectUnix(opts.socketPath)); live = true } catch { /* stale */ }
      if (live) throw new ServerError(`--socket ${opts.socketPath}: another server is listening there`)
      unlinkSync(opts.socketPath)
    }
    const listenFd = uffd.listenUnix(opts.socketPath)
    const server = new PageServer(opts, listenFd, store)
    await server.fillPool(false)
    return server
  }

  /** Starts workers until `warm` wait for a guest. Replacements (`startIdle`) get ready in
   * SCHED_IDLE, so their start-up does not compete with the guests being served. */
  private fillPool(startIdle = true): Promise<void> {
    const starts: Promise<void>[] = []
    while (!this.closing && this.waiting < this.warm && this.workers.size < this.maxSessions + this.warm &&
      !(this.singleGuest && this.acceptedCount > 0)) {
      starts.push(this.spawn(startIdle))
    }
    return Promise.all(starts).then(() => undefined)
  }

  /** A worker getting ready in SCHED_IDLE is raised to normal priority when a guest is
   * waiting for it (the listening socket has a connection no ready worker took) or after
   * idleStartLimitMs: on a machine kept busy, an idle-class thread might never run. */
  private watchIdleStarts(): void {
    if (this.idleStartTimer !== undefined || this.idleStarts.size === 0) return
    this.idleStartTimer = setInterval(() => {
      if (this.idleStarts.size === 0 || this.closing) {
        clearInterval(this.idleStartTimer)
        this.idleStartTimer = undefined
        return
      }
      const guestWaiting = this.waiting === this.idleStarts.size && this.listenPoll.wait(0) > 0
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
    this.waiting++
    // Remote snapshots: the store signals this eventfd when a chunk the worker asked for is in.
    let readyFd = this.store !== undefined ? uffd.createEventFd() : -1
    // A new thread inherits its creator's scheduling class: created while this thread is in
    // SCHED_IDLE, the worker is idle-class from its first instruction (Node's own start-up of
    // a worker is most of its cost). It raises itself once ready; this thread now.
    const idle = startIdle && uffd.canLowerThreadPriority()
    const workerData: SessionWorkerData = { ...this.workerData, startIdle: idle }
    if (readyFd >= 0) workerData.readyFd = readyFd
    const tidsBefore = idle ? uffd.threadIds() : []
    if (idle) uffd.setThreadIdle(0, true)
    let worker: Worker
    try {
      worker = new Worker(workerUrl, { ...workerOptions, workerData })
    } finally {
      if (idle) uffd.setThreadIdle(0, false)
    }
    if (idle) {
      const tids = uffd.threadIds().filter(t => !tidsBefore.includes(t))
      if (tids.length > 0) {
        this.idleStarts.set(worker, { tids, sinceMs: Date.now() })
        this.watchIdleStarts()
      }
    }
    this.workers.add(worker)
    this.waitingWorkers.add(worker)
    let accepted = false
    let handshaking = false
    const handshakeDone = () => { if (handshaking) { handshaking = false; this.handshaking-- } }
    return new Promise<void>((resolve, reject) => {
      worker.on('message', (m: WorkerMessage) => {
        switch (m.type) {
          case 'idle':
            if (this.idleStarts.delete(worker)) this.raiseStrayIdleThreads()
            if (accepted) {
              // It refused its client and waits for the next one again (no new worker needed).
              accepted = false
              this.waiting++
              this.waitingWorkers.add(worker)
            }
            resolve()
            break
          case 'accepted':
            accepted = true
            handshaking = true
            this.handshaking++
            this.acceptedCount++
            this.waiting--
            this.waitingWorkers.delete(worker)
            void this.fillPool()
            break
          case 'log': this.emit('log', m.line); break
          case 'fetch': if (readyFd >= 0) this.store!.request(m.chunks, m.priority, readyFd); break
          case 'invalid': this.store?.invalidate(m.chunk); break
          case 'rejected':
            handshakeDone()
            this.rejected++
            this.emit('rejected', m.pid, m.error)
            break
          case 'session': {
            handshakeDone()
            const rec: SessionRecord = { id: m.id, pid: m.pid, form: m.form, bytes: m.bytes }
            this.active.set(m.id, rec)
            this.emit('session', rec)
            break
          }
          case 'ended': {
            const rec = this.active.get(m.id) ?? { id: m.id, pid: m.pid, form: '?', bytes: 0 }
            rec.stats = m.stats
            rec.error = m.error
            this.active.delete(m.id)
            this.ended.push(rec)
            this.emit('ended', rec)
            break
          }
          case 'fatal':
            this.emit('log', `worker failed: ${m.error}`)
            reject(new ServerError(m.error))
            break
        }
      })
      worker.on('error', err => {
        this.emit('log', `worker crashed: ${err.message}`)
        reject(err)
      })
      worker.on('exit', () => {
        handshakeDone()
        if (readyFd >= 0) {
          this.store!.detach(readyFd)
          uffd.closeFd(readyFd)
          readyFd = -1
        }
        this.workers.delete(worker)
        this.waitingWorkers.delete(worker)
        this.idleStarts.delete(worker)
        if (!accepted) this.waiting--
        if (!this.closing) void this.fillPool()
        resolve()
      })
    })
  }

  /** Worker threads alive: the warm ones and one per guest being served. */
  get workerCount(): number { return this.workers.size }

  /** Resolves when no guest is being served. */
  async idle(): Promise<void> {
    while (this.active.size > 0 || this.handshaking > 0) await new Promise(r => setTimeout(r, 20))
  }

  /** Ends every session now (their guests see the socket close and stop). */
  stopSessions(): void {
    uffd.signalEventFd(this.stopFd)
  }

  /** Stops accepting; with `drain`, waits for the guests being served to finish first. */
  async close(opts: { drain?: boolean } = {}): Promise<void> {
    if (this.closing) return
    this.closing = true
    clearInterval(this.idleStartTimer)
    this.idleStartTimer = undefined
    try { unlinkSync(this.socketPath) } catch { /* gone */ }
    uffd.signalEventFd(this.stopAcceptFd)
    await Promise.all([...this.waitingWorkers].map(w => new Promise(r => w.once('exit', r))))
    uffd.closeFd(this.listenFd)
    if (opts.drain) await this.idle()
    uffd.signalEventFd(this.stopFd)
    await Promise.all([...this.workers].map(w => new Promise(r => w.once('exit', r))))
    uffd.closeFd(this.stopFd)
    uffd.closeFd(this.stopAcceptFd)
    await this.store?.close()
  }
}
