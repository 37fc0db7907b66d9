// Reads a trace file into columns (one typed array per field), checking its header and length,
// and derives the page lists other tools need: first-touch order and the working set.
import { closeSync, constants, fstatSync, openSync, readFileSync, readSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'
import { fileError } from '../errors.js'
import {
  decodeTraceHeader,
  H_HEADER_BYTES,
  R_CAUSE,
  R_COUNT,
  R_FLAGS,
  R_LATENCY_NS,
  R_PAGE,
  R_THREAD_ID,
  R_TIME_NS,
  InstallCause,
  TRACE_CAUSE_NAMES,
  TRACE_FIXED_HEADER_BYTES,
  TRACE_FLAG_BEFORE_RESUME,
  TRACE_FLAG_START_SET,
  TRACE_MAGIC,
  TRACE_RECORD_BYTES,
  TraceFormatError,
  type TraceHeader,
} from './format.js'

export interface Trace {
  path: string
  header: TraceHeader
  /** Records read. */
  length: number
  /** The recorder did not close the file (server killed): records up to the last whole one. */
  incomplete: boolean
  timeNs: Float64Array
  page: Uint32Array
  count: Uint32Array
  latencyNs: Uint32Array
  threadId: Uint32Array
  cause: Uint8Array
  flags: Uint8Array
}

function readAll(fd: number, into: Buffer, position: number): number {
  let got = 0
  while (got < into.length) {
    const n = readSync(fd, into, got, into.length - got, position + got)
    if (n === 0) break
    got += n
  }
  return got
}

/** Reads from a whole file held in memory (a decompressed trace), as readAll reads a file. */
class BufferFile {
  constructor(readonly bytes: Buffer) {}
  read(into: Buffer, position: number): number {
    return this.bytes.copy(into, 0, Math.min(position, this.bytes.length), Math.min(position + into.length, this.bytes.length))
  }
}

/** Reads and checks a whole trace; a gzip-compressed one (`gzip -9 run.fltrace`, as the
 * committed real-program traces are) is decompressed first. */
export function readTrace(path: string): Trace {
  let fd: number
  // O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting for a writer.
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  } catch (err) {
    throw fileError(path, err, 'cannot read trace')
  }
  let file: BufferFile | undefined
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new TraceFormatError(`${path}: cannot read trace: ${st.isDirectory() ? 'is a directory' : 'not a regular file'}`)
    const magic = Buffer.alloc(2)
    if (readAll(fd, magic, 0) === 2 && magic[0] === 0x1f && magic[1] === 0x8b) {
      try {
        file = new BufferFile(gunzipSync(readFileSync(fd)))
      } catch (err) {
        throw new TraceFormatError(`${path}: gzip-compressed, but it does not decompress: ${(err as Error).message}`)
      }
    }
  } catch (err) {
    closeSync(fd)
    throw err
  }
  const read = (into: Buffer, position: number): number => (file ? file.read(into, position) : readAll(fd, into, position))
  try {
    const fileBytes = file ? file.bytes.length : fstatSync(fd).size
    const fixed = Buffer.alloc(Math.min(fileBytes, TRACE_FIXED_HEADER_BYTES))
    read(fixed, 0)
    // The region table makes the header longer than its fixed part: read it all, then check.
    let full = fixed
    if (fixed.length === TRACE_FIXED_HEADER_BYTES && fixed.subarray(0, 8).equals(TRACE_MAGIC)) {
      const headerBytes = fixed.readUInt32LE(H_HEADER_BYTES)
      if (headerBytes > TRACE_FIXED_HEADER_BYTES && headerBytes <= fileBytes) {
        full = Buffer.alloc(headerBytes)
        read(full, 0)
      }
    }
    const header = decodeTraceHeader(full, fileBytes, path)
    const recordBytes = fileBytes - header.headerBytes
    let length: number
    if (header.complete) {
      if (recordBytes !== header.recordCount * TRACE_RECORD_BYTES) {
        throw new TraceFormatError(
          `${path}: header says ${header.recordCount} records (${header.recordCount * TRACE_RECORD_BYTES} bytes) but the file holds ${recordBytes} bytes of records`,
        )
      }
      length = header.recordCount
    } else {
      length = Math.floor(recordBytes / TRACE_RECORD_BYTES)
    }
    const buf = Buffer.alloc(length * TRACE_RECORD_BYTES)
    read(buf, header.headerBytes)
    const t: Trace = {
      path,
      header,
      length,
      incomplete: !header.complete,
      timeNs: new Float64Array(length),
      page: new Uint32Array(length),
      count: new Uint32Array(length),
      latencyNs: new Uint32Array(length),
      threadId: new Uint32Array(length),
      cause: new Uint8Array(length),
      flags: new Uint8Array(length),
    }
    for (let i = 0; i < length; i++) {
      const at = i * TRACE_RECORD_BYTES
      t.timeNs[i] = buf.readInt32LE(at + R_TIME_NS + 4) * 4294967296 + buf.readUInt32LE(at + R_TIME_NS)
      t.page[i] = buf.readUInt32LE(at + R_PAGE)
      t.count[i] = buf.readUInt32LE(at + R_COUNT)
      t.latencyNs[i] = buf.readUInt32LE(at + R_LATENCY_NS)
      t.threadId[i] = buf.readUInt32LE(at + R_THREAD_ID)
      const cause = buf[at + R_CAUSE]
      if (cause >= TRACE_CAUSE_NAMES.length) throw new TraceFormatError(`${path}: record ${i} has cause ${cause} (known: 0..${TRACE_CAUSE_NAMES.length - 1})`)
      t.cause[i] = cause
      t.flags[i] = buf[at + R_FLAGS]
    }
    return t
  } finally {
    closeSync(fd)
  }
}

/** Snapshot pages the guest faulted on, each once, in the order of their first fault. */
export function firstTouchOrder(t: Trace): number[] {
  const seen = new Set<number>()
  const order: number[] = []
  for (const i of timeOrder(t)) {
    if (t.cause[i] !== InstallCause.Fault) continue
    const p = t.page[i]
    if (!seen.has(p)) {
      seen.add(p)
      order.push(p)
    }
  }
  return order
}

/**
 * The working set a trace describes, in first-use order: the pages installed from the
 * recorded run's own start set (a working set it loaded, before or after it resumed), then the
 * pages the guest faulted on, so a trace recorded under `workingset:` describes the same set
 * again.
 */
export function workingSetPages(t: Trace): number[] {
  const seen = new Set<number>()
  const order: number[] = []
  const add = (p: number) => {
    if (!seen.has(p)) {
      seen.add(p)
      order.push(p)
    }
  }
  for (let i = 0; i < t.length; i++) {
    if ((t.flags[i] & (TRACE_FLAG_BEFORE_RESUME | TRACE_FLAG_START_SET)) === 0) continue
    for (let p = t.page[i], end = p + t.count[i]; p < end; p++) add(p)
  }
  for (const p of firstTouchOrder(t)) add(p)
  return order
}

/** Record indices sorted by time (stable: records of one instant keep file order). */
export function timeOrder(t: Trace): Uint32Array {
  const idx = new Uint32Array(t.length)
  let sorted = true
  for (let i = 0; i < t.length; i++) {
    idx[i] = i
    if (i > 0 && t.timeNs[i] < t.timeNs[i - 1]) sorted = false
  }
  if (sorted) return idx
  return Uint32Array.from(Array.from(idx).sort((a, b) => t.timeNs[a] - t.timeNs[b] || a - b))
}
