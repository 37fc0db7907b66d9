// A snapshot's per-page storage facts (kind and stored length): all the trace simulator needs
// of a snapshot. Read from the snapshot's index, or from a page-map file small enough to commit
// beside real traces (traces/vm/*.pagemap.gz) when the snapshot itself is not kept.
import { readFileSync, writeFileSync } from 'node:fs'
import { gunzipSync, gzipSync } from 'node:zlib'
import { FaultlineError, fileError } from '../errors.js'
import { SnapshotReader } from '../snapshot/reader.js'

/** A page map file that is not one, or not valid. */
export class PageMapError extends FaultlineError {
  override readonly code: string = 'FL_ERR_PAGE_MAP'
}

export interface PageMap {
  /** Where it came from (a snapshot or a page-map file), for reports. */
  source: string
  pageSize: number
  pageCount: number
  /** Pages per chunk of the snapshot (what a remote store fetches at once). */
  chunkPages: number
  /** 0 zero, 1 LZ4, 2 raw, per page. */
  kinds: Uint8Array
  /** Stored (compressed) bytes per page; 0 for a zero page. */
  storedBytes: Uint32Array
}

const MAGIC = Buffer.from('FLPGMAP\0', 'latin1')
const VERSION = 1
const HEADER_BYTES = 24

/** The page map of a snapshot file (its index is validated as `serve` validates it). */
export function pageMapFromSnapshot(path: string): PageMap {
  const reader = SnapshotReader.open(path)
  try {
    const { index } = reader
    const kinds = new Uint8Array(index.pageCount)
    const storedBytes = new Uint32Array(index.pageCount)
    for (let p = 0; p < index.pageCount; p++) {
      kinds[p] = index.kindOf(p)
      storedBytes[p] = index.storedLength(p)
    }
    return { source: path, pageSize: index.pageSize, pageCount: index.pageCount, chunkPages: index.chunkPages, kinds, storedBytes }
  } finally {
    reader.close()
  }
}

/** Writes `map` to `path` (gzip-compressed when the name ends in .gz). */
export function writePageMap(map: PageMap, path: string): void {
  const n = map.pageCount
  const buf = Buffer.alloc(HEADER_BYTES + n + 4 * n)
  MAGIC.copy(buf, 0)
  buf.writeUInt32LE(VERSION, 8)
  buf.writeUInt32LE(map.pageSize, 12)
  buf.writeUInt32LE(n, 16)
  buf.writeUInt32LE(map.chunkPages, 20)
  buf.set(map.kinds, HEADER_BYTES)
  for (let p = 0; p < n; p++) buf.writeUInt32LE(map.storedBytes[p], HEADER_BYTES + n + 4 * p)
  try {
    writeFileSync(path, path.endsWith('.gz') ? gzipSync(buf, { level: 9 }) : buf)
  } catch (err) {
    throw fileError(path, err, 'cannot write page map')
  }
}

/** Reads a page-map file, or the page map of a snapshot when `path` is one. */
export function readPageMap(path: string): PageMap {
  let raw: Buffer
  try {
    raw = readFileSync(path)
  } catch (err) {
    throw fileError(path, err, 'cannot read page map')
  }
  if (raw.length >= 8 && raw.toString('latin1', 0, 8) === 'FLTSNAP\0') return pageMapFromSnapshot(path)
  let buf = raw
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      buf = gunzipSync(raw)
    } catch (err) {
      throw new PageMapError(`${path}: not a valid gzip file: ${(err as Error).message}`)
    }
  }
  if (buf.length < HEADER_BYTES || !buf.subarray(0, 8).equals(MAGIC))
    throw new PageMapError(`${path}: not a faultline page map or snapshot (no FLPGMAP or FLTSNAP magic)`)
  const version = buf.readUInt32LE(8)
  if (version !== VERSION) throw new PageMapError(`${path}: page map version ${version} is not supported (this faultline reads ${VERSION})`)
  const pageSize = buf.readUInt32LE(12)
  const pageCount = buf.readUInt32LE(16)
  const chunkPages = buf.readUInt32LE(20)
  if (pageSize < 4096 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0)
    throw new PageMapError(`${path}: page size ${pageSize} is not a power of two from 4096 to 65536`)
  if (chunkPages < 1) throw new PageMapError(`${path}: chunk of ${chunkPages} pages`)
  if (buf.length !== HEADER_BYTES + 5 * pageCount)
    throw new PageMapError(`${path}: ${buf.length} bytes, expected ${HEADER_BYTES + 5 * pageCount} for ${pageCount} pages`)
  const kinds = Uint8Array.from(buf.subarray(HEADER_BYTES, HEADER_BYTES + pageCount))
  const storedBytes = new Uint32Array(pageCount)
  for (let p = 0; p < pageCount; p++) {
    const kind = kinds[p]
    const len = buf.readUInt32LE(HEADER_BYTES + pageCount + 4 * p)
    const ok = kind === 0 ? len === 0 : kind === 1 ? len > 0 && len < pageSize : kind === 2 ? len === pageSize : false
    if (!ok) throw new PageMapError(`${path}: page ${p} has kind ${kind} and ${len} stored bytes (zero pages store 0, LZ4 1..${pageSize - 1}, raw ${pageSize})`)
    storedBytes[p] = len
  }
  return { source: path, pageSize, pageCount, chunkPages, kinds, storedBytes }
}
