// How fill workers tell sessions that folios arrived: each session that waits for fills holds a
// slot with its eventfd; a worker signals every armed slot after it publishes a folio. The
// table lives in a SharedArrayBuffer, so neither side goes through the main thread.
import * as uffd from '../uffd/index.js'

/** Per slot: eventfd (-1 free), armed (1 while its session has runs waiting for fills), and
 * how many workers are signalling it right now (its owner closes the eventfd only at 0). */
const WORDS = 3
export interface FillNotifierBuffers {
  words: SharedArrayBuffer
  slots: number
}

export class FillNotifier {
  readonly slots: number
  private readonly w: Int32Array

  constructor(readonly buffers: FillNotifierBuffers) {
    this.slots = buffers.slots
    this.w = new Int32Array(buffers.words)
  }

  static allocate(slots: number): FillNotifier {
    const n = new FillNotifier({ words: new SharedArrayBuffer(slots * WORDS * 4), slots })
    for (let s = 0; s < slots; s++) n.w[WORDS * s] = -1
    return n
  }

  /** Takes a free slot for `eventFd`; -1 when all are taken (the session then polls). */
  acquire(eventFd: number): number {
    for (let s = 0; s < this.slots; s++) {
      if (Atomics.compareExchange(this.w, WORDS * s, -1, eventFd) === -1) return s
    }
    return -1
  }

  /** Frees the slot; its eventfd may be closed once this returns. */
  release(slot: number): void {
    if (slot < 0) return
    const w = this.w
    Atomics.store(w, WORDS * slot + 1, 0)
    Atomics.store(w, WORDS * slot, -1)
    while (Atomics.load(w, WORDS * slot + 2) !== 0) {
      /* a worker is inside one write(2) */
    }
  }

  arm(slot: number, armed: boolean): void {
    if (slot >= 0) Atomics.store(this.w, WORDS * slot + 1, armed ? 1 : 0)
  }

  /** Signals every armed slot's eventfd. */
  notifyArmed(): void {
    const w = this.w
    for (let s = 0; s < this.slots; s++) {
      const at = WORDS * s
      if (Atomics.load(w, at + 1) === 0) continue
      Atomics.add(w, at + 2, 1)
      const fd = Atomics.load(w, at)
      if (fd >= 0) uffd.signalEventFd(fd)
      Atomics.sub(w, at + 2, 1)
    }
  }
}
