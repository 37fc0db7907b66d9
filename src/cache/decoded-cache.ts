// The decoded cache of one snapshot: a file of decompressed pages (backing.ts) that
// cache-mapped guests map MAP_PRIVATE, so the kernel serves every page already in it with no
// uffd fault, and that anonymous guests' installs read instead of decoding again. Which folios
// it holds is shared by every thread of the server (folio-states.ts); the unit of filling is
// the folio, written whole with one pwrite, so no guest ever maps a folio half filled.
import { fstatSync } from 'node:fs'
import type { PageSource } from '../snapshot/page-source.js'
import { isDeferredSource } from '../store/deferred-source.js'
import * as uffd from '../uffd/index.js'
import { createBackingFile, type BackingOptions, type CacheBacking } from './backing.js'
import { ABSENT, EVICTING, FILLING, FolioStates, PRESENT, QUEUED, UNSERVABLE, ZERO, type FolioStateBuffers } from './folio-states.js'

/** Slots of the shared counters (Int32, changed with Atomics). */
const C_PRESENT = 0,
  C_FILLS = 1,
  C_EVICTIONS = 2,
  C_UNSERVABLE = 3,
  C_CLOCK = 4,
  C_ZERO = 5
const COUNTERS = 8

/** What a worker thread needs to use the cache (structured-clonable). */
export interface DecodedCacheInfo {
  /** Read-write descriptor: fills and reads (server threads only). */
  fd: number
  /** Read-only descriptor of the same file: the one handed to guests. */
  guestFd: number
  backing: CacheBacking
  folioBytes: number
  sizeBytes: number
  pageSize: number
  pageCount: number
  /** Decoded bytes the cache may hold before it evicts (a multiple of folioBytes). */
  limitBytes: number
  /** Device and inode of the file: a guest's /proc/PID/maps must show them. */
  dev: number
  ino: number
  why: string
  states: FolioStateBuffers
  counters: SharedArrayBuffer
}

export interface DecodedCacheOptions extends Omit<BackingOptions, 'pageSize'> {
  /** Bound on decoded bytes held (default: the whole image, never evicting). */
  limitBytes?: number
}

export interface CacheCounts {
  presentFolios: number
  presentBytes: number
  zeroFolios: number
  fills: number
  evictions: number
  unservableFolios: number
  /** Folios asked for and not in yet (queued or being filled). */
  pendingFolios: number
}

/** Why fill() did not leave the folio PRESENT ('not-local': an object store's chunk is not
 * here yet; the folio is given back). */
export type FillOutcome = 'filled' | 'already' | 'zero' | 'busy' | 'unservable' | 'not-local'

export class DecodedCache {
  readonly info: DecodedCacheInfo
  readonly fd: number
  readonly pageSize: number
  readonly pageCount: number
  readonly folioPages: number
  readonly folioBytes: number
  readonly folioCount: number
  readonly states: FolioStates
  /** log2(folioPages): folio = page >>> folioShift. */
  readonly folioShift: number
  private readonly counters: Int32Array
  private readonly limitFolios: number
  private owner = false
  /** The last fill's failure (the corrupt page's error), for the caller to log. */
  lastError: Error | undefined

  private constructor(info: DecodedCacheInfo) {
    this.info = info
    this.fd = info.fd
    this.pageSize = info.pageSize
    this.pageCount = info.pageCount
    this.folioBytes = info.folioBytes
    this.folioPages = info.folioBytes / info.pageSize
    this.folioShift = Math.log2(this.folioPages)
    this.states = new FolioStates(info.states)
    this.folioCount = this.states.count
    this.counters = new Int32Array(info.counters)
    this.limitFolios = Math.max(1, Math.floor(info.limitBytes / info.folioBytes))
  }

