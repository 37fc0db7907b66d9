// GuestMemory: where the guest's registered regions are, which snapshot page backs each
// guest page, and what state each page is in. Follows the guest's remove/unmap/remap events.
import type { GuestRegion } from './handshake.js'

/** Page states. Absent pages read as the snapshot; discarded ones must read as zeros. */
export const ABSENT = 0
export const PRESENT = 1
export const DISCARDED = 2
/** Nothing may be installed there (a page that could not be served, poisoned in a forked
 * child). Unmapped pages are not marked: their region is cut out of the list instead. */
export const GONE = 3
/** Its snapshot data failed verification when a prefetch read it: nothing was installed, and
 * a fault on it poisons it (or fails the guest closed). Prefetches skip it. */
export const BAD = 4

export class MappedRegion {
  constructor(
    /** Guest address of the first page. */
    public start: number,
    public pages: number,
    /** Snapshot page backing the first page. */
    public firstPage: number,
    /** Guest page size in snapshot pages (1, or 512 for 2 MiB huge pages of 4 KiB). */
    readonly pagesPerGuestPage: number,
    /** One byte per snapshot page: ABSENT, PRESENT, DISCARDED, GONE, BAD. */
    public state: Uint8Array,
  ) {}

  get end(): number {
    return this.start + this.pages * this.pageSizeBytes
  }
  pageSizeBytes = 0
}

/**
 * The guest's live registered ranges, sorted by address and never overlapping, each backed by
 * its own snapshot pages (no snapshot page is backed twice: the handshake refuses overlapping
 * offsets, and an unmap or a remap cuts pages out of one region before they appear in
 * another). So an address and a snapshot page each name at most one guest page.
 */
export class GuestMemory {
  readonly regions: MappedRegion[] = []
  readonly pageSize: number
  private last = 0

  constructor(regions: GuestRegion[], snapshotPageSize: number) {
    this.pageSize = snapshotPageSize
    for (const r of regions) {
      const pages = r.lengthBytes / snapshotPageSize
      this.add(new MappedRegion(r.start, pages, r.snapshotOffset / snapshotPageSize, r.pageSize / snapshotPageSize, new Uint8Array(pages)))
    }
  }

  private add(region: MappedRegion): void {
    region.pageSizeBytes = this.pageSize
    this.regions.push(region)
    this.regions.sort((a, b) => a.start - b.start)
    this.last = 0
  }

  /** The region holding guest address `address`, or undefined. */
  regionAt(address: number): MappedRegion | undefined {
    const regions = this.regions
    const hit = regions[this.last]
    if (hit !== undefined && address >= hit.start && address < hit.end) return hit
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i]
      if (address >= r.start && address < r.end) {
        this.last = i
        return r
      }
    }
    return undefined
  }

  /** The region backed by snapshot page `page`, or undefined. */
  regionOfPage(page: number): MappedRegion | undefined {
    for (const r of this.regions) if (page >= r.firstPage && page < r.firstPage + r.pages) return r
    return undefined
  }

  /** Marks guest pages in [start, end) with `state` (REMOVE: DISCARDED). Returns how many
   * pages it marked. */
  markRange(start: number, end: number, state: number): number {
    let marked = 0
    for (const r of this.regions) {
      const a = Math.max(start, r.start)
      const b = Math.min(end, r.end)
      if (a >= b) continue
      const first = Math.floor((a - r.start) / this.pageSize)
      const last = Math.ceil((b - r.start) / this.pageSize)
      for (let i = first; i < last; i++) {
        if (r.state[i] !== GONE) {
          r.state[i] = state
          marked++
        }
      }
    }
    return marked
  }

  /** munmap of [start, end): those pages are no longer the guest's; a region may split in
   * two. Returns how many pages were cut out. */
  unmap(start: number, end: number): number {
    return this.cut(start, end).reduce((n, r) => n + r.pages, 0)
  }

  /** mremap moved [from, from+length) to `to`: those pages (and their states) now live at the
   * new address, and whatever was mapped at the destination before is gone. */
  remap(from: number, to: number, length: number): void {
    const moved = this.cut(from, from + length)
    this.cut(to, to + length)
    for (const m of moved) {
      m.start += to - from
      this.add(m)
    }
  }

  /** Removes [start, end) from the regions and returns the removed pieces (each still
   * backed by its own snapshot pages, states shared with nothing that remains). */
  private cut(start: number, end: number): MappedRegion[] {
    const removed: MappedRegion[] = []
    const kept: MappedRegion[] = []
    const ps = this.pageSize
    for (const r of this.regions) {
      const a = Math.max(start, r.start)
      const b = Math.min(end, r.end)
      if (a >= b) {
        kept.push(r)
        continue
      }
      const first = Math.floor((a - r.start) / ps)
      const last = Math.ceil((b - r.start) / ps)
      if (first > 0) kept.push(this.piece(r, 0, first))
      removed.push(this.piece(r, first, last))
      if (last < r.pages) kept.push(this.piece(r, last, r.pages))
    }
    this.regions.length = 0
    this.regions.push(...kept)
    this.last = 0
    return removed
  }

  private piece(r: MappedRegion, from: number, to: number): MappedRegion {
    const p = new MappedRegion(r.start + from * this.pageSize, to - from, r.firstPage + from, r.pagesPerGuestPage, r.state.slice(from, to))
    p.pageSizeBytes = this.pageSize
    return p
  }

  /** A deep copy: what a forked child's memory looks like at the fork. */
  clone(): GuestMemory {
    const copy = new GuestMemory([], this.pageSize)
    for (const r of this.regions) copy.add(this.piece(r, 0, r.pages))
    return copy
  }

  /** Snapshot page ranges the guest's regions cover. */
  ranges(): Array<{ firstPage: number; pageCount: number }> {
    return this.regions.map(r => ({ firstPage: r.firstPage, pageCount: r.pages }))
  }

  isResident(page: number): boolean {
    const r = this.regionOfPage(page)
    return r === undefined || r.state[page - r.firstPage] !== ABSENT
  }

  /** Pages in each state, summed over the regions: [absent, present, discarded, gone, bad]. */
  countStates(): [number, number, number, number, number] {
    const counts: [number, number, number, number, number] = [0, 0, 0, 0, 0]
    for (const r of this.regions) for (let i = 0; i < r.pages; i++) counts[r.state[i]]++
    return counts
  }
}
