// poll(2) over a fixed set of descriptors, reusing one pollfd array.
import { UffdError } from './errors.js'
import { errno, libc } from './libc.js'

export class PollSet {
  private readonly buffer: Buffer
  private readonly i32: Int32Array
  private readonly i16: Int16Array
  size = 0

  constructor(capacity: number) {
    this.buffer = Buffer.alloc(capacity * 8)
    this.i32 = new Int32Array(this.buffer.buffer, this.buffer.byteOffset, capacity * 2)
    this.i16 = new Int16Array(this.buffer.buffer, this.buffer.byteOffset, capacity * 4)
  }

  /** Watches `fd` for `events` in slot `slot` (slots [0, size) are polled). */
  set(slot: number, fd: number, events: number): void {
    this.i32[slot * 2] = fd
    this.i16[slot * 4 + 2] = events
    this.i16[slot * 4 + 3] = 0
    if (slot >= this.size) this.size = slot + 1
  }

  /** Returns how many slots have events; 0 on timeout or EINTR. */
  wait(timeoutMs: number): number {
    const n = libc.poll(this.buffer, this.size, timeoutMs)
    if (n < 0) {
      const e = errno()
      if (e === 4) return 0
      throw new UffdError('poll', e)
    }
    return n
  }

  revents(slot: number): number {
    return this.i16[slot * 4 + 3] & 0xffff
  }
}
