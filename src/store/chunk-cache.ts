// The on-disk chunk cache: one file per fetched chunk (stored bytes + a CRC'd header) under
// CACHE_DIR/<snapshot id>/, bounded in bytes, evicting least recently used chunks first
// (sessions stamp each read on a shared clock). Entries left by an earlier run are adopted
// without reading them, and verified against their CRC when first needed.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs'
import { readFile, rename, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { fileError } from '../errors.js'
import { ChunkCacheError } from './errors.js'
import { CHUNK_ABSENT, CHUNK_READY, ENTRY_HEADER_SIZE, ENTRY_MAGIC, ENTRY_VERSION, chunkFileName, type ChunkLayout, type ChunkTable } from './chunk-table.js'

export interface ChunkCacheOptions {
  /** `--cache-dir`: holds one directory per snapshot version. */
  root: string
  /** The snapshot version's id (RemoteSnapshot.id): its directory's name. */
  snapshotId: string
  /** What the directory caches, written to its `source` file for people. */
  source: string
  /** `--cache-size`: bytes of entries (headers included) kept on disk, all snapshots together. */
  capacityBytes: number
  layout: ChunkLayout
  table: ChunkTable
}

export interface ChunkCacheStats {
  entries: number
  bytes: number
  /** Entries found from an earlier run. */
  adopted: number
  /** Entries dropped to stay within the size. */
  evictions: number
  evictedBytes: number
  /** Entries that failed their checksum or header check and were deleted. */
  rejected: number
  writes: number
}

interface ForeignEntry {
  path: string
  bytes: number
  mtimeMs: number
}

export class ChunkCache {
  readonly dir: string
  readonly capacityBytes: number
  readonly stats: ChunkCacheStats = { entries: 0, bytes: 0, adopted: 0, evictions: 0, evictedBytes: 0, rejected: 0, writes: 0 }
  private readonly layout: ChunkLayout
  private readonly table: ChunkTable
  /** Bytes on disk per chunk of this snapshot; 0 = no entry. */
  private readonly sizeOf: Float64Array
  /** 1 once an entry's CRC was checked (or it was written) in this run. */
  private readonly verified: Uint8Array
  /** 1 while an entry is being read for verification: not evicted meanwhile. */
  private readonly busy: Uint8Array
  /** Unlocked entries of other snapshots (older versions...), oldest first: evicted first. */
  private foreign: ForeignEntry[] = []
  private readonly lockPath: string
  private usedBytes = 0
  /** Evict down to capacity minus this, so one sort serves many inserts. */
  private readonly slackBytes: number
  private closed = false

  private constructor(opts: ChunkCacheOptions) {
    this.dir = join(opts.root, opts.snapshotId)
    this.capacityBytes = opts.capacityBytes
    this.layout = opts.layout
    this.table = opts.table
    this.sizeOf = new Float64Array(opts.layout.chunkCount)
    this.verified = new Uint8Array(opts.layout.chunkCount)
    this.busy = new Uint8Array(opts.layout.chunkCount)
    this.lockPath = join(this.dir, 'lock')
    this.slackBytes = Math.floor(opts.capacityBytes / 16)
  }

  /** Creates/locks the snapshot's directory and takes stock of what is on disk. */
  static open(opts: ChunkCacheOptions): ChunkCache {
    const cache = new ChunkCache(opts)
    try {
      mkdirSync(cache.dir, { recursive: true })
    } catch (err) {
      throw fileError(cache.dir, err, 'cannot create the cache directory')
    }
    cache.lock()
    try {
      try {
        writeFileSync(join(cache.dir, 'source'), `${opts.source}\n`)
      } catch {
        /* informational only */
      }
      cache.adopt()
      cache.scanForeign(opts.root, opts.snapshotId)
      cache.evictFor(0)
    } catch (err) {
      cache.close()
      throw err
    }
    return cache
  }

  /** True when `chunk` has an entry on disk (verified or not). */
  has(chunk: number): boolean {
    return this.sizeOf[chunk] > 0
  }
  isVerified(chunk: number): boolean {
    return this.verified[chunk] === 1
  }
  pathOf(chunk: number): string {
    return join(this.dir, chunkFileName(chunk))
  }
  get bytes(): number {
    return this.usedBytes
  }

  /** Reads an adopted entry and checks its header and CRC; a bad one is deleted. */
  async verify(chunk: number): Promise<boolean> {
    this.busy[chunk] = 1
    let ok = false
    try {
      const file = await readFile(this.pathOf(chunk))
      ok = checkEntry(file, chunk, this.layout) === undefined
    } catch {
      ok = false
    } finally {
      this.busy[chunk] = 0
    }
    if (ok && this.has(chunk)) {
      this.verified[chunk] = 1
      return true
    }
    this.stats.rejected++
    this.remove(chunk)
    return false
  }

  /** Stores a chunk's stored bytes (already verified page by page), evicting to make room. */
  async put(chunk: number, data: Buffer): Promise<void> {
    if (this.has(chunk)) this.remove(chunk)
    const size = ENTRY_HEADER_SIZE + data.length
    this.evictFor(size)
    this.account(chunk, size)
    const path = this.pathOf(chunk)
    const tmp = `${path}.${process.pid}.tmp`
    // Written under another name and renamed: a session never opens half an entry.
    this.busy[chunk] = 1
    try {
      await writeFile(tmp, Buffer.concat([entryHeader(chunk, this.layout.firstPage(chunk), data), data]))
      await rename(tmp, path)
    } catch (err) {
      this.unaccount(chunk)
      unlink(tmp).catch(() => {})
      throw new ChunkCacheError(fileError(path, err, 'cannot write cache entry').message)
    } finally {
      this.busy[chunk] = 0
    }
    this.verified[chunk] = 1
    this.stats.writes++
  }

  /** Deletes a chunk's entry (it failed verification on read, or is evicted). */
  remove(chunk: number): void {
    if (!this.has(chunk)) return
    this.unaccount(chunk)
    this.verified[chunk] = 0
    unlink(this.pathOf(chunk)).catch(() => {
      /* already gone */
    })
  }

  /** Makes room for `incoming` bytes: other snapshots' entries first, then this one's least
   * recently used READY chunks (marked ABSENT before their file goes). */
  evictFor(incoming: number): void {
    if (this.usedBytes + incoming <= this.capacityBytes) return
    const target = Math.max(0, this.capacityBytes - incoming - this.slackBytes)
    while (this.foreign.length > 0 && this.usedBytes > target) {
      const f = this.foreign.shift()!
      try {
        unlinkSync(f.path)
      } catch {
        /* gone */
      }
      this.usedBytes -= f.bytes
      this.stats.evictions++
      this.stats.evictedBytes += f.bytes
    }
    if (this.usedBytes <= target) return
    const { state, stamps } = this.table
    const candidates: number[] = []
    for (let c = 0; c < this.sizeOf.length; c++) {
      if (this.sizeOf[c] > 0 && this.busy[c] === 0) candidates.push(c)
    }
    candidates.sort((a, b) => Atomics.load(stamps, a) - Atomics.load(stamps, b))
    for (const c of candidates) {
      if (this.usedBytes <= target) break
      const s = Atomics.load(state, c)
      // A READY chunk goes ABSENT first, so no session opens its file after the unlink (one
      // that already has it open keeps reading it: the data stays valid).
      if (s === CHUNK_READY && Atomics.compareExchange(state, c, CHUNK_READY, CHUNK_ABSENT) !== CHUNK_READY) continue
      this.stats.evictions++
      this.stats.evictedBytes += this.sizeOf[c]
      this.remove(c)
    }
  }

  /** Releases the directory's lock. Entries stay for the next run. */
  close(): void {
    if (this.closed) return
    this.closed = true
    try {
      if (readFileSync(this.lockPath, 'utf8').trim() === String(process.pid)) unlinkSync(this.lockPath)
    } catch {
      /* not ours or gone */
    }
  }

  private account(chunk: number, size: number): void {
    this.sizeOf[chunk] = size
    this.usedBytes += size
    this.stats.entries++
    this.stats.bytes = this.usedBytes
  }

  private unaccount(chunk: number): void {
    this.usedBytes -= this.sizeOf[chunk]
    this.sizeOf[chunk] = 0
    this.stats.entries--
    this.stats.bytes = this.usedBytes
  }

  /** One server per snapshot directory: the lock file holds the owner's pid. */
  private lock(): void {
    for (let tries = 0; tries < 2; tries++) {
      try {
        const fd = openSync(this.lockPath, 'wx')
        writeSync(fd, `${process.pid}\n`)
        closeSync(fd)
        return
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fileError(this.lockPath, err, 'cannot lock the cache directory')
      }
      const owner = lockOwner(this.lockPath)
      if (owner !== undefined) {
        throw new ChunkCacheError(`--cache-dir ${this.dir}: in use by another faultline server (pid ${owner}); give each server its own --cache-dir`)
      }
      try {
        unlinkSync(this.lockPath)
      } catch {
        /* raced */
      }
    }
    throw new ChunkCacheError(`--cache-dir ${this.dir}: cannot take the lock ${this.lockPath}`)
  }

  /** Takes stock of this snapshot's entries from an earlier run: checked by name and size
   * now, by CRC when first needed (verify). Older entries get older LRU stamps. */
  private adopt(): void {
    const found: Array<{ chunk: number; size: number; mtimeMs: number }> = []
    for (const name of readdirSync(this.dir)) {
      const path = join(this.dir, name)
      if (name.endsWith('.tmp')) {
        try {
          unlinkSync(path)
        } catch {
          /* gone */
        }
        continue
      }
      const m = /^(\d+)\.chunk$/.exec(name)
      if (!m) continue
      const chunk = Number(m[1])
      let st
      try {
        st = statSync(path)
      } catch {
        continue
      }
      if (chunk >= this.layout.chunkCount || st.size !== ENTRY_HEADER_SIZE + this.layout.storedLength(chunk)) {
        try {
          unlinkSync(path)
        } catch {
          /* gone */
        }
        this.stats.rejected++
        continue
      }
      found.push({ chunk, size: st.size, mtimeMs: st.mtimeMs })
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs)
    for (let i = 0; i < found.length; i++) {
      this.account(found[i].chunk, found[i].size)
      this.table.stamps[found[i].chunk] = i - found.length
    }
    this.stats.adopted = found.length
  }

  private scanForeign(root: string, ownId: string): void {
    const entries: ForeignEntry[] = []
    for (const id of readdirSync(root)) {
      const dir = join(root, id)
      if (id === ownId || !/^[0-9a-f]{24}$/.test(id)) continue
      if (existsSync(join(dir, 'lock')) && lockOwner(join(dir, 'lock')) !== undefined) continue
      let names: string[]
      try {
        names = readdirSync(dir)
      } catch {
        continue
      }
      for (const name of names) {
        if (!name.endsWith('.chunk')) continue
        try {
          const st = statSync(join(dir, name))
          entries.push({ path: join(dir, name), bytes: st.size, mtimeMs: st.mtimeMs })
        } catch {
          /* gone */
        }
      }
      if (names.every(n => n === 'source' || n === 'lock')) rmSync(dir, { recursive: true, force: true })
    }
    entries.sort((a, b) => a.mtimeMs - b.mtimeMs)
    this.foreign = entries
    for (const e of entries) this.usedBytes += e.bytes
  }
}

/** The 32-byte header of a cache entry: magic, version, chunk, first page, length, data CRC. */
export function entryHeader(chunk: number, firstPage: number, data: Buffer): Buffer {
  const h = Buffer.alloc(ENTRY_HEADER_SIZE)
  ENTRY_MAGIC.copy(h, 0)
  h.writeUInt32LE(ENTRY_VERSION, 8)
  h.writeUInt32LE(chunk, 12)
  h.writeUInt32LE(firstPage % 2 ** 32, 16)
  h.writeUInt32LE(Math.floor(firstPage / 2 ** 32), 20)
  h.writeUInt32LE(data.length, 24)
  h.writeUInt32LE(crc32(data), 28)
  return h
}

/** Why a cache entry file is not a good copy of `chunk`, or undefined when it is. */
export function checkEntry(file: Buffer, chunk: number, layout: ChunkLayout): string | undefined {
  if (file.length < ENTRY_HEADER_SIZE || !file.subarray(0, 8).equals(ENTRY_MAGIC)) return 'not a cache entry'
  if (file.readUInt32LE(8) !== ENTRY_VERSION) return `entry version ${file.readUInt32LE(8)}`
  if (file.readUInt32LE(12) !== chunk) return `holds chunk ${file.readUInt32LE(12)}`
  const length = file.readUInt32LE(24)
  if (length !== layout.storedLength(chunk) || file.length !== ENTRY_HEADER_SIZE + length) return `length ${length}, expected ${layout.storedLength(chunk)}`
  const crc = crc32(file.subarray(ENTRY_HEADER_SIZE))
  if (crc !== file.readUInt32LE(28)) return 'checksum mismatch'
  return undefined
}

function lockOwner(path: string): number | undefined {
  let pid: number
  try {
    pid = Number(readFileSync(path, 'utf8').trim())
  } catch {
    return undefined
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state === 'Z' || state === 'X' ? undefined : pid
  } catch {
    return undefined
  }
}
