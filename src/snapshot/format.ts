// Snapshot format version 1 (docs/snapshot-format.md): constants, header and index entry
// encoding, and the errors a malformed or corrupt snapshot raises.

import { crc32 } from 'node:zlib'
import { FaultlineError } from '../errors.js'

export const MAGIC = Buffer.from('FLTSNAP\0', 'latin1')
export const FORMAT_VERSION = 1
export const HEADER_SIZE = 4096
export const INDEX_ENTRY_SIZE = 16
export const MIN_PAGE_SIZE = 4096
export const MAX_PAGE_SIZE = 65536
export const DEFAULT_PAGE_SIZE = 4096
export const DEFAULT_CHUNK_PAGES = 64
export const MAX_CHUNK_PAGES = 65536
/** Stored offsets are 48-bit. */
export const MAX_STORED_OFFSET = 2 ** 48 - 1

export const CHECKSUM_CRC32 = 1
export const COMPRESSION_LZ4 = 1

/** Page kinds, as stored in an index entry. */
export const KIND_ZERO = 0
export const KIND_LZ4 = 1
export const KIND_RAW = 2
export type PageKind = 0 | 1 | 2
export const KIND_NAMES = ['zero', 'lz4', 'raw'] as const

/** Byte offsets of the header fields. */
export const H = {
  magic: 0,
  version: 8,
  headerSize: 12,
  pageSize: 16,
  chunkPages: 20,
  pageCount: 24,
  imageSize: 32,
  indexOffset: 40,
  dataOffset: 48,
  dataSize: 56,
  indexCrc: 64,
  checksumAlgorithm: 68,
  compression: 72,
  flags: 76,
  zeroPages: 80,
  lz4Pages: 88,
  rawPages: 96,
  reserved: 104,
  headerCrc: 124,
  /** Bytes 0..123 are covered by the header CRC. */
  crcCovered: 124,
  reserved2: 128,
} as const

/** Byte offsets inside an index entry. */
export const E = { offset: 0, kind: 6, reserved: 7, length: 8, crc: 12 } as const

export interface SnapshotHeader {
  version: number
  headerSize: number
  pageSize: number
  chunkPages: number
  pageCount: number
  imageSizeBytes: number
  indexOffset: number
  dataOffset: number
  dataSizeBytes: number
  indexCrc: number
  checksumAlgorithm: number
  compression: number
  flags: number
  zeroPages: number
  lz4Pages: number
  rawPages: number
}

export interface IndexEntry {
  /** Offset of the stored page relative to the data offset. */
  offset: number
  kind: PageKind
  length: number
  crc: number
}

/** A snapshot file's structure is wrong: `mem.snap: index entry 812 points past end of data`. */
export class SnapshotFormatError extends FaultlineError {
  override readonly code: string = 'FL_ERR_SNAPSHOT_FORMAT'
  readonly file: string
  readonly detail: string
  constructor(file: string, detail: string) {
    super(`${file}: ${detail}`)
    this.file = file
    this.detail = detail
  }
}

/** A stored page does not decode to what its index entry promises. */
export class SnapshotCorruptError extends FaultlineError {
  override readonly code: string = 'FL_ERR_SNAPSHOT_CORRUPT'
  readonly file: string
  readonly pageIndex: number
  readonly detail: string
  constructor(file: string, pageIndex: number, detail: string) {
    super(`${file}: page ${pageIndex} is corrupt: ${detail}`)
    this.file = file
    this.pageIndex = pageIndex
    this.detail = detail
  }
}

export function isValidPageSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_PAGE_SIZE && n <= MAX_PAGE_SIZE && (n & (n - 1)) === 0
}

export function isValidChunkPages(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= MAX_CHUNK_PAGES
}

