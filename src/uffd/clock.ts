// A monotonic clock for the fault path that allocates nothing: clock_gettime(CLOCK_MONOTONIC)
// into a preallocated timespec. performance.now() returns a fresh heap number per call (16
// bytes a call, measured), which the fault loop called twice a fault.
import { libc } from './libc.js'

const CLOCK_MONOTONIC = 1

export class MonotonicClock {
  private readonly ts = Buffer.alloc(16)
  /** tv_sec low/high, tv_nsec low/high (little-endian u64s). */
  private readonly words = new Uint32Array(this.ts.buffer, this.ts.byteOffset, 4)
  private readonly baseSec: number
  private readonly offsetMs: number

  constructor() {
    libc.clock_gettime(CLOCK_MONOTONIC, this.ts)
    this.baseSec = this.words[0]
    this.offsetMs = 0
    // Same origin as performance.now() in this thread, so the two can be mixed.
    this.offsetMs = performance.now() - this.nowMs()
  }

  /** Milliseconds on performance.now()'s scale, with nanosecond resolution. */
  nowMs(): number {
    libc.clock_gettime(CLOCK_MONOTONIC, this.ts)
    return (this.words[0] - this.baseSec) * 1e3 + this.words[2] / 1e6 + this.offsetMs
  }
}
