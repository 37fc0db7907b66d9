// The fault trace file format (version 1): a versioned header, then fixed-size little-endian
// records, one per fault or install. Shared by the recorder (writes) and the reader.
import { FaultlineError } from '../errors.js'

export const TRACE_MAGIC = Buffer.from('FLTRACE\0', 'latin1')
export const TRACE_VERSION = 1
/** Fixed part of the header; the region table follows it. */
export const TRACE_FIXED_HEADER_BYTES = 128
export const TRACE_REGION_BYTES = 16
export const TRACE_RECORD_BYTES = 28
export const TRACE_POLICY_BYTES = 64

/** Header `flags`: set when the recorder closed the file cleanly (record count is final). */
export const TRACE_HEADER_COMPLETE = 1

/** Record `flags`: the fault was a write. Same bit as UFFD_PAGEFAULT_FLAG_WRITE. */
export const TRACE_FLAG_WRITE = 1
/** Record `flags`: installed by the policy's onStart, before the guest was acknowledged. */
export const TRACE_FLAG_BEFORE_RESUME = 2
/** Record `flags`: installed from the policy's start set (a working set) once the guest ran. */
export const TRACE_FLAG_START_SET = 4

/** Why a page was installed: a record's `cause` here (so the numbers are fixed by the file
 * format), a run's in a policy's RunList (src/policy/policy.ts re-exports it), and a fetch's
 * priority in the chunk store (lower first). */
export const InstallCause = { Fault: 0, Prefetch: 1, Background: 2 } as const
export type InstallCause = (typeof InstallCause)[keyof typeof InstallCause]
/** Each InstallCause's name, indexed by its number. */
export const TRACE_CAUSE_NAMES = ['fault', 'prefetch', 'background'] as const

/** Largest latency a record holds (u32 ns, about 4.3 s); longer ones saturate. */
export const TRACE_MAX_LATENCY_NS = 0xffffffff

// Header field offsets.
export const H_MAGIC = 0
export const H_VERSION = 8
export const H_HEADER_BYTES = 12
export const H_RECORD_BYTES = 16
export const H_PAGE_SIZE = 20
export const H_FLAGS = 24
export const H_SESSION = 28
export const H_PID = 32
export const H_REGION_COUNT = 36
export const H_RECORD_COUNT = 40
export const H_SNAPSHOT_PAGES = 48
export const H_START_UNIX_MS = 56
export const H_POLICY = 64

// Record field offsets.
export const R_TIME_NS = 0
export const R_PAGE = 8
export const R_COUNT = 12
export const R_LATENCY_NS = 16
export const R_THREAD_ID = 20
export const R_CAUSE = 24
export const R_FLAGS = 25

/** A trace file that is malformed, or that cannot be used for what was asked of it (replayed
 * by the native guest, read as a working set). */
export class TraceFormatError extends FaultlineError {
  override readonly code: string = 'FL_ERR_TRACE_FORMAT'
}

/** One guest region as the trace header stores it. */
export interface TraceRegion {
  /** Guest virtual address of the region's first byte. */
  address: number
  /** Snapshot page backing the region's first page. */
  firstPage: number
  pageCount: number
}

export interface TraceHeader {
  version: number
  headerBytes: number
  recordBytes: number
  pageSize: number
  /** The recorder closed the file: `recordCount` is final. */
  complete: boolean
  sessionId: number
  pid: number
  recordCount: number
  snapshotPages: number
  /** Wall-clock time the session started, ms since the Unix epoch. */
  startUnixMs: number
  /** The `--policy` spec the session ran (truncated to 64 bytes). */
  policy: string
  regions: TraceRegion[]
}

/** Writes a u64 that fits a double exactly (< 2^53) without BigInt. */
export function writeU64(buf: Buffer, offset: number, value: number): void {
  const hi = Math.floor(value / 4294967296)
  buf.writeUInt32LE(value - hi * 4294967296, offset)
  buf.writeUInt32LE(hi, offset + 4)
}

export function readU64(buf: Buffer, offset: number): number {
  return buf.readUInt32LE(offset + 4) * 4294967296 + buf.readUInt32LE(offset)
}

export function traceHeaderBytes(regionCount: number): number {
  return TRACE_FIXED_HEADER_BYTES + TRACE_REGION_BYTES * regionCount
}