/** CRC-32 of a page of zeros, the checksum every zero page's index entry carries. */
const zeroCrcs = new Map<number, number>()
export function zeroPageCrc(pageSize: number): number {
  let c = zeroCrcs.get(pageSize)
  if (c === undefined) {
    c = crc32(Buffer.alloc(pageSize))
    zeroCrcs.set(pageSize, c)
  }
  return c
}

export const hex32 = (n: number): string => `0x${(n >>> 0).toString(16).padStart(8, '0')}`

/** The header fields derived from the others. */
export function layoutFor(pageCount: number): { indexOffset: number; dataOffset: number } {
  return { indexOffset: HEADER_SIZE, dataOffset: HEADER_SIZE + INDEX_ENTRY_SIZE * pageCount }
}

/** Encode a header into a fresh 4096-byte buffer, header CRC included. */
export function encodeHeader(h: SnapshotHeader): Buffer {
  const b = Buffer.alloc(HEADER_SIZE)
  MAGIC.copy(b, H.magic)
  b.writeUInt32LE(h.version, H.version)
  b.writeUInt32LE(h.headerSize, H.headerSize)
  b.writeUInt32LE(h.pageSize, H.pageSize)
  b.writeUInt32LE(h.chunkPages, H.chunkPages)
  writeU64(b, H.pageCount, h.pageCount)
  writeU64(b, H.imageSize, h.imageSizeBytes)
  writeU64(b, H.indexOffset, h.indexOffset)
  writeU64(b, H.dataOffset, h.dataOffset)
  writeU64(b, H.dataSize, h.dataSizeBytes)
  b.writeUInt32LE(h.indexCrc >>> 0, H.indexCrc)
  b.writeUInt32LE(h.checksumAlgorithm, H.checksumAlgorithm)
  b.writeUInt32LE(h.compression, H.compression)
  b.writeUInt32LE(h.flags, H.flags)
  writeU64(b, H.zeroPages, h.zeroPages)
  writeU64(b, H.lz4Pages, h.lz4Pages)
  writeU64(b, H.rawPages, h.rawPages)
  b.writeUInt32LE(crc32(b.subarray(0, H.crcCovered)), H.headerCrc)
  return b
}

/**
 * Decode and validate a header. `buf` holds at least the file's first 4096 bytes (fewer
 * means the file is too short). Checks magic, version, header CRC and that every field is
 * consistent with the others; does not look at the index or the data.
 */
