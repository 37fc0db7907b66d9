// TraceRecorder: the session's TraceSink. Appends fixed-size records to a preallocated buffer
// (no allocation per record) and writes it out when full and on close. Records are stored as
// 32-bit words (a record is 7 of them): plain typed-array stores stay cheap even before the
// JIT has optimized record(), which in a fresh session worker it has not.
import { accessSync, closeSync, constants, statSync, writeSync } from 'node:fs'
import { endianness } from 'node:os'
import { dirname } from 'node:path'
import { FaultlineError, fileError } from '../errors.js'
import {
  encodeTraceHeader,
  H_FLAGS,
  H_RECORD_COUNT,
  R_CAUSE,
  R_COUNT,
  R_FLAGS,
  R_LATENCY_NS,
  R_PAGE,
  R_THREAD_ID,
  R_TIME_NS,
  TRACE_HEADER_COMPLETE,
  TRACE_MAX_LATENCY_NS,
  TRACE_RECORD_BYTES,
  writeU64,
  type TraceRegion,
} from './format.js'
import { checkOutputPath, openOutputInPlace, type FileIdentity } from '../util/output-file.js'

const WORDS = TRACE_RECORD_BYTES / 4
// Word indices of the record fields (the format's byte offsets / 4); cause and flags share one.
const W_TIME = R_TIME_NS / 4,
  W_PAGE = R_PAGE / 4,
  W_COUNT = R_COUNT / 4,
  W_LATENCY = R_LATENCY_NS / 4
const W_THREAD = R_THREAD_ID / 4,
  W_CAUSE_FLAGS = R_CAUSE / 4,
  FLAGS_SHIFT = (R_FLAGS - R_CAUSE) * 8

/** Records buffered before a write: ~1 MiB, so a write is rare and one syscall. */
const BUFFER_RECORDS = 37449

/** Fails now, with the path named, if a trace could not be written at `path` later, or would
 * overwrite one of `inputs` (the snapshot, a working-set trace...) or a non-regular file. */
export function checkTracePath(path: string, inputs: readonly FileIdentity[] = []): void {
  let isDir = false
  try {
    isDir = statSync(path).isDirectory()
  } catch {
    /* does not exist yet: fine */
  }
  if (isDir) throw new FaultlineError(`--trace ${path}: is a directory`)
  checkOutputPath(path, `--trace ${path}`, inputs)
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
  /** Files the trace must never overwrite (checked on the descriptor opened). */
  inputs?: readonly FileIdentity[]
}

export class TraceRecorder {
  readonly path: string
  /** Records written so far (buffered ones included). */
  recordCount = 0
  private fdValue: number
  private readonly buffer = Buffer.alloc(BUFFER_RECORDS * TRACE_RECORD_BYTES)
  /** The buffer as little-endian words (the host is checked to be little-endian). */
  private readonly words = new Uint32Array(this.buffer.buffer, this.buffer.byteOffset, BUFFER_RECORDS * WORDS)
  private buffered = 0
  private readonly header: Buffer

  /** Creates (truncates) the file and writes the header. */
  constructor(opts: TraceRecorderOptions) {
    if (endianness() !== 'LE') throw new FaultlineError(`--trace ${opts.path}: recording needs a little-endian host`)
    this.path = opts.path
    // Touch every page of the buffer now (it is fresh, lazily mapped memory), so no record on
    // the fault path takes a page fault of the server's own.
    this.buffer.fill(1)
    this.buffer.fill(0)
    this.header = encodeTraceHeader({
      pageSize: opts.pageSize,
      complete: false,
      sessionId: opts.sessionId,
      pid: opts.pid,
      recordCount: 0,
      snapshotPages: opts.snapshotPages,
      startUnixMs: Date.now(),
      policy: opts.policy,
      regions: opts.regions,
    })
    // Written in place as the session goes (a trace cut short is marked incomplete, and
    // readable up to its last whole record), once the file opened is known not to be an input.
    this.fdValue = openOutputInPlace(opts.path, `--trace ${opts.path}`, opts.inputs ?? [])
    try {
      // No position: write(2), so records follow at the file offset; close() rewrites the
      // header in place with pwrite(2).
      writeSync(this.fdValue, this.header, 0, this.header.length)
    } catch (err) {
      closeSync(this.fdValue)
      throw fileError(opts.path, err, 'cannot write trace')
    }
  }

  /** The trace file's descriptor (-1 once closed). */
  get fd(): number {
    return this.fdValue
  }

  /** One record; see the format in src/trace/format.ts. Allocation-free. */
  record(timeNs: number, page: number, count: number, cause: number, flags: number, threadId: number, latencyNs: number): void {
    if (this.buffered === BUFFER_RECORDS) this.flush()
    const w = this.words
    const at = this.buffered * WORDS
    const hi = Math.floor(timeNs / 4294967296)
    w[at + W_TIME] = timeNs - hi * 4294967296
    w[at + W_TIME + 1] = hi // stored as u32: the two's complement of a negative time
    w[at + W_PAGE] = page
    w[at + W_COUNT] = count
    w[at + W_LATENCY] = latencyNs > TRACE_MAX_LATENCY_NS ? TRACE_MAX_LATENCY_NS : latencyNs < 0 ? 0 : latencyNs
    w[at + W_THREAD] = threadId
    w[at + W_CAUSE_FLAGS] = cause | (flags << FLAGS_SHIFT)
    this.buffered++
    this.recordCount++
  }

  /** Writes buffered records to the file. */
  flush(): void {
    if (this.buffered === 0 || this.fdValue < 0) return
    const bytes = this.buffered * TRACE_RECORD_BYTES
    let done = 0
    try {
      while (done < bytes) done += writeSync(this.fdValue, this.buffer, done, bytes - done)
    } catch (err) {
      throw fileError(this.path, err, 'cannot write trace')
    }
    this.buffered = 0
  }

  /** Flushes, stores the final record count, marks the file complete and closes it. */
  close(): void {
    if (this.fdValue < 0) return
    try {
      this.flush()
      writeU64(this.header, H_RECORD_COUNT, this.recordCount)
      this.header.writeUInt32LE(this.header.readUInt32LE(H_FLAGS) | TRACE_HEADER_COMPLETE, H_FLAGS)
      writeSync(this.fdValue, this.header, 0, this.header.length, 0)
    } finally {
      closeSync(this.fdValue)
      this.fdValue = -1
    }
  }
}
