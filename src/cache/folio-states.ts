// What each folio of the decoded cache holds, shared by every thread of the server through a
// SharedArrayBuffer: one Int32 a folio, changed only with Atomics, so a folio is decoded once
// for every session and worker of its snapshot.

/** Not in the cache; a guest touching it faults to the server. */
export const ABSENT = 0
/** Asked for (in a fill queue), not taken by a filler yet. */
export const QUEUED = 1
/** A filler is decoding and writing it. */
export const FILLING = 2
/** In the cache, every page decoded and checked: guests map it without a fault. */
export const PRESENT = 3
/** Every page of it is a zero page in the snapshot: never stored, guests get UFFDIO_ZEROPAGE. */
export const ZERO = 4
/** A page of it failed verification: the folio is never written, its pages are served one by
 * one into the guest (the bad one poisoned). */
export const UNSERVABLE = 5
/** Being evicted (a hole punched); ABSENT next. */
export const EVICTING = 6

export const STATE_NAMES = ['absent', 'queued', 'filling', 'present', 'zero', 'unservable', 'evicting'] as const

/**
 * The shared arrays of one cache: states (Int32 a folio), generations (bumped at each
 * eviction, so a reader of a PRESENT folio can tell it was evicted under it) and referenced
 * bits for the eviction clock.
 */
export class FolioStates {
  readonly count: number
  readonly states: Int32Array
  readonly generations: Int32Array
  readonly referenced: Uint8Array
  /** The highest priority (lowest number) a QUEUED folio was asked for at: a request of a
   * higher one queues it again, not every request. */
  readonly queuedAt: Uint8Array

  constructor(readonly buffers: FolioStateBuffers) {
    this.states = new Int32Array(buffers.states)
    this.generations = new Int32Array(buffers.generations)
    this.referenced = new Uint8Array(buffers.referenced)
    this.queuedAt = new Uint8Array(buffers.queuedAt)
    this.count = this.states.length
  }

  static allocate(folios: number): FolioStates {
    return new FolioStates({
      states: new SharedArrayBuffer(folios * 4),
      generations: new SharedArrayBuffer(folios * 4),
      referenced: new SharedArrayBuffer(folios),
      queuedAt: new SharedArrayBuffer(folios),
    })
  }

  get(folio: number): number {
    return Atomics.load(this.states, folio)
  }

  /** Moves `folio` from `from` to `to`; false when it was not in `from`. */
  move(folio: number, from: number, to: number): boolean {
    return Atomics.compareExchange(this.states, folio, from, to) === from
  }

  set(folio: number, to: number): void {
    Atomics.store(this.states, folio, to)
  }

  generation(folio: number): number {
    return Atomics.load(this.generations, folio)
  }

  bumpGeneration(folio: number): void {
    Atomics.add(this.generations, folio, 1)
  }
}

export interface FolioStateBuffers {
  states: SharedArrayBuffer
  generations: SharedArrayBuffer
  referenced: SharedArrayBuffer
  queuedAt: SharedArrayBuffer
}
