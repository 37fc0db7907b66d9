// Requests to fill folios of the decoded cache, shared by sessions (producers) and fill workers
// (consumers) in a SharedArrayBuffer: one ring per priority (faults, then prefetch, then
// background), a short spin lock, and a sequence word fill workers wait on. A request is
// advisory: a full ring drops it (a fault is served without the cache meanwhile) and a folio
// already taken is skipped by whoever pops it.

/** Priorities, highest first; the same numbers as InstallCause. */
export const FILL_FAULT = 0,
  FILL_PREFETCH = 1,
  FILL_BACKGROUND = 2
const RINGS = 3

/** Header words: lock, sequence (bumped on every push), stopped; then per ring head, tail. */
const H_LOCK = 0,
  H_SEQ = 1,
  H_STOP = 2,
  H_RINGS = 3
const HEADER = H_RINGS + 2 * RINGS

export interface FillQueueBuffers {
  words: SharedArrayBuffer
  capacity: number
}

export class FillQueue {
  readonly capacity: number
  private readonly w: Int32Array

  constructor(readonly buffers: FillQueueBuffers) {
    this.capacity = buffers.capacity
    this.w = new Int32Array(buffers.words)
  }

  /** `capacity` entries a ring (a power of two). */
  static allocate(capacity: number): FillQueue {
    let cap = 1
    while (cap < capacity) cap *= 2
    return new FillQueue({ words: new SharedArrayBuffer((HEADER + RINGS * cap) * 4), capacity: cap })
  }

  private lock(): void {
    const w = this.w
    while (Atomics.compareExchange(w, H_LOCK, 0, 1) !== 0) {
      /* a few instructions' hold: spin */
    }
  }

  private unlock(): void {
    Atomics.store(this.w, H_LOCK, 0)
  }

  /** Queues `folio` at `priority`; false when that ring is full. */
  push(folio: number, priority: number): boolean {
    const w = this.w
    const cap = this.capacity
    const at = H_RINGS + 2 * priority
    this.lock()
    const head = w[at],
      tail = w[at + 1]
    const ok = ((tail - head) | 0) < cap
    if (ok) {
      w[HEADER + priority * cap + (tail & (cap - 1))] = folio
      w[at + 1] = (tail + 1) | 0
    }
    this.unlock()
    if (ok) {
      Atomics.add(w, H_SEQ, 1)
      Atomics.notify(w, H_SEQ)
    }
    return ok
  }

  /** Free entries in `priority`'s ring (producers of background work pace themselves by it). */
  room(priority: number): number {
    const at = H_RINGS + 2 * priority
    return this.capacity - ((Atomics.load(this.w, at + 1) - Atomics.load(this.w, at)) | 0)
  }

  /** The highest-priority request, or -1 when every ring is empty. `priorityOut[0]` gets its
   * priority. */
  pop(priorityOut?: Int32Array): number {
    const w = this.w
    const cap = this.capacity
    this.lock()
    for (let p = 0; p < RINGS; p++) {
      const at = H_RINGS + 2 * p
      const head = w[at]
      if (head !== w[at + 1]) {
        const folio = w[HEADER + p * cap + (head & (cap - 1))]
        w[at] = (head + 1) | 0
        this.unlock()
        if (priorityOut !== undefined) priorityOut[0] = p
        return folio
      }
    }
    this.unlock()
    return -1
  }

  /** The sequence word's value: wait(seen) returns once it moved past it (or on timeout). */
  sequence(): number {
    return Atomics.load(this.w, H_SEQ)
  }

  /** Blocks the calling worker until something is pushed after `seen`, stop(), or timeout. */
  wait(seen: number, timeoutMs: number): void {
    Atomics.wait(this.w, H_SEQ, seen, timeoutMs)
  }

  stop(): void {
    Atomics.store(this.w, H_STOP, 1)
    Atomics.add(this.w, H_SEQ, 1)
    Atomics.notify(this.w, H_SEQ)
  }

  get stopped(): boolean {
    return Atomics.load(this.w, H_STOP) !== 0
  }
}