  /** Creates the cache for `source`'s image (main thread). Folios whose pages are all zero in
   * the snapshot start ZERO: they are never stored. */
  static create(source: Pick<PageSource, 'pageSize' | 'pageCount' | 'kindOf'>, opts: DecodedCacheOptions = {}): DecodedCache {
    const imageBytes = source.pageCount * source.pageSize
    const file = createBackingFile(imageBytes, { ...opts, pageSize: source.pageSize })
    let guestFd = -1
    try {
      guestFd = uffd.reopenReadOnly(file.fd)
      const st = fstatSync(file.fd)
      const folioCount = Math.ceil(source.pageCount / (file.folioBytes / source.pageSize))
      const limit =
        opts.limitBytes === undefined ? folioCount * file.folioBytes : Math.max(file.folioBytes, opts.limitBytes - (opts.limitBytes % file.folioBytes))
      const cache = new DecodedCache({
        fd: file.fd,
        guestFd,
        backing: file.backing,
        folioBytes: file.folioBytes,
        sizeBytes: file.sizeBytes,
        pageSize: source.pageSize,
        pageCount: source.pageCount,
        limitBytes: limit,
        dev: st.dev,
        ino: st.ino,
        why: file.why,
        states: FolioStates.allocate(folioCount).buffers,
        counters: new SharedArrayBuffer(COUNTERS * 4),
      })
      cache.owner = true
      cache.markZeroFolios(source)
      return cache
    } catch (err) {
      uffd.closeFile(guestFd)
      uffd.closeFile(file.fd)
      throw err
    }
  }

  /** The same cache in another thread (the descriptors are the process's). */
  static attach(info: DecodedCacheInfo): DecodedCache {
    return new DecodedCache(info)
  }

  private markZeroFolios(source: Pick<PageSource, 'pageCount' | 'kindOf'>): void {
    let zero = 0
    for (let f = 0; f < this.folioCount; f++) {
      const first = f * this.folioPages
      const end = Math.min(source.pageCount, first + this.folioPages)
      let p = first
      while (p < end && source.kindOf(p) === 0) p++
      if (p === end) {
        this.states.set(f, ZERO)
        zero++
      }
    }
    this.counters[C_ZERO] = zero
  }

  folioOf(page: number): number {
    return page >>> this.folioShift
  }

  /** State of the folio holding snapshot page `page`. */
  stateOfPage(page: number): number {
    return this.states.get(page >>> this.folioShift)
  }

  /** First snapshot page of `folio`, and how many of its pages the snapshot has. */
  firstPageOf(folio: number): number {
    return folio << this.folioShift
  }
  pagesIn(folio: number): number {
    return Math.min(this.folioPages, this.pageCount - (folio << this.folioShift))
  }

  /** Marks an ABSENT folio QUEUED; true when the caller should enqueue it. */
  markQueued(folio: number): boolean {
    return this.states.move(folio, ABSENT, QUEUED)
  }

  /**
   * Decodes `folio` from `source` into `staging` (at least folioBytes) and writes it to the
   * cache whole, unless another thread has it or it is not to be stored. A page that fails
   * verification leaves the folio UNSERVABLE (lastError says why) and nothing written.
   */
  fill(folio: number, source: PageSource, staging: Buffer): FillOutcome {
    if (!this.claim(folio)) {
      const s = this.states.get(folio)
      return s === PRESENT ? 'already' : s === ZERO ? 'zero' : s === UNSERVABLE ? 'unservable' : 'busy'
    }
    const outcome = this.fillClaimed(folio, source, staging)
    if (outcome === 'not-local') this.release(folio)
    return outcome
  }

  /** Takes an ABSENT or QUEUED folio for filling (FILLING); false when it is not to be taken. */
  claim(folio: number): boolean {
    return this.states.move(folio, QUEUED, FILLING) || this.states.move(folio, ABSENT, FILLING)
  }

  /** Gives back a claimed folio unfilled (its data could not be had now). */
  release(folio: number): void {
    this.states.move(folio, FILLING, ABSENT)
  }

  /** fill() of a folio this thread claimed. With an object-store source whose data is not
   * local (`tryReadPages` false), 'not-local': the folio stays claimed, to be tried again. */
  fillClaimed(folio: number, source: PageSource, staging: Buffer): FillOutcome {
    const states = this.states
    const first = folio << this.folioShift
    const count = this.pagesIn(folio)
    try {
      if (isDeferredSource(source)) {
        if (!source.tryReadPages(first, count, staging, 0)) return 'not-local'
      } else {
        source.readPages(first, count, staging, 0)
      }
    } catch (err) {
      this.lastError = err as Error
      states.set(folio, UNSERVABLE)
      Atomics.add(this.counters, C_UNSERVABLE, 1)
      return 'unservable'
    }
    try {
      if (count < this.folioPages) staging.fill(0, count * this.pageSize, this.folioBytes)
      this.makeRoom()
      uffd.pwriteAll(this.fd, staging, this.folioBytes, folio * this.folioBytes)
    } catch (err) {
      states.set(folio, ABSENT)
      throw err
    }
    states.referenced[folio] = 1
    states.set(folio, PRESENT)
    Atomics.add(this.counters, C_PRESENT, 1)
    Atomics.add(this.counters, C_FILLS, 1)
    return 'filled'
  }

