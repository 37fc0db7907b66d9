// RemotePageSource: the session side of a remote snapshot. Reads pages from the chunk store's
// disk cache (pread of the run's stored bytes, decoded and CRC-checked page by page, as the
// local reader does); asks the store, by message, for chunks that are not there yet.
import { closeSync, openSync } from 'node:fs'
import { join } from 'node:path'
import { FaultlineError } from '../errors.js'
import { PageDecoder } from '../snapshot/decoder.js'
import { SnapshotCorruptError, type PageKind } from '../snapshot/format.js'
import { SnapshotIndex } from '../snapshot/snapshot-index.js'
import * as uffd from '../uffd/index.js'
import { CHUNK_ABSENT, CHUNK_FAILED, CHUNK_READY, ChunkTable, ENTRY_HEADER_SIZE, chunkFileName } from './chunk-table.js'
import type { RemoteWorkerData } from './chunk-store.js'
import type { DeferredPageSource } from './deferred-source.js'

/** Messages a session posts to the store (through the page server). */
export type StoreRequest = { type: 'fetch'; chunks: Int32Array; priority: number } | { type: 'invalid'; chunk: number }

/** Chunk files a session keeps open; reads of a cached chunk then cost one pread. */
const OPEN_FILES = 64

export class RemotePageSource implements DeferredPageSource {
  readonly url: string
  readonly pageSize: number
  readonly pageCount: number
  readonly imageSizeBytes: number
  readonly chunkPages: number
  readonly readyFd: number
  readonly index: SnapshotIndex
  bytesRead = 0
  private readonly table: ChunkTable
  private readonly state: Int32Array
  private readonly gen: Int32Array
  private readonly chunkDir: string
  private readonly decoder: PageDecoder
  private readonly post: (m: StoreRequest) => void
  /** 1 while this session waits for an answer to its request for the chunk. */
  private readonly asked: Uint8Array
  /** The chunk's generation when this session asked (see ChunkTable.gen). */
  private readonly askedGen: Int32Array
  /** The priority it asked at: a fault on a chunk asked for as a prefetch asks again, sooner. */
  private readonly askedPriority: Uint8Array
  private readonly fdOf: Int32Array
  private readonly openChunks = new Int32Array(OPEN_FILES).fill(-1)
  private nextSlot = 0
  private readonly batch: Int32Array
  private buf: Buffer
  private closed = false

  constructor(data: RemoteWorkerData, readyFd: number, post: (m: StoreRequest) => void) {
    this.url = data.url
    this.index = SnapshotIndex.parse(data.url, data.header, Buffer.from(data.indexBytes))
    this.pageSize = this.index.pageSize
    this.pageCount = this.index.pageCount
    this.imageSizeBytes = this.index.imageSizeBytes
    this.chunkPages = this.index.chunkPages
    this.readyFd = readyFd
    this.table = ChunkTable.attach(data.table)
    this.state = this.table.state
    this.gen = this.table.gen
    this.chunkDir = data.chunkDir
    this.decoder = new PageDecoder(this.index)
    this.post = post
    const chunks = this.state.length
    this.asked = new Uint8Array(chunks)
    this.askedGen = new Int32Array(chunks)
    this.askedPriority = new Uint8Array(chunks)
    this.fdOf = new Int32Array(chunks).fill(-1)
    this.batch = new Int32Array(Math.max(16, Math.ceil((2 * 1024 * 1024) / (this.pageSize * this.chunkPages)) + 2))
    this.buf = Buffer.allocUnsafeSlow(this.chunkPages * this.pageSize)
  }

  kindOf(page: number): PageKind {
    return this.index.kindOf(page)
  }

  drainReady(): void {
    uffd.drainEventFd(this.readyFd)
  }

  availablePages(first: number, count: number): number {
    const end = first + count
    let p = first
    while (p < end) {
      const c = Math.floor(p / this.chunkPages)
      if (Atomics.load(this.state, c) !== CHUNK_READY) break
      p = Math.min(end, (c + 1) * this.chunkPages)
    }
    return p - first
  }