/** Encodes a header; `recordCount` and `complete` are rewritten when the recorder closes. */
export function encodeTraceHeader(h: Omit<TraceHeader, 'version' | 'headerBytes' | 'recordBytes'>): Buffer {
  const buf = Buffer.alloc(traceHeaderBytes(h.regions.length))
  TRACE_MAGIC.copy(buf, H_MAGIC)
  buf.writeUInt32LE(TRACE_VERSION, H_VERSION)
  buf.writeUInt32LE(buf.length, H_HEADER_BYTES)
  buf.writeUInt32LE(TRACE_RECORD_BYTES, H_RECORD_BYTES)
  buf.writeUInt32LE(h.pageSize, H_PAGE_SIZE)
  buf.writeUInt32LE(h.complete ? TRACE_HEADER_COMPLETE : 0, H_FLAGS)
  buf.writeUInt32LE(h.sessionId >>> 0, H_SESSION)
  buf.writeUInt32LE(h.pid >>> 0, H_PID)
  buf.writeUInt32LE(h.regions.length, H_REGION_COUNT)
  writeU64(buf, H_RECORD_COUNT, h.recordCount)
  writeU64(buf, H_SNAPSHOT_PAGES, h.snapshotPages)
  writeU64(buf, H_START_UNIX_MS, Math.round(h.startUnixMs))
  // Truncate on a character boundary so the stored name is valid UTF-8.
  let policy = Buffer.from(h.policy, 'utf8')
  if (policy.length > TRACE_POLICY_BYTES)
    policy = Buffer.from(
      policy
        .subarray(0, TRACE_POLICY_BYTES)
        .toString('utf8')
        .replace(/\uFFFD+$/, ''),
      'utf8',
    )
  policy.copy(buf, H_POLICY)
  h.regions.forEach((r, i) => {
    const at = TRACE_FIXED_HEADER_BYTES + i * TRACE_REGION_BYTES
    writeU64(buf, at, r.address)
    buf.writeUInt32LE(r.firstPage, at + 8)
    buf.writeUInt32LE(r.pageCount, at + 12)
  })
  return buf
}

/** Decodes and checks a header; `fileBytes` is the trace file's length. */
export function decodeTraceHeader(buf: Buffer, fileBytes: number, where: string): TraceHeader {
  if (buf.length < TRACE_FIXED_HEADER_BYTES || !buf.subarray(0, 8).equals(TRACE_MAGIC)) {
    throw new TraceFormatError(`${where}: not a faultline trace (no FLTRACE magic)`)
  }
  const version = buf.readUInt32LE(H_VERSION)
  if (version !== TRACE_VERSION)
    throw new TraceFormatError(`${where}: trace format version ${version} is not supported (this faultline reads version ${TRACE_VERSION})`)
  const regionCount = buf.readUInt32LE(H_REGION_COUNT)
  const headerBytes = buf.readUInt32LE(H_HEADER_BYTES)
  if (headerBytes !== traceHeaderBytes(regionCount)) {
    throw new TraceFormatError(`${where}: header size ${headerBytes} does not match its ${regionCount} regions (expected ${traceHeaderBytes(regionCount)})`)
  }
  if (buf.length < headerBytes || fileBytes < headerBytes)
    throw new TraceFormatError(`${where}: file ends inside the header (${fileBytes} of ${headerBytes} bytes)`)
  const recordBytes = buf.readUInt32LE(H_RECORD_BYTES)
  if (recordBytes !== TRACE_RECORD_BYTES) throw new TraceFormatError(`${where}: record size ${recordBytes}, expected ${TRACE_RECORD_BYTES}`)
  const pageSize = buf.readUInt32LE(H_PAGE_SIZE)
  if (pageSize < 4096 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0)
    throw new TraceFormatError(`${where}: page size ${pageSize} is not a power of two from 4096 to 65536`)
  const complete = (buf.readUInt32LE(H_FLAGS) & TRACE_HEADER_COMPLETE) !== 0
  const recordCount = readU64(buf, H_RECORD_COUNT)
  const policyEnd = buf.indexOf(0, H_POLICY)
  const regions: TraceRegion[] = []
  for (let i = 0; i < regionCount; i++) {
    const at = TRACE_FIXED_HEADER_BYTES + i * TRACE_REGION_BYTES
    regions.push({ address: readU64(buf, at), firstPage: buf.readUInt32LE(at + 8), pageCount: buf.readUInt32LE(at + 12) })
  }
  return {
    version,
    headerBytes,
    recordBytes,
    pageSize,
    complete,
    sessionId: buf.readUInt32LE(H_SESSION),
    pid: buf.readUInt32LE(H_PID),
    recordCount,
    snapshotPages: readU64(buf, H_SNAPSHOT_PAGES),
    startUnixMs: readU64(buf, H_START_UNIX_MS),
    policy: buf.toString('utf8', H_POLICY, policyEnd < 0 || policyEnd > H_POLICY + TRACE_POLICY_BYTES ? H_POLICY + TRACE_POLICY_BYTES : policyEnd),
    regions,
  }
}

/** Path of session `sessionId`'s trace: the first session writes `path`, session N>1 `path.N`. */
export function tracePathForSession(path: string, sessionId: number): string {
  return sessionId <= 1 ? path : `${path}.${sessionId}`
}
