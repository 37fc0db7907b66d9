// TraceRecorder: the session's TraceSink. Appends fixed-size records to a preallocated buffer
// (no allocation per record) and writes it out when full and on close.
import { accessSync, closeSync, constants, openSync, statSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'
import { FaultlineError, fileError } from '../errors.js'
import {
  encodeTraceHeader, H_FLAGS, H_RECORD_COUNT, R_CAUSE, R_COUNT, R_FLAGS, R_LATENCY_NS, R_PAGE, R_THREAD_ID,
  R_TIME_NS, TRACE_HEADER_COMPLETE, TRACE_MAX_LATENCY_NS, TRACE_RECORD_BYTES, writeU64, type TraceRegion,
} from './format.js'

/** Records buffered before a write: ~1 MiB, so a write is rare and one syscall. */
const BUFFER_RECORDS = 37449

/** Fails now, with the path named, if a trace could not be written at `path` later. */
export function checkTracePath(path: string): void {
  let isDir = false
  try { isDir = statSync(path).isDirectory() } catch { /* does not exist yet: fine */ }
  if (isDir) throw new FaultlineError(`--trace ${path}: is a directory`)
  try {
    accessSync(dirname(path), constants.W_OK)
  } catch (err) {
    throw fileError(`--trace ${path}`, err, `cannot write in ${dirname(path)}`)
  }
}

export interface TraceRecorderOptions {
  path: string
  pageSize: number
  snapshotPages: number
  sessionId: number
  pid: number
  policy: string
  regions: TraceRegion[]
}

export class TraceRecorder {
  readonly path: string
  /** Records written so far (buffered ones included). */
  recordCount = 0
  private fd: number
  private readonly buffer = Buffer.alloc(BUFFER_RECORDS * TRACE_RECORD_BYTES)
  private readonly view = new DataView(this.buffer.buffer, this.buffer.byteOffset, this.buffer.byteLength)
  private buffered = 0
  private readonly header: Buffer

  /** Creates (truncates) the file and writes the header. */
  constructor(opts: TraceRecorderOptions) {
    this.path = opts.path
    this.header = encodeTraceHeader({
      pageSize: opts.pageSize, complete: false, sessionId: opts.sessionId, pid: opts.pid, recordCount: 0,
      snapshotPages: opts.snapshotPages, startUnixMs: Date.now(), policy: opts.policy, regions: opts.regions,
    })
    try {
      this.fd = openSync(opts.path, 'w', 0o644)
      // No position: write(2), so records follow at the file offset; close() rewrites the
      // header in place with pwrite(2).
      writeSync(this.fd, this.header, 0, this.header.length)
    } catch (err) {
      throw fileError(opts.path, err, 'cannot write trace')
    }
  }

  /** One record; see the format in src/trace/format.ts. Allocation-free. */
  record(timeNs: number, page: number, count: number, cause: number, flags: number, threadId: number, latencyNs: number): void {
    if (this.buffered === BUFFER_RECORDS) this.flush()
    const v = this.view
    const at = this.buffered * TRACE_RECORD_BYTES
    const hi = Math.floor(timeNs / 4294967296)
    v.setUint32(at + R_TIME_NS, timeNs - hi * 4294967296, true)
    v.setInt32(at + R_TIME_NS + 4, hi, true)
    v.setUint32(at + R_PAGE, page, true)
    v.setUint32(at + R_COUNT, count, true)
    v.setUint32(at + R_LATENCY_NS, latencyNs > TRACE_MAX_LATENCY_NS ? TRACE_MAX_LATENCY_NS : latencyNs < 0 ? 0 : latencyNs, true)
    v.setUint32(at + R_THREAD_ID, threadId, true)
    v.setUint8(at + R_CAUSE, cause)
    v.setUint8(at + R_FLAGS, flags)
    v.setUint16(at + R_FLAGS + 1, 0, true)
    this.buffered++
    this.recordCount++
  }

  /** Writes buffered records to the file. */
  flush(): void {
    if (this.buffered === 0 || this.fd < 0) return
    const bytes = this.buffered * TRACE_RECORD_BYTES
    let done = 0
    try {
      while (done < bytes) done += writeSync(this.fd, this.buffer, done, bytes - done)
    } catch (err) {
      throw fileError(this.path, err, 'cannot write trace')
    }
    this.buffered = 0
  }

  /** Flushes, stores the final record count, marks the file complete and closes it. */
  close(): void {
    if (this.fd < 0) return
    try {
      this.flush()
      writeU64(this.header, H_RECORD_COUNT, this.recordCount)
      this.header.writeUInt32LE(this.header.readUInt32LE(H_FLAGS) | TRACE_HEADER_COMPLETE, H_FLAGS)
      writeSync(this.fd, this.header, 0, this.header.length, 0)
    } finally {
      closeSync(this.fd)
      this.fd = -1
    }
  }
}
