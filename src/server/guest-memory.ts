// GuestMemory: where the guest's registered regions are, which snapshot page backs each
// guest page, and what state each page is in. Follows the guest's remove/unmap/remap events.
import type { GuestRegion } from './handshake.js'

/** Page states. Absent pages read as the snapshot; discarded ones must read as zeros. */
export const ABSENT = 0
export const PRESENT = 1
export const DISCARDED = 2
/** Unmapped by the guest: nothing to install there any more. */
export const GONE = 3

export class MappedRegion {
  constructor(
    /** Guest address of the first page. */
    public start: number,
    public pages: number,
    /** Snapshot page backing the first page. */
    public firstPage: number,
    /** Guest page size in snapshot pages (1, or 512 for 2 MiB huge pages of 4 KiB). */
    readonly pagesPerGuestPage: number,
    /** One byte per snapshot page: ABSENT, PRESENT, DISCARDED, GONE. */
    public state: Uint8Array,
  ) {}

  get end(): number { return this.start + this.pages * this.pageSizeBytes }
  pageSizeBytes = 0
}

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
  }

  /** The region holding guest address `address`, or undefined. */
  regionAt(address: number): MappedRegion | undefined {
    const regions = this.regions
    const hit = regions[this.last]
    if (hit !== undefined && address >= hit.start && address < hit.end) return hit
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i]
      if (address >= r.start && address < r.end) { this.last = i; return r }
    }
    return undefined
  }

  /** The region backed by snapshot page `page`, or undefined. */
  regionOfPage(page: number): MappedRegion | undefined {
    for (const r of this.regions) if (page >= r.firstPage && page < r.firstPage + r.pages) return r
    return undefined
  }

  /** Marks guest pages in [start, end) with `state` (REMOVE: DISCARDED, UNMAP: GONE). */
  markRange(start: number, end: number, state: number): number {
    let marked = 0
    for (const r of this.regions) {
      const a = Math.max(start, r.start)
      const b = Math.min(end, r.end)
      if (a >= b) continue
      const first = Math.floor((a - r.start) / this.pageSize)
      const last = Math.ceil((b - r.start) / this.pageSize)
      for (let i = first; i < last; i++) {
        if (r.state[i] !== GONE) { r.state[i] = state; marked++ }
      }
    }
    return marked
  }

  /** mremap moved [from, from+length) to `to`: those pages now live at the new address. */
  remap(from: number, to: number, length: number): void {
    const moved: MappedRegion[] = []
    for (const r of [...this.regions]) {
      const a = Math.max(from, r.start)
      const b = Math.min(from + length, r.end)
      if (a >= b) continue
      const first = (a - r.start) / this.pageSize
      const count = (b - a) / this.pageSize
      const copy = r.state.slice(first, first + count)
      moved.push(new MappedRegion(to + (a - from), count, r.firstPage + first, r.pagesPerGuestPage, copy))
      r.state.fill(GONE, first, first + count)
    }
    for (const m of moved) this.add(m)
    this.last = 0
  }

  /** Snapshot page ranges the guest's regions cover. */
  ranges(): Array<{ firstPage: number; pageCount: number }> {
    return this.regions.map(r => ({ firstPage: r.firstPage, pageCount: r.pages }))
  }

  isResident(page: number): boolean {
    const r = this.regionOfPage(page)
    return r === undefined || r.state[page - r.firstPage] !== ABSENT
  }
}