  /**
   * Reads decoded pages [first, first+count) of one PRESENT folio into our memory at
   * `address` (a COPY source for an anonymous guest). False, with nothing to trust in the
   * destination, when the folio is not PRESENT or was evicted while it was read.
   */
  readPresent(first: number, count: number, address: number): boolean {
    const folio = first >>> this.folioShift
    const states = this.states
    const generation = states.generation(folio)
    if (states.get(folio) !== PRESENT) return false
    const bytes = count * this.pageSize
    if (uffd.preadToAddress(this.fd, address, bytes, first * this.pageSize) !== bytes) return false
    return states.get(folio) === PRESENT && states.generation(folio) === generation
  }

  /** Notes a use of a PRESENT folio (a fault or prefetch asked for it): the eviction clock
   * passes it over once. */
  touch(folio: number): void {
    this.states.referenced[folio] = 1
  }

  /** Evicts folios (clock order, second chance for referenced ones) until one more fits. */
  private makeRoom(): void {
    const counters = this.counters
    let sweeps = 0
    while (Atomics.load(counters, C_PRESENT) >= this.limitFolios && sweeps < 2 * this.folioCount + 2) {
      const folio = (Atomics.add(counters, C_CLOCK, 1) >>> 0) % this.folioCount
      sweeps++
      if (this.states.get(folio) !== PRESENT) continue
      if (this.states.referenced[folio] !== 0) {
        this.states.referenced[folio] = 0
        continue
      }
      this.evict(folio)
    }
  }

  /** Punches `folio` out of the cache: every guest mapping of it loses it and faults again on
   * its next touch (pages a guest wrote are its own and stay). False if it was not PRESENT. */
  evict(folio: number): boolean {
    const states = this.states
    if (!states.move(folio, PRESENT, EVICTING)) return false
    states.bumpGeneration(folio)
    try {
      uffd.punchHole(this.fd, folio * this.folioBytes, this.folioBytes)
    } finally {
      states.bumpGeneration(folio)
      states.set(folio, ABSENT)
      Atomics.sub(this.counters, C_PRESENT, 1)
      Atomics.add(this.counters, C_EVICTIONS, 1)
    }
    return true
  }

  /**
   * Punches out folios holding data the cache never wrote (ABSENT, ZERO or UNSERVABLE ones
   * with blocks in the file): a process that maps the cache outside a registered region and
   * reads a hole puts a zero folio there, which guests would then map as the snapshot's pages.
   * Returns how many it removed.
   */
  removeStrayFolios(): number {
    const extents = uffd.dataExtents(this.fd, this.folioCount * this.folioBytes)
    let removed = 0
    for (let k = 0; k < extents.length; k += 2) {
      const last = Math.floor((extents[k + 1] - 1) / this.folioBytes)
      for (let folio = Math.floor(extents[k] / this.folioBytes); folio <= last; folio++) {
        const s = this.states.get(folio)
        if (s !== ABSENT && s !== ZERO && s !== UNSERVABLE) continue
        // A filler may be taking an ABSENT folio right now: claim it first, as an eviction does.
        if (s === ABSENT && !this.states.move(folio, ABSENT, EVICTING)) continue
        uffd.punchHole(this.fd, folio * this.folioBytes, this.folioBytes)
        if (s === ABSENT) this.states.set(folio, ABSENT)
        removed++
      }
    }
    return removed
  }

  counts(): CacheCounts {
    const c = this.counters
    const present = Atomics.load(c, C_PRESENT)
    let pending = 0
    for (let f = 0; f < this.folioCount; f++) {
      const s = this.states.get(f)
      if (s === QUEUED || s === FILLING) pending++
    }
    return {
      pendingFolios: pending,
      presentFolios: present,
      presentBytes: present * this.folioBytes,
      zeroFolios: Atomics.load(c, C_ZERO),
      fills: Atomics.load(c, C_FILLS),
      evictions: Atomics.load(c, C_EVICTIONS),
      unservableFolios: Atomics.load(c, C_UNSERVABLE),
    }
  }

  /** Closes the cache's descriptors (the owner, once every thread is done with it). */
  close(): void {
    if (!this.owner) return
    this.owner = false
    uffd.closeFile(this.info.guestFd)
    uffd.closeFile(this.fd)
  }
}

export { ABSENT, QUEUED, FILLING, PRESENT, ZERO, UNSERVABLE, EVICTING }
