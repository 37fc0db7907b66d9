// Opens a snapshot that lives in an object store: the header and index only, with ranged
// GETs (usually one), validated exactly as the local reader validates a file.
import { createHash } from 'node:crypto'
import { SnapshotFormatError, decodeHeader, type SnapshotHeader } from '../snapshot/format.js'
import { SnapshotIndex } from '../snapshot/snapshot-index.js'
import type { RangeSource } from './s3-object.js'

/** The first GET asks for this much: the header and, for snapshots up to ~4000 pages, the
 * whole index, in one round trip. */
const FIRST_READ_BYTES = 64 * 1024

export interface RemoteSnapshot {
  url: string
  objectSizeBytes: number
  etag: string
  header: SnapshotHeader
  /** The index bytes, in a SharedArrayBuffer so session workers share them without a copy. */
  indexBytes: Buffer
  index: SnapshotIndex
  /** Stable name of this snapshot version (URL, ETag, size, index CRC): its cache directory. */
  id: string
  /** What opening it cost. */
  gets: number
  bytesFetched: number
}

export async function openRemoteSnapshot(source: RangeSource): Promise<RemoteSnapshot> {
  const url = source.url
  const first = await source.read(0, FIRST_READ_BYTES, true)
  let gets = 1
  let bytesFetched = first.bytes.length
  const header = decodeHeader(first.bytes, url)
  const end = header.dataOffset + header.dataSizeBytes
  if (first.objectSizeBytes < end) {
    throw new SnapshotFormatError(url, `truncated: object is ${first.objectSizeBytes} bytes, the snapshot it describes is ${end}`)
  }
  if (first.objectSizeBytes > end) {
    throw new SnapshotFormatError(
      url,
      `${first.objectSizeBytes - end} unexpected bytes after the end of data (object is ${first.objectSizeBytes} bytes, snapshot ${end})`,
    )
  }
  const indexLength = header.dataOffset - header.indexOffset
  const indexBytes = Buffer.from(new SharedArrayBuffer(indexLength))
  const have = Math.max(0, Math.min(first.bytes.length, header.dataOffset) - header.indexOffset)
  first.bytes.copy(indexBytes, 0, header.indexOffset, header.indexOffset + have)
  if (have < indexLength) {
    const rest = await source.read(header.indexOffset + have, indexLength - have)
    gets++
    bytesFetched += rest.bytes.length
    rest.bytes.copy(indexBytes, have)
  }
  const index = SnapshotIndex.parse(url, header, indexBytes)
  const id = createHash('sha256').update(`${url}\n${first.etag}\n${first.objectSizeBytes}\n${header.indexCrc}`).digest('hex').slice(0, 24)
  return { url, objectSizeBytes: first.objectSizeBytes, etag: first.etag, header, indexBytes, index, id, gets, bytesFetched }
}