export function decodeHeader(buf: Buffer, file: string): SnapshotHeader {
  const fail = (detail: string): never => {
    throw new SnapshotFormatError(file, detail)
  }
  if (buf.length < MAGIC.length || !buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    const got = buf.subarray(0, Math.min(8, buf.length)).toString('hex') || 'empty file'
    fail(`not a faultline snapshot (magic ${got}, expected ${MAGIC.toString('hex')})`)
  }
  if (buf.length < HEADER_SIZE) {
    fail(`truncated header: file is ${buf.length} bytes, the header alone is ${HEADER_SIZE}`)
  }
  const version = buf.readUInt32LE(H.version)
  if (version !== FORMAT_VERSION) {
    fail(`unsupported snapshot format version ${version} (this faultline reads version ${FORMAT_VERSION})`)
  }
  const storedCrc = buf.readUInt32LE(H.headerCrc)
  const crc = crc32(buf.subarray(0, H.crcCovered))
  if (storedCrc !== crc) {
    fail(`header checksum mismatch (stored ${hex32(storedCrc)}, computed ${hex32(crc)})`)
  }
  const field = (name: string, off: number): number => {
    const v = buf.readBigUInt64LE(off)
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`header field ${name} is too large (${v})`)
    return Number(v)
  }
  const h: SnapshotHeader = {
    version,
    headerSize: buf.readUInt32LE(H.headerSize),
    pageSize: buf.readUInt32LE(H.pageSize),
    chunkPages: buf.readUInt32LE(H.chunkPages),
    pageCount: field('page count', H.pageCount),
    imageSizeBytes: field('image size', H.imageSize),
    indexOffset: field('index offset', H.indexOffset),
    dataOffset: field('data offset', H.dataOffset),
    dataSizeBytes: field('data size', H.dataSize),
    indexCrc: buf.readUInt32LE(H.indexCrc),
    checksumAlgorithm: buf.readUInt32LE(H.checksumAlgorithm),
    compression: buf.readUInt32LE(H.compression),
    flags: buf.readUInt32LE(H.flags),
    zeroPages: field('zero pages', H.zeroPages),
    lz4Pages: field('lz4 pages', H.lz4Pages),
    rawPages: field('raw pages', H.rawPages),
  }
  if (h.headerSize !== HEADER_SIZE) fail(`header size is ${h.headerSize}, expected ${HEADER_SIZE}`)
  if (!isValidPageSize(h.pageSize)) {
    fail(`page size ${h.pageSize} is not a power of two from ${MIN_PAGE_SIZE} to ${MAX_PAGE_SIZE}`)
  }
  if (!isValidChunkPages(h.chunkPages)) fail(`chunk pages ${h.chunkPages} is not in 1..${MAX_CHUNK_PAGES}`)
  if (h.imageSizeBytes === 0 || h.pageCount === 0) fail('snapshot has no pages (image size 0)')
  const pages = Math.ceil(h.imageSizeBytes / h.pageSize)
  if (h.pageCount !== pages) {
    fail(`page count ${h.pageCount} does not match image size ${h.imageSizeBytes} (${pages} pages of ${h.pageSize})`)
  }
  const layout = layoutFor(h.pageCount)
  if (h.indexOffset !== layout.indexOffset) fail(`index offset ${h.indexOffset}, expected ${layout.indexOffset}`)
  if (h.dataOffset !== layout.dataOffset) fail(`data offset ${h.dataOffset}, expected ${layout.dataOffset}`)
  if (h.dataSizeBytes > h.pageCount * h.pageSize) {
    fail(`data size ${h.dataSizeBytes} exceeds ${h.pageCount} uncompressed pages`)
  }
  if (h.dataSizeBytes > MAX_STORED_OFFSET) fail(`data size ${h.dataSizeBytes} exceeds the 48-bit offset range`)
  if (h.checksumAlgorithm !== CHECKSUM_CRC32) fail(`unknown page checksum algorithm ${h.checksumAlgorithm}`)
  if (h.compression !== COMPRESSION_LZ4) fail(`unknown compression ${h.compression}`)
  if (h.flags !== 0) fail(`unknown flags ${hex32(h.flags)}`)
  if (h.zeroPages + h.lz4Pages + h.rawPages !== h.pageCount) {
    fail(`page kind counts ${h.zeroPages}+${h.lz4Pages}+${h.rawPages} do not add up to ${h.pageCount} pages`)
  }
  if (!isZero(buf, H.reserved, H.headerCrc) || !isZero(buf, H.reserved2, HEADER_SIZE)) {
    fail('reserved header bytes are not zero')
  }
  return h
}

export function encodeIndexEntry(buf: Buffer, off: number, e: IndexEntry): void {
  buf.writeUIntLE(e.offset, off + E.offset, 6)
  buf[off + E.kind] = e.kind
  buf[off + E.reserved] = 0
  buf.writeUInt32LE(e.length, off + E.length)
  buf.writeUInt32LE(e.crc >>> 0, off + E.crc)
}

/** Decode one entry without validating it (SnapshotIndex validates the whole index). */
export function decodeIndexEntry(buf: Buffer, off: number): IndexEntry {
  return {
    offset: buf.readUIntLE(off + E.offset, 6),
    kind: buf[off + E.kind] as PageKind,
    length: buf.readUInt32LE(off + E.length),
    crc: buf.readUInt32LE(off + E.crc),
  }
}

function writeU64(b: Buffer, off: number, v: number): void {
  b.writeBigUInt64LE(BigInt(v), off)
}

function isZero(b: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false
  return true
}
