// createSnapshot: stream a raw memory image into a version-1 snapshot (zero / LZ4 / raw
// pages, CRC-32 each), reading and writing in blocks so the image never sits in memory.

import { constants as bufferConstants } from 'node:buffer'
import { constants, fsync, write } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { endianness } from 'node:os'
import { promisify } from 'node:util'
import { crc32 } from 'node:zlib'
import { FaultlineError, fileError } from '../errors.js'
import { identityOfFd, ReplacementFile } from '../util/output-file.js'
import {
  CHECKSUM_CRC32,
  COMPRESSION_LZ4,
  DEFAULT_CHUNK_PAGES,
  DEFAULT_PAGE_SIZE,
  FORMAT_VERSION,
  HEADER_SIZE,
  INDEX_ENTRY_SIZE,
  KIND_LZ4,
  KIND_RAW,
  KIND_ZERO,
  MAX_CHUNK_PAGES,
  MAX_PAGE_SIZE,
  MIN_PAGE_SIZE,
  encodeHeader,
  isValidChunkPages,
  isValidPageSize,
  layoutFor,
  type SnapshotHeader,
} from './format.js'
import { lz4 } from './lz4.js'

const TWO_32 = 4294967296
const DEFAULT_BLOCK_BYTES = 4 << 20
/** The index (16 bytes a page) is built in one Buffer, and readers hold it in one too. */
const MAX_INDEX_BYTES = bufferConstants.MAX_LENGTH
const writeAt = promisify(write)
const fsyncFd = promisify(fsync)

