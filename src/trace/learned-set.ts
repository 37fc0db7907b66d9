// Learned working sets (serve --learn DIR): the pages each recent session of a snapshot used,
// in the order it first used them, kept in one file per snapshot (keyed by its content: the
// index CRC, page count and page size), so the next session prefetches them unasked and a
// server restart loses nothing. The set prefetched is the pages seen in at least k of the last n
// sessions (default 1 of 4), the newest session's order first.
import { closeSync, constants, existsSync, fstatSync, openSync, readSync, renameSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { FaultlineError, fileError } from '../errors.js'
import { readRegularFile } from '../util/input-file.js'

export const LEARNED_MAGIC = Buffer.from('FLLEARN\0', 'latin1')
export const LEARNED_VERSION = 1
const HEADER_BYTES = 48
/** Sessions a file keeps (the oldest is dropped). */
export const LEARNED_MAX_SESSIONS = 8
export const LEARNED_DEFAULT_KEEP = 4

export class LearnedSetError extends FaultlineError {
  override readonly code: string = 'FL_ERR_LEARNED_SET'
}

/** What a learned set is of: the snapshot's content, not its path. */
export interface SnapshotIdentity {
  indexCrc: number
  pageCount: number
  pageSize: number
}

export interface LearnedSession {
  /** When the session ended (Unix ms). */
  endedMs: number
  /** Snapshot pages it used, in first-use order, each once. */
  pages: Uint32Array
}

export interface LearnedSet {
  snapshot: SnapshotIdentity
  /** Oldest first. */
  sessions: LearnedSession[]
}

/** The file that holds `snapshot`'s learned set in DIR. */
export function learnedSetPath(dir: string, snapshot: SnapshotIdentity): string {
  return join(dir, `${snapshot.indexCrc.toString(16).padStart(8, '0')}-${snapshot.pageCount}x${snapshot.pageSize}.fllearn`)
}

/** True when `path` starts with a learned set's magic (it is not a trace). */
export function isLearnedSetFile(path: string): boolean {
  // O_NONBLOCK: a FIFO opens at once instead of waiting for a writer; only a regular file is read.
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  } catch {
    return false
  }
  try {
    if (!fstatSync(fd).isFile()) return false
    const head = Buffer.alloc(LEARNED_MAGIC.length)
    return readSync(fd, head, 0, head.length, 0) === head.length && head.equals(LEARNED_MAGIC)
  } catch {
    return false
  } finally {
    closeSync(fd)
  }
}

export function encodeLearnedSet(set: LearnedSet): Buffer {
  const total = set.sessions.reduce((n, s) => n + 16 + 4 * s.pages.length, 0)
  const out = Buffer.alloc(HEADER_BYTES + total)
  LEARNED_MAGIC.copy(out, 0)
  out.writeUInt32LE(LEARNED_VERSION, 8)
  out.writeUInt32LE(HEADER_BYTES, 12)
  out.writeUInt32LE(set.snapshot.indexCrc >>> 0, 16)
  out.writeUInt32LE(set.snapshot.pageSize, 20)
  out.writeBigUInt64LE(BigInt(set.snapshot.pageCount), 24)
  out.writeUInt32LE(set.sessions.length, 32)
  let at = HEADER_BYTES
  for (const s of set.sessions) {
    out.writeBigUInt64LE(BigInt(s.endedMs), at)
    out.writeUInt32LE(s.pages.length, at + 8)
    at += 16
    for (let i = 0; i < s.pages.length; i++, at += 4) out.writeUInt32LE(s.pages[i], at)
  }
  return out
}

