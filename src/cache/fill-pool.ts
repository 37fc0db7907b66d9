// FillPool: the fill workers of one snapshot's decoded cache (default: one a core), the queue
// sessions ask them through, and the table they notify sessions by. Lives in the server's main
// thread; sessions reach the queue and the table directly through shared memory.
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import { workerEntry } from '../util/worker-url.js'
import type { DecodedCache } from './decoded-cache.js'
import { FillNotifier, type FillNotifierBuffers } from './fill-notifier.js'
import { FILL_STAT_FIELDS, S_BUSY_MS, S_BYTES_READ, S_FOLIOS, S_FOLIOS_BY_PRIORITY, type FillWorkerData, type FillWorkerMessage } from './fill-protocol.js'
import { FillQueue, type FillQueueBuffers } from './fill-queue.js'
import type { RemoteWorkerData } from '../store/chunk-store.js'
import * as uffd from '../uffd/index.js'

const entry = workerEntry(import.meta.url, new URL('./fill-worker.js', import.meta.url), new URL('../../dist/cache/fill-worker.js', import.meta.url))

export interface FillPoolOptions {
  snapshotPath: string
  /** The server's descriptor of the snapshot, read by every worker (default: each opens the path). */
  snapshotFd?: number
  cache: DecodedCache
  /** Fill workers (default: the machine's cores). */
  workers?: number
  /** Requests each priority's ring holds (default: enough for every folio). */
  queueCapacity?: number
  /** Sessions that may wait for fills at once (default 512). */
  notifierSlots?: number
  log?: (line: string) => void
  /** An object-store snapshot: what workers read it through, and the store they ask. */
  remote?: { workerData: RemoteWorkerData; store: ChunkRequester }
}

/** The chunk store as fill workers need it (src/store/chunk-store.ts ChunkStore). */
export interface ChunkRequester {
  request(chunks: ArrayLike<number>, priority: number, waiterFd: number): void
  invalidate(chunk: number): void
  detach(waiterFd: number): void
}

/** What a session needs to ask for fills and hear of them. */
export interface FillSessionData {
  queue: FillQueueBuffers
  notifier: FillNotifierBuffers
}

export interface FillPoolStats {
  workers: number
  foliosFilled: number
  /** Folios filled for a fault, a prefetch, background work. */
  foliosByPriority: [number, number, number]
  bytesRead: number
  busyMs: number
}

export class FillPool {
  readonly queue: FillQueue
  readonly notifier: FillNotifier
  readonly workerCount: number
  private readonly workers: Worker[] = []
  private readonly stats: Float64Array
  private readonly exited: Promise<void>[] = []
  private readyCount = 0
  private readonly readyWaiters: Array<() => void> = []

  private constructor(opts: FillPoolOptions) {
    this.workerCount = Math.max(1, opts.workers ?? availableParallelism())
    this.queue = FillQueue.allocate(opts.queueCapacity ?? Math.max(1024, opts.cache.folioCount))
    this.notifier = FillNotifier.allocate(opts.notifierSlots ?? 512)
    this.stats = new Float64Array(new SharedArrayBuffer(this.workerCount * FILL_STAT_FIELDS * 8))
  }

  /** The pool's shared queue and table, its workers not started yet (startWorkers). */
  static create(opts: FillPoolOptions): FillPool {
    const pool = new FillPool(opts)
    pool.opts = opts
    return pool
  }

  /** The pool with its workers started. */
  static start(opts: FillPoolOptions): FillPool {
    const pool = FillPool.create(opts)
    pool.startWorkers()
    return pool
  }

  private opts: FillPoolOptions | undefined

  /** Starts the workers (once; later calls do nothing), one after another: threads loading
   * their modules at once hold many descriptors (a server under nofile 100 ran out). whenReady
   * says when they all have loaded. */
  startWorkers(): void {
    if (this.opts === undefined || this.workers.length > 0 || this.closed) return
    this.spawnWorker(0, new Set<number>())
  }

  private spawnWorker(i: number, reported: Set<number>): void {
    const opts = this.opts!
    const log = opts.log ?? (() => {})
    const remote = opts.remote
    const readyFd = remote !== undefined ? uffd.createEventFd() : -1
    const data: FillWorkerData = {
      index: i,
      snapshotPath: opts.snapshotPath,
      snapshotFd: opts.snapshotFd ?? -1,
      cache: opts.cache.info,
      queue: this.queue.buffers,
      notifier: this.notifier.buffers,
      stats: this.stats.buffer as SharedArrayBuffer,
      ...(remote !== undefined ? { remote: remote.workerData, readyFd } : {}),
    }
    const worker = new Worker(entry.url, { ...entry.options, workerData: data })
    let settled = false
    // Loaded (or failed to): the next one starts.
    const settle = () => {
      if (settled) return
      settled = true
      this.workerReady()
      if (i + 1 < this.workerCount && !this.closed) this.spawnWorker(i + 1, reported)
    }
    worker.on('message', (m: FillWorkerMessage) => {
      if (m.type === 'ready') settle()
      else if (m.type === 'fetch') remote?.store.request(m.chunks, m.priority, readyFd)
      else if (m.type === 'invalid') remote?.store.invalidate(m.chunk)
      else if (m.type === 'unservable' && !reported.has(m.folio)) {
        reported.add(m.folio)
        log(`decoded cache: folio ${m.folio} not stored (its pages are served one by one): ${m.error}`)
      } else if (m.type === 'fatal') {
        log(`fill worker ${i} failed: ${m.error}`)
      }
    })
    worker.on('error', err => log(`fill worker ${i} crashed: ${err.message}`))
    this.exited.push(
      new Promise(r =>
        worker.once('exit', () => {
          settle()
          if (readyFd >= 0) {
            remote!.store.detach(readyFd)
            uffd.closeFd(readyFd)
          }
          r()
        }),
      ),
    )
    this.workers.push(worker)
  }

  /** Resolves once every worker has started (or after `timeoutMs`, whichever is first): a
   * guest that came while they were still loading had its faults served privately. */
  whenReady(timeoutMs: number): Promise<void> {
    if (this.workers.length === 0 || this.readyCount >= this.workerCount) return Promise.resolve()
    return new Promise(resolve => {
      const timer = setTimeout(resolve, timeoutMs)
      timer.unref()
      this.readyWaiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  private workerReady(): void {
    if (++this.readyCount < this.workerCount) return
    for (const w of this.readyWaiters.splice(0)) w()
  }

  sessionData(): FillSessionData {
    return { queue: this.queue.buffers, notifier: this.notifier.buffers }
  }

  totals(): FillPoolStats {
    const s = this.stats
    const out: FillPoolStats = { workers: this.workerCount, foliosFilled: 0, foliosByPriority: [0, 0, 0], bytesRead: 0, busyMs: 0 }
    for (let i = 0; i < this.workerCount; i++) {
      const row = i * FILL_STAT_FIELDS
      out.foliosFilled += s[row + S_FOLIOS]
      for (let p = 0; p < 3; p++) out.foliosByPriority[p] += s[row + S_FOLIOS_BY_PRIORITY + p]
      out.bytesRead += s[row + S_BYTES_READ]
      out.busyMs += s[row + S_BUSY_MS]
    }
    return out
  }

  private closed = false

  /** Stops the workers (a fill in progress finishes first). */
  async close(): Promise<void> {
    this.closed = true
    this.queue.stop()
    await Promise.all(this.exited)
  }
}
