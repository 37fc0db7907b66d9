// What a session worker shares with the server's main thread through shared memory: a
// heartbeat its session bumps each turn of its loop, what it is doing, and the descriptors it
// holds. The main thread reads it to see a session that stopped making progress (a policy that
// never returns) and, once such a worker is terminated, to close what it left open.

/** Int32 slots. FILL_FD and FILL_SLOT: the eventfd a session registered with the decoded
 * cache's fill notifier, and its slot there (fill workers signal it). */
const HEARTBEAT = 0,
  STATE = 1,
  CONN = 2,
  UFFD = 3,
  TRACE = 4,
  FILL_FD = 5,
  FILL_SLOT = 6,
  PIDFD = 7
const SLOTS = 8

/** STATE values. */
export const SLOT_IDLE = 0
/** Holds a guest's connection and uffd (handed over, not serving yet). */
export const SLOT_ADMITTING = 1
/** In Session.run(): the heartbeat moves while it makes progress. */
export const SLOT_SERVING = 2
/** Closed the guest's descriptors itself. */
export const SLOT_RELEASED = 3

export function createSlot(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(SLOTS * 4)
  const a = new Int32Array(sab)
  a[CONN] = a[UFFD] = a[TRACE] = a[FILL_FD] = a[FILL_SLOT] = a[PIDFD] = -1
  return sab
}

/** A view of one worker's slot, from either side. */
export class SessionSlot {
  /** The session's loop bumps `words[0]`: odd while it waits, even while it works (see
   * Session's heartbeat option). */
  readonly words: Int32Array

  constructor(sab: SharedArrayBuffer) {
    this.words = new Int32Array(sab)
  }

  get heartbeat(): number {
    return Atomics.load(this.words, HEARTBEAT)
  }
  get state(): number {
    return Atomics.load(this.words, STATE)
  }

  /** Worker side: it now owns these descriptors. */
  hold(conn: number, uffd: number, pidfd: number): void {
    Atomics.store(this.words, CONN, conn)
    Atomics.store(this.words, UFFD, uffd)
    Atomics.store(this.words, PIDFD, pidfd)
    Atomics.store(this.words, STATE, SLOT_ADMITTING)
  }

  holdTrace(fd: number): void {
    Atomics.store(this.words, TRACE, fd)
  }

  /** Worker side: the fill notifier slot its session took for `fd` (-1, -1 once released). */
  holdFillSlot(fd: number, fillSlot: number): void {
    Atomics.store(this.words, FILL_SLOT, fillSlot)
    Atomics.store(this.words, FILL_FD, fd)
  }
  serving(): void {
    Atomics.store(this.words, STATE, SLOT_SERVING)
  }
  /** Worker side: out of Session.run() (no longer watched), still holding its descriptors. */
  doneServing(): void {
    Atomics.store(this.words, STATE, SLOT_ADMITTING)
  }

  /** Worker side: everything closed (or never held). */
  release(): void {
    Atomics.store(this.words, STATE, SLOT_RELEASED)
    Atomics.store(this.words, CONN, -1)
    Atomics.store(this.words, UFFD, -1)
    Atomics.store(this.words, TRACE, -1)
    Atomics.store(this.words, PIDFD, -1)
  }

  /** Main side, once the worker is gone: a fill notifier slot it did not release, and its
   * eventfd (undefined when none). Not tied to the guest's descriptors: a slot is released by
   * the session itself, whatever the state. */
  leftFillSlot(): { fd: number; slot: number } | undefined {
    const fd = Atomics.load(this.words, FILL_FD)
    return fd < 0 ? undefined : { fd, slot: Atomics.load(this.words, FILL_SLOT) }
  }

  /** Worker side: idle again (a guest refused, its descriptors closed). */
  idle(): void {
    this.release()
    Atomics.store(this.words, STATE, SLOT_IDLE)
  }

  /** Main side, once the worker is gone: what it still held. */
  leftOpen(): { conn: number; uffd: number; trace: number; pidfd: number } | undefined {
    const s = this.state
    if (s !== SLOT_ADMITTING && s !== SLOT_SERVING) return undefined
    const w = this.words
    return { conn: Atomics.load(w, CONN), uffd: Atomics.load(w, UFFD), trace: Atomics.load(w, TRACE), pidfd: Atomics.load(w, PIDFD) }
  }
}
