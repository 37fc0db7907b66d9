// SnapshotReader: a PageSource over a local snapshot file. The index stays in memory, the
// data on disk: each readPages is one pread of the run's stored bytes, then decode in place
// (with the native codec, both in one call).

import { closeSync, constants, fstatSync, openSync } from 'node:fs'
import { errnoName, preadInto, UffdError } from '../uffd/index.js'
import { FaultlineError, fileError } from '../errors.js'
import { HEADER_SIZE, SnapshotFormatError, decodeHeader, type PageKind, type SnapshotHeader } from './format.js'
import { PageDecoder } from './decoder.js'
import { END_OF_FILE } from './native-codec.js'
import type { PageSource } from './page-source.js'
import { SnapshotIndex } from './snapshot-index.js'

/** Largest single read(2); Linux caps one call at ~2 GiB. */
const MAX_READ = 1 << 30

export class SnapshotReader implements PageSource {
  readonly path: string
  readonly header: SnapshotHeader
  readonly index: SnapshotIndex
  readonly pageSize: number
  readonly pageCount: number
  readonly imageSizeBytes: number
  readonly chunkPages: number
  readonly fileSizeBytes: number
  /** The open file's device and inode: what it is, whatever its path names now. */
  readonly dev: bigint
  readonly ino: bigint
  private fd: number
  /** False when the caller lent the descriptor (fromDescriptor): close() leaves it open. */
  private readonly ownsFd: boolean
  private readonly dataOffset: number
  private readonly decoder: PageDecoder
  private buf: Buffer
  /** Stored bytes read from the file by readPages so far. */
  bytesRead = 0

  private constructor(path: string, fd: number, ownsFd: boolean, st: { size: number; dev: bigint; ino: bigint }, index: SnapshotIndex) {
    this.path = path
    this.fd = fd
    this.ownsFd = ownsFd
    this.dev = st.dev
    this.ino = st.ino
    const fileSizeBytes = st.size
    this.fileSizeBytes = fileSizeBytes
    this.index = index
    this.header = index.header
    this.pageSize = index.pageSize
    this.pageCount = index.pageCount
    this.imageSizeBytes = index.imageSizeBytes
    this.chunkPages = index.chunkPages
    this.dataOffset = index.header.dataOffset
    this.decoder = new PageDecoder(index)
    // Room for one chunk of incompressible pages; grows if a longer run comes.
    this.buf = Buffer.allocUnsafeSlow(this.chunkPages * this.pageSize)
  }

  /**
   * Open and validate a snapshot: header, file length (a truncated or over-long file is
   * rejected), index CRC and every index entry. Throws SnapshotFormatError, or a
   * FaultlineError for a file that cannot be opened.
   */
  static open(path: string): SnapshotReader {
    let fd: number
    try {
      // O_NONBLOCK: a FIFO opens at once (and is refused as not a regular file) instead of
      // waiting for a writer; it changes nothing for a regular file.
      fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
    } catch (err) {
      throw fileError(path, err)
    }
    try {
      return SnapshotReader.read(path, fd, true)
    } catch (err) {
      closeSync(fd)
      throw err
    }
  }

  /** The same checks over a descriptor the caller keeps open (a server's one descriptor of its
   * snapshot, shared by its session workers): close() does not close it. */
  static fromDescriptor(fd: number, path: string): SnapshotReader {
    return SnapshotReader.read(path, fd, false)
  }

  private static read(path: string, fd: number, ownsFd: boolean): SnapshotReader {
    const st = fstatSync(fd, { bigint: true })
    if (!st.isFile()) throw new FaultlineError(`${path}: not a regular file`)
    const size = Number(st.size)
    const head = Buffer.alloc(Math.min(HEADER_SIZE, size))
    readFully(fd, head, head.length, 0, path)
    const header = decodeHeader(head, path)
    const end = header.dataOffset + header.dataSizeBytes
    if (size < end) {
      throw new SnapshotFormatError(path, `truncated: file is ${size} bytes, the snapshot it describes is ${end}`)
    }
    if (size > end) {
      throw new SnapshotFormatError(path, `${size - end} unexpected bytes after the end of data (file is ${size} bytes, snapshot ${end})`)
    }
    const indexBytes = Buffer.allocUnsafeSlow(header.dataOffset - header.indexOffset)
    readFully(fd, indexBytes, indexBytes.length, header.indexOffset, path)
    return new SnapshotReader(path, fd, ownsFd, { size, dev: st.dev, ino: st.ino }, SnapshotIndex.parse(path, header, indexBytes))
  }

  kindOf(page: number): PageKind {
    return this.index.kindOf(page)
  }

  readPages(first: number, count: number, into: Buffer, intoOffset: number): void {
    const ps = this.pageSize
    if (
      !(first >= 0 && count >= 0 && first + count <= this.pageCount && intoOffset >= 0 && intoOffset + count * ps <= into.length) ||
      first % 1 !== 0 ||
      count % 1 !== 0 ||
      intoOffset % 1 !== 0
    ) {
      throw new RangeError(`${this.path}: readPages(${first}, ${count}, into[${into.length}], ${intoOffset}) out of range (${this.pageCount} pages of ${ps})`)
    }
    if (count === 0) return
    if (this.fd < 0) throw new FaultlineError(`${this.path}: reader is closed`)
    const index = this.index
    const start = index.runStart(first)
    const len = index.runEnd(first + count - 1) - start
    if (len > this.buf.length) this.buf = Buffer.allocUnsafeSlow(len)
    if (this.decoder.native !== undefined) {
      // One native call reads and decodes the run.
      const r = this.decoder.readDecodeRun(this.fd, this.dataOffset + start, len, this.buf, first, count, into, intoOffset)
      if (r !== 0) {
        const { offset, errno } = this.decoder.readFailure
        throw r === END_OF_FILE ? truncatedAt(this.path, offset) : readErrorAt(this.path, offset, errnoName(errno))
      }
      this.bytesRead += len
      return
    }
    if (len > 0) {
      readFully(this.fd, this.buf, len, this.dataOffset + start, this.path)
      this.bytesRead += len
    }
    this.decoder.decodeRun(first, count, this.buf, 0, into, intoOffset)
  }

  close(): void {
    if (this.fd >= 0) {
      if (this.ownsFd) closeSync(this.fd)
      this.fd = -1
    }
  }
}

function readFully(fd: number, buf: Buffer, len: number, position: number, path: string): void {
  // One pread for the whole run almost always; only a short read takes a view to go on.
  let got = 0
  while (got < len) {
    let n: number
    try {
      n = preadInto(fd, got === 0 ? buf : buf.subarray(got), Math.min(len - got, MAX_READ), position + got)
    } catch (err) {
      throw readErrorAt(path, position + got, err instanceof UffdError ? err.errnoName : String(err), err)
    }
    if (n === 0) throw truncatedAt(path, position + got)
    got += n
  }
}

/** The two ways reading stored bytes fails, whichever codec read them. */
function truncatedAt(path: string, byte: number): SnapshotFormatError {
  return new SnapshotFormatError(path, `truncated: unexpected end of file at byte ${byte}`)
}

function readErrorAt(path: string, byte: number, code: string, cause?: unknown): FaultlineError {
  return new FaultlineError(`${path}: read at byte ${byte}: ${code}`, { cause })
}