  request(first: number, count: number, priority: number): void {
    const cp = this.chunkPages
    let n = 0
    for (let c = Math.floor(first / cp), last = Math.floor((first + count - 1) / cp); c <= last; c++) {
      const s = Atomics.load(this.state, c)
      if (s === CHUNK_READY) {
        this.asked[c] = 0
        continue
      }
      if (this.asked[c] === 1) {
        const answered = Atomics.load(this.gen, c) !== this.askedGen[c]
        // Unanswered: still coming (asked again only to move it up the store's queue).
        // Answered and failed: failure() reports it, and this session does not retry it.
        // Answered, then evicted or re-fetched for someone else: ask again.
        if (answered ? s === CHUNK_FAILED : priority >= this.askedPriority[c]) continue
      }
      this.asked[c] = 1
      this.askedGen[c] = Atomics.load(this.gen, c)
      this.askedPriority[c] = priority
      if (n === this.batch.length) {
        this.send(n, priority)
        n = 0
      }
      this.batch[n++] = c
    }
    if (n > 0) this.send(n, priority)
  }

  failure(first: number, count: number): string | undefined {
    const cp = this.chunkPages
    for (let c = Math.floor(first / cp), last = Math.floor((first + count - 1) / cp); c <= last; c++) {
      if (this.asked[c] === 1 && Atomics.load(this.state, c) === CHUNK_FAILED && Atomics.load(this.gen, c) !== this.askedGen[c]) {
        return this.table.lastError()
      }
    }
    return undefined
  }

  tryReadPages(first: number, count: number, into: Buffer, intoOffset: number): boolean {
    const cp = this.chunkPages
    const index = this.index
    const end = first + count
    let p = first
    let at = intoOffset
    while (p < end) {
      const c = Math.floor(p / cp)
      const segEnd = Math.min(end, (c + 1) * cp)
      const n = segEnd - p
      const start = index.runStart(p)
      const len = index.runEnd(segEnd - 1) - start
      if (len > 0) {
        const fd = this.fileOf(c)
        if (fd < 0) return this.lost(c)
        if (len > this.buf.length) this.buf = Buffer.allocUnsafeSlow(len)
        const position = ENTRY_HEADER_SIZE + start - index.runStart(c * cp)
        let got = 0
        while (got < len) {
          const r = uffd.preadInto(fd, got === 0 ? this.buf : this.buf.subarray(got), len - got, position + got)
          if (r === 0) return this.lost(c)
          got += r
        }
        this.bytesRead += len
      }
      try {
        this.decoder.decodeRun(p, n, this.buf, 0, into, at)
      } catch (err) {
        // The store verified this data before caching it: a bad page now means the cached
        // copy changed on disk. Drop it and fetch again.
        if (err instanceof SnapshotCorruptError) return this.lost(c)
        throw err
      }
      this.table.touch(c)
      p = segEnd
      at += n * this.pageSize
    }
    return true
  }

  readPages(first: number, count: number, into: Buffer, intoOffset: number): void {
    if (!this.tryReadPages(first, count, into, intoOffset)) {
      throw new FaultlineError(`${this.url}: pages ${first}..${first + count - 1} are not in the local cache yet`)
    }
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    for (let i = 0; i < OPEN_FILES; i++) {
      const c = this.openChunks[i]
      if (c >= 0) {
        closeSync(this.fdOf[c])
        this.fdOf[c] = -1
      }
    }
  }

  private send(n: number, priority: number): void {
    this.post({ type: 'fetch', chunks: this.batch.slice(0, n), priority })
  }

  /** An open descriptor of chunk `c`'s cache entry, or -1 when the entry is gone. */
  private fileOf(c: number): number {
    const fd = this.fdOf[c]
    if (fd >= 0) return fd
    let opened: number
    try {
      opened = openSync(join(this.chunkDir, chunkFileName(c)), 'r')
    } catch {
      return -1
    }
    const slot = this.nextSlot
    this.nextSlot = (slot + 1) % OPEN_FILES
    const old = this.openChunks[slot]
    if (old >= 0) {
      closeSync(this.fdOf[old])
      this.fdOf[old] = -1
    }
    this.openChunks[slot] = c
    this.fdOf[c] = opened
    return opened
  }

  /** Chunk `c`'s cached copy is missing or bad: mark it ABSENT, tell the store, and let the
   * caller park the pages (its request() asks for the chunk again). */
  private lost(c: number): false {
    const fd = this.fdOf[c]
    if (fd >= 0) {
      closeSync(fd)
      this.fdOf[c] = -1
      const slot = this.openChunks.indexOf(c)
      if (slot >= 0) this.openChunks[slot] = -1
    }
    // Already not READY: evicted meanwhile, and the store knows. Else the store must drop it.
    if (Atomics.compareExchange(this.state, c, CHUNK_READY, CHUNK_ABSENT) === CHUNK_READY) {
      this.asked[c] = 0
      this.post({ type: 'invalid', chunk: c })
    }
    return false
  }
}
