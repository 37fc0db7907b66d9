// Chunks of a remote snapshot and their shared state. A chunk is `chunkPages` pages from the
// snapshot header, whose stored bytes are one contiguous range (one GET). The state lives in
// SharedArrayBuffers: the chunk store (main thread) and every session worker see it at once.
import type { SnapshotIndex } from '../snapshot/snapshot-index.js'

/** Chunk states. Only the store moves a chunk to WANTED, READY or FAILED; a session may move
 * READY to ABSENT when the cached copy turns out unreadable. */
export const CHUNK_ABSENT = 0
export const CHUNK_WANTED = 1
export const CHUNK_READY = 2
export const CHUNK_FAILED = 3

/** Where each chunk's stored bytes are (offsets relative to the snapshot's data offset). */
export class ChunkLayout {
  readonly chunkPages: number
  readonly chunkCount: number
  readonly pageCount: number
  /** Largest stored size of any chunk. */
  readonly maxStoredBytes: number
  private readonly index: SnapshotIndex

  constructor(index: SnapshotIndex) {
    this.index = index
    this.chunkPages = index.chunkPages
    this.pageCount = index.pageCount
    this.chunkCount = Math.ceil(index.pageCount / index.chunkPages)
    let max = 0
    for (let c = 0; c < this.chunkCount; c++) max = Math.max(max, this.storedLength(c))
    this.maxStoredBytes = max
  }

  chunkOf(page: number): number {
    return Math.floor(page / this.chunkPages)
  }
  firstPage(chunk: number): number {
    return chunk * this.chunkPages
  }
  /** One past the chunk's last page. */
  endPage(chunk: number): number {
    return Math.min(this.pageCount, (chunk + 1) * this.chunkPages)
  }
  storedStart(chunk: number): number {
    return this.index.runStart(this.firstPage(chunk))
  }
  storedEnd(chunk: number): number {
    return this.index.runEnd(this.endPage(chunk) - 1)
  }
  storedLength(chunk: number): number {
    return this.storedEnd(chunk) - this.storedStart(chunk)
  }
}

export interface ChunkTableBuffers {
  state: SharedArrayBuffer
  gen: SharedArrayBuffer
  stamps: SharedArrayBuffer
  misc: SharedArrayBuffer
}

/** misc[0]: the LRU clock. misc[1]: length of the last failure's message, whose UTF-8 bytes
 * follow from byte 8. */
const CLOCK = 0,
  ERROR_LENGTH = 1,
  ERROR_AT = 8,
  ERROR_MAX = 1024

export class ChunkTable {
  /** CHUNK_* per chunk. */
  readonly state: Int32Array
  /** Bumped by the store each time a fetch of the chunk completes, ready or failed: a session
   * that asked at generation g and now sees another knows its request was answered. */
  readonly gen: Int32Array
  /** Last use of each chunk on the LRU clock (a session bumps it on every read). */
  readonly stamps: Int32Array
  private readonly misc: Int32Array
  private readonly errorBytes: Uint8Array
  readonly buffers: ChunkTableBuffers

  private constructor(buffers: ChunkTableBuffers) {
    this.buffers = buffers
    this.state = new Int32Array(buffers.state)
    this.gen = new Int32Array(buffers.gen)
    this.stamps = new Int32Array(buffers.stamps)
    this.misc = new Int32Array(buffers.misc)
    this.errorBytes = new Uint8Array(buffers.misc, ERROR_AT)
  }

  static create(chunkCount: number): ChunkTable {
    return new ChunkTable({
      state: new SharedArrayBuffer(chunkCount * 4),
      gen: new SharedArrayBuffer(chunkCount * 4),
      stamps: new SharedArrayBuffer(chunkCount * 4),
      misc: new SharedArrayBuffer(ERROR_AT + ERROR_MAX),
    })
  }

  static attach(buffers: ChunkTableBuffers): ChunkTable {
    return new ChunkTable(buffers)
  }

  /** Marks a use of `chunk` now. */
  touch(chunk: number): void {
    Atomics.store(this.stamps, chunk, Atomics.add(this.misc, CLOCK, 1) + 1)
  }

  /** Records why the latest fetch failed (before the chunk is marked FAILED). */
  setError(message: string): void {
    const bytes = Buffer.from(message.slice(0, ERROR_MAX / 4))
    const n = Math.min(bytes.length, ERROR_MAX)
    this.errorBytes.set(bytes.subarray(0, n))
    Atomics.store(this.misc, ERROR_LENGTH, n)
  }

  lastError(): string {
    const n = Atomics.load(this.misc, ERROR_LENGTH)
    return Buffer.from(this.errorBytes.subarray(0, n)).toString('utf8')
  }
}

/** A cache entry's file name inside the snapshot's cache directory. */
export function chunkFileName(chunk: number): string {
  return `${chunk}.chunk`
}

/** Bytes before a cache entry's data: magic, version, chunk, first page, length, CRC. */
export const ENTRY_HEADER_SIZE = 32
export const ENTRY_MAGIC = Buffer.from('FLTCHNK\0', 'latin1')
export const ENTRY_VERSION = 1
