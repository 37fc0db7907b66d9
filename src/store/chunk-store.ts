// ChunkStore: serves one remote snapshot's chunks to every session of a page server. Runs on
// the server's main event loop: sessions (blocked in poll in their workers) post chunk
// requests; the store fetches each chunk once (single flight), GETs run in a bounded pool
// (faults first, adjacent chunks merged into one GET), data is verified page by page, written
// to the disk cache, and the waiting sessions' eventfds are signalled.
import { homedir } from 'node:os'
import { performance } from 'node:perf_hooks'
import { join } from 'node:path'
import { PageDecoder } from '../snapshot/decoder.js'
import type { SnapshotHeader } from '../snapshot/format.js'
import * as uffd from '../uffd/index.js'
import { ChunkCache, type ChunkCacheStats } from './chunk-cache.js'
import { CHUNK_FAILED, CHUNK_READY, CHUNK_WANTED, ChunkLayout, ChunkTable, type ChunkTableBuffers } from './chunk-table.js'
import { InstallCause } from '../policy/policy.js'
import { RemoteStoreError, StoreArgumentError } from './errors.js'
import { openRemoteSnapshot, type RemoteSnapshot } from './remote-snapshot.js'
import type { RetryOptions } from './retry.js'
import { createS3Client, parseS3Url, resolveS3Settings } from './s3-config.js'
import { S3Object, type RangeSource } from './s3-object.js'

export interface ChunkStoreOptions {
  /** `--cache-dir`. */
  cacheDir: string
  /** `--cache-size` in bytes. */
  cacheSizeBytes: number
  /** `--endpoint`, overriding AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. */
  endpoint?: string
  /** Environment to read AWS_* from (default process.env). */
  env?: NodeJS.ProcessEnv
  /** GETs in flight at once (default 8). Prefetch may use all but one slot and background
   * all but two (each at least one), so a fault rarely waits behind a full pool of them. */
  concurrency?: number
  /** Adjacent queued chunks are merged into one GET up to this many bytes (default 256 KiB). */
  maxGetBytes?: number
  retry?: Partial<RetryOptions>
}

/** What a session worker needs to read the snapshot through the store (structured-cloned). */
export interface RemoteWorkerData {
  url: string
  header: SnapshotHeader
  indexBytes: SharedArrayBuffer
  table: ChunkTableBuffers
  /** The snapshot's cache directory. */
  chunkDir: string
}

export interface ChunkStoreStats {
  /** Chunk fetches completed from the remote store. */
  chunksFetched: number
  /** GETs that fetched chunks (one may carry several adjacent chunks). */
  chunkGets: number
  /** GET requests of any kind, retries and header/index reads included. */
  requests: number
  retries: number
  /** Bytes received from the store, header and index included. */
  bytesFetched: number
  /** Chunks served from entries left on disk by an earlier run, after their CRC check. */
  chunksFromDisk: number
  /** Chunk fetches that failed for good. */
  failures: number
  /** Cached chunks a session found unreadable or corrupt, dropped and fetched again. */
  invalidations: number
  /** Fetched data that failed page verification (each is fetched once more). */
  corruptFetches: number
  /** Time chunk GETs took, retries and backoff included, ms (over the last 4096). */
  getMs: { p50: number; p99: number; max: number }
  cache: ChunkCacheStats
}

/** Chunk GET durations kept for the percentiles. */
const GET_SAMPLES = 4096

export class ChunkStore {
  readonly url: string
  readonly snapshot: RemoteSnapshot
  readonly layout: ChunkLayout
  readonly table: ChunkTable
  readonly cache: ChunkCache
  private readonly source: RangeSource
  private readonly decoder: PageDecoder
  private readonly scratch: Buffer
  private readonly concurrency: number
  private readonly maxGetBytes: number
  private readonly onClose: () => void
  /** Per priority, chunks waiting for a slot (lazy deletion: queuedAt says which is live). */
  private readonly queues: number[][] = [[], [], []]
  private readonly queueHeads = [0, 0, 0]
  /** Priority a chunk is queued at, or -1. */
  private readonly queuedAt: Int8Array
  private readonly inflight: Uint8Array
  /** Times a chunk's cached copy was found bad: past a few, the disk is the problem. */
  private readonly badReads: Uint8Array
  private readonly waiters = new Map<number, number[]>()
  private active = 0
  private closing = false
  private readonly settled = new Set<Promise<void>>()
  private idleWaiters: Array<() => void> = []
  private readonly counters = { chunksFetched: 0, chunkGets: 0, chunksFromDisk: 0, failures: 0, invalidations: 0, corruptFetches: 0 }
  private readonly getMs = new Float64Array(GET_SAMPLES)

