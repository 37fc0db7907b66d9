// A snapshot's validated header and index, held in memory (16 bytes a page) as 32-bit words
// so the fault path reads an entry with integer math and no allocation.

import { endianness } from 'node:os'
import { crc32 } from 'node:zlib'
import { FaultlineError } from '../errors.js'
import {
  INDEX_ENTRY_SIZE,
  KIND_LZ4,
  KIND_RAW,
  KIND_ZERO,
  SnapshotFormatError,
  decodeIndexEntry,
  hex32,
  zeroPageCrc,
  type IndexEntry,
  type PageKind,
  type SnapshotHeader,
} from './format.js'

const TWO_32 = 4294967296

export class SnapshotIndex {
  readonly file: string
  readonly header: SnapshotHeader
  readonly pageSize: number
  readonly pageCount: number
  readonly imageSizeBytes: number
  readonly chunkPages: number
  /** The index bytes as stored (pageCount x 16). */
  readonly bytes: Buffer
  /**
   * Four words a page: [offset low 32, offset high 16 | kind << 16 | reserved << 24,
   * stored length, CRC]. Little-endian hosts only (checked).
   */
  readonly words: Uint32Array

  private constructor(file: string, header: SnapshotHeader, bytes: Buffer) {
    this.file = file
    this.header = header
    this.pageSize = header.pageSize
    this.pageCount = header.pageCount
    this.imageSizeBytes = header.imageSizeBytes
    this.chunkPages = header.chunkPages
    this.bytes = bytes
    this.words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2)
  }

  /**
   * Validate `indexBytes` against a decoded header: index CRC, and every entry (known kind,
   * length consistent with it, zero pages carrying the zero-page CRC, stored pages
   * contiguous in page order and inside the data). Throws SnapshotFormatError naming the
   * first bad entry.
   */
  static parse(file: string, header: SnapshotHeader, indexBytes: Buffer): SnapshotIndex {
    if (endianness() !== 'LE') throw new FaultlineError('faultline snapshots need a little-endian host')
    const fail = (detail: string): never => {
      throw new SnapshotFormatError(file, detail)
    }
    const expected = header.pageCount * INDEX_ENTRY_SIZE
    if (indexBytes.length !== expected) fail(`index is ${indexBytes.length} bytes, expected ${expected}`)
    const crc = crc32(indexBytes)
    if (crc !== header.indexCrc) {
      fail(`index checksum mismatch (stored ${hex32(header.indexCrc)}, computed ${hex32(crc)})`)
    }
    // Uint32Array needs 4-byte alignment.
    const bytes = indexBytes.byteOffset % 4 === 0 ? indexBytes : Buffer.from(indexBytes)
    const index = new SnapshotIndex(file, header, bytes)
    const w = index.words
    const ps = header.pageSize
    const dataSize = header.dataSizeBytes
    const zeroCrc = zeroPageCrc(ps)
    let pos = 0
    let zero = 0
    let lz4 = 0
    let raw = 0
    for (let p = 0, i = 0; p < header.pageCount; p++, i += 4) {
      const hi = w[i + 1]
      const offset = w[i] + (hi & 0xffff) * TWO_32
      const kind = (hi >>> 16) & 0xff
      const length = w[i + 2]
      if (hi >>> 24 !== 0) fail(`index entry ${p}: reserved byte is ${hi >>> 24}, expected 0`)
      if (kind === KIND_ZERO) {
        if (length !== 0) fail(`index entry ${p}: zero page with stored length ${length}`)
        if (w[i + 3] !== zeroCrc) fail(`index entry ${p}: zero page with checksum ${hex32(w[i + 3])}, expected ${hex32(zeroCrc)}`)
        zero++
      } else if (kind === KIND_LZ4) {
        if (length === 0 || length >= ps) fail(`index entry ${p}: LZ4 page with stored length ${length} (must be 1..${ps - 1})`)
        lz4++
      } else if (kind === KIND_RAW) {
        if (length !== ps) fail(`index entry ${p}: raw page with stored length ${length}, expected ${ps}`)
        raw++
      } else {
        fail(`index entry ${p}: unknown page kind ${kind}`)
      }
      if (offset + length > dataSize) {
        fail(`index entry ${p} points past end of data (offset ${offset} + length ${length} > data size ${dataSize})`)
      }
      if (offset !== pos) {
        fail(`index entry ${p}: offset ${offset}, expected ${pos} (stored pages must be contiguous, in page order)`)
      }
      pos += length
    }
    if (pos !== dataSize) fail(`index covers ${pos} bytes of data, header says ${dataSize}`)
    if (zero !== header.zeroPages || lz4 !== header.lz4Pages || raw !== header.rawPages) {
      fail(`index has ${zero} zero, ${lz4} lz4, ${raw} raw pages; header says ` + `${header.zeroPages}, ${header.lz4Pages}, ${header.rawPages}`)
    }
    return index
  }

  kindOf(page: number): PageKind {
    return ((this.words[page * 4 + 1] >>> 16) & 0xff) as PageKind
  }

  /** Offset of the page's stored bytes, relative to the data offset (for a zero page: where
   * the next stored page begins). */
  storedOffset(page: number): number {
    const i = page * 4
    return this.words[i] + (this.words[i + 1] & 0xffff) * TWO_32
  }

  storedLength(page: number): number {
    return this.words[page * 4 + 2]
  }

  crcOf(page: number): number {
    return this.words[page * 4 + 3]
  }

  /** Data-relative start of the bytes holding pages first..first+count-1 (count >= 1). */
  runStart(first: number): number {
    return this.storedOffset(first)
  }

  /** Data-relative end (exclusive) of the bytes holding pages first..last. */
  runEnd(last: number): number {
    return this.storedOffset(last) + this.words[last * 4 + 2]
  }

  entry(page: number): IndexEntry {
    return decodeIndexEntry(this.bytes, page * INDEX_ENTRY_SIZE)
  }
}