export function decodeLearnedSet(buf: Buffer, path: string): LearnedSet {
  const bad = (what: string): never => {
    throw new LearnedSetError(`${path}: ${what}`)
  }
  if (buf.length < HEADER_BYTES || !buf.subarray(0, 8).equals(LEARNED_MAGIC)) bad('not a faultline learned working set')
  if (buf.readUInt32LE(8) !== LEARNED_VERSION) bad(`learned set version ${buf.readUInt32LE(8)}, expected ${LEARNED_VERSION}`)
  const snapshot = { indexCrc: buf.readUInt32LE(16), pageSize: buf.readUInt32LE(20), pageCount: Number(buf.readBigUInt64LE(24)) }
  const count = buf.readUInt32LE(32)
  if (count > LEARNED_MAX_SESSIONS) bad(`${count} sessions, at most ${LEARNED_MAX_SESSIONS}`)
  const sessions: LearnedSession[] = []
  let at = buf.readUInt32LE(12)
  for (let k = 0; k < count; k++) {
    if (at + 16 > buf.length) bad(`truncated in session ${k}`)
    const endedMs = Number(buf.readBigUInt64LE(at))
    const n = buf.readUInt32LE(at + 8)
    at += 16
    if (at + 4 * n > buf.length) bad(`truncated in session ${k}`)
    const pages = new Uint32Array(n)
    for (let i = 0; i < n; i++, at += 4) {
      pages[i] = buf.readUInt32LE(at)
      if (pages[i] >= snapshot.pageCount) bad(`session ${k}: page ${pages[i]} is past the snapshot's ${snapshot.pageCount} pages`)
    }
    sessions.push({ endedMs, pages })
  }
  if (at !== buf.length) bad(`${buf.length - at} unexpected bytes at the end`)
  return { snapshot, sessions }
}

/** The learned set of `snapshot` in DIR, or undefined when there is none yet. A file of another
 * snapshot under that name, or a damaged one, is an error (named). */
export function readLearnedSet(dir: string, snapshot: SnapshotIdentity): LearnedSet | undefined {
  const path = learnedSetPath(dir, snapshot)
  if (!existsSync(path)) return undefined
  const set = decodeLearnedSet(readRegularFile(path, 'cannot read learned set'), path)
  const s = set.snapshot
  if (s.indexCrc !== snapshot.indexCrc || s.pageCount !== snapshot.pageCount || s.pageSize !== snapshot.pageSize) {
    throw new LearnedSetError(`${path}: learned on another snapshot (index CRC ${s.indexCrc.toString(16)}, ${s.pageCount} pages of ${s.pageSize})`)
  }
  return set
}

/** Adds a session's pages to `snapshot`'s learned set in DIR (written whole under a fresh
 * temporary name, then renamed over the old file: a crash leaves the old set or the new). */
export function recordLearnedSession(dir: string, snapshot: SnapshotIdentity, pages: Uint32Array, endedMs = Date.now()): LearnedSet {
  const set = readLearnedSet(dir, snapshot) ?? { snapshot, sessions: [] }
  set.sessions.push({ endedMs, pages })
  while (set.sessions.length > LEARNED_MAX_SESSIONS) set.sessions.shift()
  const path = learnedSetPath(dir, snapshot)
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
  let fd: number
  try {
    fd = openSync(tmp, 'wx', 0o644)
  } catch (err) {
    throw fileError(tmp, err, 'cannot write learned set')
  }
  try {
    writeSync(fd, encodeLearnedSet(set))
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, path)
  return set
}

/** The pages to prefetch: seen in at least `minSessions` of the last `keep` sessions, the
 * newest session's first-use order first, then older sessions' pages in theirs. */
export function learnedPages(set: LearnedSet, minSessions = 1, keep = LEARNED_DEFAULT_KEEP): number[] {
  const recent = set.sessions.slice(-keep)
  const seen = new Map<number, number>()
  for (const s of recent) for (const p of s.pages) seen.set(p, (seen.get(p) ?? 0) + 1)
  const out: number[] = []
  const taken = new Set<number>()
  for (let k = recent.length - 1; k >= 0; k--) {
    for (const p of recent[k].pages) {
      if (taken.has(p) || (seen.get(p) ?? 0) < minSessions) continue
      taken.add(p)
      out.push(p)
    }
  }
  return out
}