  private constructor(
    source: RangeSource,
    snapshot: RemoteSnapshot,
    cache: ChunkCache,
    table: ChunkTable,
    layout: ChunkLayout,
    opts: ChunkStoreOptions,
    onClose: () => void,
  ) {
    this.url = source.url
    this.source = source
    this.snapshot = snapshot
    this.cache = cache
    this.table = table
    this.layout = layout
    this.decoder = new PageDecoder(snapshot.index)
    this.scratch = Buffer.allocUnsafeSlow(layout.chunkPages * snapshot.header.pageSize)
    this.concurrency = Math.max(1, opts.concurrency ?? 8)
    this.maxGetBytes = opts.maxGetBytes ?? 256 * 1024
    this.queuedAt = new Int8Array(layout.chunkCount).fill(-1)
    this.inflight = new Uint8Array(layout.chunkCount)
    this.badReads = new Uint8Array(layout.chunkCount)
    this.onClose = onClose
  }

  /** Opens `url` (header and index, ranged GETs) and its cache directory. */
  static async open(url: string, opts: ChunkStoreOptions): Promise<ChunkStore> {
    const location = parseS3Url(url, '--snapshot')
    const settings = resolveS3Settings({ endpoint: opts.endpoint }, opts.env)
    const client = createS3Client(settings, { maxSockets: Math.max(1, opts.concurrency ?? 8) + 1 })
    const object = new S3Object(client, location, opts.retry)
    try {
      return await ChunkStore.openSource(object, opts, () => client.destroy())
    } catch (err) {
      object.close()
      client.destroy()
      throw err
    }
  }

  /** Like open, over any RangeSource (tests use one in memory). */
  static async openSource(source: RangeSource, opts: ChunkStoreOptions, onClose: () => void = () => {}): Promise<ChunkStore> {
    const snapshot = await openRemoteSnapshot(source)
    const layout = new ChunkLayout(snapshot.index)
    const concurrency = Math.max(1, opts.concurrency ?? 8)
    // Chunks in flight must fit beside the one a session is about to read, or a tiny cache
    // could evict each chunk before its guest gets to it.
    const minBytes = 2 * (concurrency + 1) * (layout.maxStoredBytes + 4096)
    if (opts.cacheSizeBytes < minBytes) {
      throw new StoreArgumentError(
        `--cache-size ${opts.cacheSizeBytes}: too small for ${source.url}: at least ${minBytes} bytes ` +
          `(2 x (${concurrency} GETs in flight + 1) chunks of up to ${layout.maxStoredBytes} bytes)`,
      )
    }
    const table = ChunkTable.create(layout.chunkCount)
    // Chunks of zero pages only have nothing stored: there is nothing to fetch.
    for (let c = 0; c < layout.chunkCount; c++) if (layout.storedLength(c) === 0) table.state[c] = CHUNK_READY
    const cache = ChunkCache.open({
      root: opts.cacheDir,
      snapshotId: snapshot.id,
      source: `${source.url} etag ${snapshot.etag}`,
      capacityBytes: opts.cacheSizeBytes,
      layout,
      table,
    })
    return new ChunkStore(source, snapshot, cache, table, layout, opts, onClose)
  }

  get stats(): ChunkStoreStats {
    const s = this.source.stats
    const n = Math.min(this.counters.chunkGets, GET_SAMPLES)
    const sorted = this.getMs.slice(0, n).sort()
    const at = (q: number) => (n === 0 ? 0 : sorted[Math.min(n - 1, Math.floor(q * n))])
    return {
      ...this.counters,
      requests: s.requests,
      retries: s.retries,
      bytesFetched: s.bytesFetched,
      getMs: { p50: at(0.5), p99: at(0.99), max: n === 0 ? 0 : sorted[n - 1] },
      cache: { ...this.cache.stats },
    }
  }