export interface CreateOptions {
  /** Bytes per page: a power of two from 4096 to 65536 (default 4096). */
  pageSize?: number
  /** Pages per chunk, recorded for ranged readers (default 64). */
  chunkPages?: number
  /** Bytes read per block (rounded down to whole pages; default 4 MiB). */
  blockBytes?: number
  /** Called after each block with the raw bytes consumed so far. */
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

export interface CreateResult {
  header: SnapshotHeader
  fileSizeBytes: number
  elapsedMs: number
}

/**
 * Write `snapPath` from the raw image at `rawPath`. Writes a temporary file beside `snapPath`
 * (created exclusively, see ReplacementFile), fsyncs it and renames it over `snapPath` at the
 * end; the temporary is removed on failure or interruption. `snapPath` must not be the raw
 * image (by device and inode) nor an existing non-regular file.
 */
export async function createSnapshot(rawPath: string, snapPath: string, opts: CreateOptions = {}): Promise<CreateResult> {
  const t0 = performance.now()
  const pageSize = opts.pageSize ?? DEFAULT_PAGE_SIZE
  const chunkPages = opts.chunkPages ?? DEFAULT_CHUNK_PAGES
  if (!isValidPageSize(pageSize)) {
    throw new FaultlineError(`page size ${pageSize}: must be a power of two from ${MIN_PAGE_SIZE} to ${MAX_PAGE_SIZE}`)
  }
  if (!isValidChunkPages(chunkPages)) throw new FaultlineError(`chunk pages ${chunkPages}: must be an integer from 1 to ${MAX_CHUNK_PAGES}`)
  if (endianness() !== 'LE') throw new FaultlineError('faultline snapshots need a little-endian host')
  const codec = lz4()

  let raw: FileHandle | undefined
  let out: ReplacementFile | undefined
  try {
    try {
      // O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting for a writer.
      raw = await open(rawPath, constants.O_RDONLY | constants.O_NONBLOCK)
    } catch (err) {
      throw fileError(rawPath, err)
    }
    let st
    try {
      st = await raw.stat()
    } catch (err) {
      throw fileError(rawPath, err)
    }
    if (!st.isFile()) throw new FaultlineError(`${rawPath}: not a regular file`)
    const imageSize = st.size
    if (imageSize === 0) throw new FaultlineError(`${rawPath}: raw image is empty, nothing to snapshot`)
    const pageCount = Math.ceil(imageSize / pageSize)
    if (pageCount * INDEX_ENTRY_SIZE > MAX_INDEX_BYTES) {
      const most = Math.floor(MAX_INDEX_BYTES / INDEX_ENTRY_SIZE) * pageSize
      throw new FaultlineError(
        `${rawPath}: raw image is ${imageSize} bytes; at most ${most} with ${pageSize}-byte pages ` +
          `(the index, ${INDEX_ENTRY_SIZE} bytes a page, is held in memory; a larger --page-size takes more)`,
      )
    }
    const { indexOffset, dataOffset } = layoutFor(pageCount)

    const blockPages = Math.max(1, Math.floor((opts.blockBytes ?? DEFAULT_BLOCK_BYTES) / pageSize))
    const blockBytes = blockPages * pageSize
    // Two input and two output blocks: read block n+1 and write block n-1 while encoding n.
    const inBufs = [Buffer.allocUnsafeSlow(blockBytes), Buffer.allocUnsafeSlow(blockBytes)]
    const inViews = inBufs.map(b => Array.from({ length: blockPages }, (_, k) => b.subarray(k * pageSize, (k + 1) * pageSize)))
    const inWords = inBufs.map(b => new Int32Array(b.buffer, b.byteOffset, b.length >>> 2))
    const outBufs = [Buffer.allocUnsafeSlow(blockBytes), Buffer.allocUnsafeSlow(blockBytes)]
    const zeroPage = Buffer.alloc(pageSize)
    const zeroCrc = crc32(zeroPage)
    const indexBytes = Buffer.alloc(pageCount * INDEX_ENTRY_SIZE)
    const w = new Uint32Array(indexBytes.buffer, indexBytes.byteOffset, indexBytes.length >>> 2)

    out = ReplacementFile.create(snapPath, { inputs: [identityOfFd(raw.fd, `the raw image ${rawPath}`)], removeOnSignal: true })
    const tmpPath = out.tempPath
    const rawFh = raw
    const outFd = out.fd

    let dataPos = 0
    let zero = 0
    let lz = 0
    let rawCount = 0
    const blocks = Math.ceil(pageCount / blockPages)
    const readBlock = (b: number): Promise<number> => {
      const pos = b * blockBytes
      const p = readFully(rawFh, inBufs[b & 1], Math.min(blockBytes, imageSize - pos), pos, rawPath)
      p.catch(() => {}) // awaited below; don't let an early failure elsewhere leave it unhandled
      return p
    }
    let pendingRead = readBlock(0)
    let pendingWrite: Promise<void> = Promise.resolve()
    for (let b = 0; b < blocks; b++) {
      const got = await pendingRead
      if (b + 1 < blocks) pendingRead = readBlock(b + 1)
      const inBuf = inBufs[b & 1]
      const views = inViews[b & 1]
      const words = inWords[b & 1]
      const outBuf = outBufs[b & 1]
      const pages = Math.ceil(got / pageSize)
      if (got < pages * pageSize) inBuf.fill(0, got, pages * pageSize)
      const blockStart = dataPos
      let o = 0
      for (let k = 0, p = b * blockPages, i = p * 4, off = 0; k < pages; k++, p++, i += 4, off += pageSize) {
        const pos = blockStart + o
        w[i] = pos % TWO_32
        const wi = off >>> 2
        // Most non-zero pages have a non-zero word near the start: skip the memcmp for them.
        const isZero =
          (words[wi] | words[wi + 1] | words[wi + 2] | words[wi + 3] | words[wi + 4] | words[wi + 5] | words[wi + 6] | words[wi + 7]) === 0 &&
          zeroPage.compare(inBuf, off, off + pageSize) === 0
        if (isZero) {
          w[i + 1] = Math.floor(pos / TWO_32) | (KIND_ZERO << 16)
          w[i + 2] = 0
          w[i + 3] = zeroCrc
          zero++
          continue
        }
        const view = views[k]
        // Limit the output to pageSize - 1: a page LZ4 cannot shrink is stored raw.
        const n = codec.encodeBlock(view, outBuf, o, o + pageSize - 1)
        let len: number
        let kind: number
        if (n > 0 && n < pageSize) {
          len = n
          kind = KIND_LZ4
          lz++
        } else {
          inBuf.copy(outBuf, o, off, off + pageSize)
          len = pageSize
          kind = KIND_RAW
          rawCount++
        }
        w[i + 1] = Math.floor(pos / TWO_32) | (kind << 16)
        w[i + 2] = len
        w[i + 3] = crc32(view)
        o += len
      }
      dataPos += o
      await pendingWrite
      pendingWrite = writeFully(outFd, outBuf, o, dataOffset + blockStart, tmpPath)
      pendingWrite.catch(() => {})
      opts.onProgress?.(Math.min(imageSize, (b + 1) * blockBytes), imageSize)
    }
    await pendingWrite

    const header: SnapshotHeader = {
      version: FORMAT_VERSION,
      headerSize: HEADER_SIZE,
      pageSize,
      chunkPages,
      pageCount,
      imageSizeBytes: imageSize,
      indexOffset,
      dataOffset,
      dataSizeBytes: dataPos,
      indexCrc: crc32(indexBytes),
      checksumAlgorithm: CHECKSUM_CRC32,
      compression: COMPRESSION_LZ4,
      flags: 0,
      zeroPages: zero,
      lz4Pages: lz,
      rawPages: rawCount,
    }
    await writeFully(outFd, indexBytes, indexBytes.length, indexOffset, tmpPath)
    const headerBytes = encodeHeader(header)
    await writeFully(outFd, headerBytes, headerBytes.length, 0, tmpPath)
    try {
      await fsyncFd(outFd)
    } catch (err) {
      throw fileError(tmpPath, err, 'fsync')
    }
    out.commit()
    out = undefined
    await raw.close()
    raw = undefined
    return { header, fileSizeBytes: dataOffset + dataPos, elapsedMs: performance.now() - t0 }
  } catch (err) {
    out?.abort()
    throw err
  } finally {
    await raw?.close().catch(() => {})
  }
}

async function readFully(fh: FileHandle, buf: Buffer, len: number, position: number, path: string): Promise<number> {
  let got = 0
  while (got < len) {
    let n: number
    try {
      ;({ bytesRead: n } = await fh.read(buf, got, len - got, position + got))
    } catch (err) {
      throw fileError(path, err, 'read')
    }
    if (n === 0) throw new FaultlineError(`${path}: raw image shrank while being read (ended at byte ${position + got})`)
    got += n
  }
  return got
}

async function writeFully(fd: number, buf: Buffer, len: number, position: number, path: string): Promise<void> {
  let done = 0
  while (done < len) {
    let n: number
    try {
      ;({ bytesWritten: n } = await writeAt(fd, buf, done, len - done, position + done))
    } catch (err) {
      throw fileError(path, err, 'write')
    }
    done += n
  }
}