  workerData(): RemoteWorkerData {
    return {
      url: this.url,
      header: this.snapshot.header,
      indexBytes: this.snapshot.indexBytes.buffer as SharedArrayBuffer,
      table: this.table.buffers,
      chunkDir: this.cache.dir,
    }
  }

  /** A session (whose eventfd is `waiterFd`) needs `chunks`: fetch what is missing, and
   * signal the eventfd when each is ready or has failed. */
  request(chunks: ArrayLike<number>, priority: number, waiterFd: number): void {
    if (this.closing) return
    let signalNow = false
    const p = Math.max(InstallCause.Fault, Math.min(InstallCause.Background, priority | 0))
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i]
      if (!(c >= 0 && c < this.layout.chunkCount)) continue
      if (Atomics.load(this.table.state, c) === CHUNK_READY) {
        signalNow = true
        continue
      }
      this.addWaiter(c, waiterFd)
      if (this.inflight[c]) continue
      Atomics.store(this.table.state, c, CHUNK_WANTED)
      this.enqueue(c, p)
    }
    if (signalNow) uffd.signalEventFd(waiterFd)
    this.pump()
  }

  /** A session found chunk `chunk`'s cached copy missing or corrupt (it marked it ABSENT). */
  invalidate(chunk: number): void {
    if (!(chunk >= 0 && chunk < this.layout.chunkCount)) return
    if (Atomics.load(this.table.state, chunk) === CHUNK_READY || this.inflight[chunk]) return
    this.counters.invalidations++
    if (this.badReads[chunk] < 255) this.badReads[chunk]++
    this.cache.remove(chunk)
  }

  /** Forgets a session's eventfd (its worker has exited; the fd is about to be closed). */
  detach(waiterFd: number): void {
    for (const [c, fds] of this.waiters) {
      const i = fds.indexOf(waiterFd)
      if (i < 0) continue
      fds.splice(i, 1)
      if (fds.length === 0) this.waiters.delete(c)
    }
  }

  /** Resolves once nothing is being fetched or waiting to be. */
  idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve()
    return new Promise(resolve => this.idleWaiters.push(resolve))
  }

  /** Stops fetching: GETs in flight are aborted; the cache keeps what it has. */
  async close(): Promise<void> {
    if (this.closing) return
    this.closing = true
    this.source.close()
    await Promise.allSettled([...this.settled])
    this.cache.close()
    this.onClose()
  }

  private addWaiter(chunk: number, fd: number): void {
    const list = this.waiters.get(chunk)
    if (list === undefined) this.waiters.set(chunk, [fd])
    else if (!list.includes(fd)) list.push(fd)
  }

  private enqueue(chunk: number, priority: number): void {
    const at = this.queuedAt[chunk]
    if (at !== -1 && at <= priority) return
    this.queuedAt[chunk] = priority
    this.queues[priority].push(chunk)
  }

  /** Next chunk to fetch when `active` slots are busy, or -1. */
  private dequeue(): number {
    for (let p: number = InstallCause.Fault; p <= InstallCause.Background; p++) {
      if (this.active >= Math.max(1, this.concurrency - p)) return -1
      const q = this.queues[p]
      while (this.queueHeads[p] < q.length) {
        const c = q[this.queueHeads[p]++]
        if (this.queuedAt[c] === p) {
          this.queuedAt[c] = -1
          return c
        }
      }
      q.length = 0
      this.queueHeads[p] = 0
    }
    return -1
  }

  private pump(): void {
    while (!this.closing && this.active < this.concurrency) {
      const c = this.dequeue()
      if (c < 0) break
      let count = 1
      if (!this.cache.has(c)) {
        // Merge queued neighbours into the same GET (a sequential guest's readahead, a
        // working set): one round trip instead of several.
        let bytes = this.layout.storedLength(c)
        for (let n = c + 1; n < this.layout.chunkCount && this.queuedAt[n] !== -1 && !this.cache.has(n); n++) {
          const len = this.layout.storedLength(n)
          if (bytes + len > this.maxGetBytes) break
          bytes += len
          this.queuedAt[n] = -1
          count++
        }
      }
      for (let k = 0; k < count; k++) this.inflight[c + k] = 1
      this.active++
      const task = this.fetch(c, count).finally(() => {
        this.active--
        this.settled.delete(task)
        this.pump()
      })
      this.settled.add(task)
    }
    if (this.active === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters
      this.idleWaiters = []
      for (const w of waiters) w()
    }
  }

  /** Makes chunks [first, first+count) READY (from an earlier run's entry, or remote), or
   * FAILED with a one-line reason. Data that fails verification is fetched once more, alone. */
  private async fetch(first: number, count: number, attempt = 1): Promise<void> {
    if (count === 1 && this.cache.has(first)) {
      if (this.cache.isVerified(first) || (await this.cache.verify(first))) {
        this.counters.chunksFromDisk++
        this.complete(first, true)
        return
      }
    }
    if (count === 1 && this.badReads[first] > 3) {
      this.complete(
        first,
        false,
        `${this.cache.dir}: the cached copy of chunk ${first} failed verification ${this.badReads[first]} times after being written: check the disk`,
      )
      return
    }
    const start = this.layout.storedStart(first)
    const length = this.layout.storedEnd(first + count - 1) - start
    let bytes: Buffer
    const t0 = performance.now()
    try {
      bytes = (await this.source.read(this.snapshot.header.dataOffset + start, length)).bytes
    } catch (err) {
      const message = err instanceof RemoteStoreError ? err.message : `${this.url}: ${(err as Error).message}`
      for (let k = 0; k < count; k++) this.complete(first + k, false, message)
      return
    }
    this.getMs[this.counters.chunkGets % GET_SAMPLES] = performance.now() - t0
    this.counters.chunkGets++
    const again: number[] = []
    for (let k = 0; k < count; k++) {
      const c = first + k
      const rel = this.layout.storedStart(c) - start
      const data = bytes.subarray(rel, rel + this.layout.storedLength(c))
      const corrupt = this.verifyChunk(c, data)
      if (corrupt !== undefined) {
        this.counters.corruptFetches++
        if (attempt === 1 && !this.closing) again.push(c)
        else this.complete(c, false, corrupt)
        continue
      }
      try {
        await this.cache.put(c, data)
      } catch (err) {
        this.complete(c, false, (err as Error).message)
        continue
      }
      this.counters.chunksFetched++
      this.complete(c, true)
    }
    for (const c of again) await this.fetch(c, 1, attempt + 1)
  }

  /** Decodes every page of a fetched chunk and checks its CRC: the cache only ever holds
   * data that verified. Returns why it does not, or undefined. */
  private verifyChunk(chunk: number, data: Buffer): string | undefined {
    const p = this.layout.firstPage(chunk)
    try {
      this.decoder.decodeRun(p, this.layout.endPage(chunk) - p, data, 0, this.scratch, 0)
    } catch (err) {
      return (err as Error).message
    }
    return undefined
  }

  private complete(chunk: number, ok: boolean, message = ''): void {
    this.inflight[chunk] = 0
    const t = this.table
    Atomics.add(t.gen, chunk, 1)
    if (ok) {
      this.badReads[chunk] = 0
      t.touch(chunk)
      Atomics.store(t.state, chunk, CHUNK_READY)
    } else {
      this.counters.failures++
      t.setError(message)
      Atomics.store(t.state, chunk, CHUNK_FAILED)
    }
    const fds = this.waiters.get(chunk)
    if (fds !== undefined) {
      this.waiters.delete(chunk)
      for (const fd of fds) uffd.signalEventFd(fd)
    }
  }
}

/** Defaults for a remote snapshot's store: cache in $XDG_CACHE_HOME/faultline (or
 * ~/.cache/faultline), 1 GiB. */
export function remoteStoreDefaults(env: NodeJS.ProcessEnv = process.env): ChunkStoreOptions {
  const base = env.XDG_CACHE_HOME || join(env.HOME || homedir(), '.cache')
  return { cacheDir: join(base, 'faultline'), cacheSizeBytes: DEFAULT_CACHE_SIZE_BYTES }
}

export const DEFAULT_CACHE_SIZE_BYTES = 2 ** 30
