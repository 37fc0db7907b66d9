// Userfaultfd: one uffd and the ioctls faultline issues on it. Argument structs are
// preallocated per instance and filled through typed-array views, so installing pages
// allocates nothing and creates no BigInt.
import { readlinkSync } from 'node:fs'
import * as abi from './abi.js'
import { UffdError, UffdPermissionError } from './errors.js'
import { addressOf, errno, libc, SYS_USERFAULTFD } from './libc.js'

const { EPERM, ENOENT, ESRCH, EINTR, EAGAIN, EEXIST, EACCES } = abi

const TWO32 = 4294967296

/** Slots of Userfaultfd.target. */
export const TARGET_DST = 0,
  TARGET_SRC = 1

function putU64(u32: Uint32Array, index: number, value: number): void {
  const lo = value % TWO32
  u32[index] = lo
  u32[index + 1] = (value - lo) / TWO32
}

/** Signed 64-bit value stored at u32 words [index, index+1]. */
function getS64(u32: Uint32Array, i32: Int32Array, index: number): number {
  return i32[index + 1] * TWO32 + u32[index]
}

export function featureNames(features: number): string[] {
  return abi.FEATURE_NAMES.filter(([bit]) => (features & bit) !== 0).map(([, name]) => name)
}

/** Creates a uffd (O_CLOEXEC|O_NONBLOCK) with userfaultfd(2), or /dev/userfaultfd when the
 * syscall is refused (vm.unprivileged_userfaultfd=0 but the device is accessible), or else one
 * for user-mode faults only (UFFD_USER_MODE_ONLY, allowed unprivileged since Linux 5.11), as
 * native/uffd.c does. Every uffd faultline creates itself (the feature probe, the rehearsal's
 * scratch mapping) covers memory only its own JavaScript touches, so user mode is enough;
 * guests bring their own. */
export function openUserfaultfd(): number {
  const flags = abi.O_CLOEXEC | abi.O_NONBLOCK
  const fd = Number(libc.syscall(SYS_USERFAULTFD, 'int', flags))
  if (fd >= 0) return fd
  const sysErr = errno()
  if (sysErr !== EPERM && sysErr !== EACCES) throw new UffdError('userfaultfd', sysErr)
  const dev = libc.open('/dev/userfaultfd', abi.O_RDWR | abi.O_CLOEXEC, 0)
  if (dev >= 0) {
    const viaDev = libc.ioctlInt(dev, abi.USERFAULTFD_IOC_NEW, flags)
    libc.close(dev)
    if (viaDev >= 0) return viaDev
  }
  const userMode = Number(libc.syscall(SYS_USERFAULTFD, 'int', flags | abi.UFFD_USER_MODE_ONLY))
  if (userMode >= 0) return userMode
  throw new UffdPermissionError(sysErr)
}

let probedFeatures = -1

/** The features this kernel offers, probed once on a throwaway uffd (UFFDIO_API can be
 * issued only once per uffd, so the real one must ask for exactly what it wants). */
export function supportedFeatures(): number {
  if (probedFeatures < 0) {
    const probe = new Userfaultfd(openUserfaultfd())
    try {
      probedFeatures = probe.api(0).features
    } finally {
      probe.close()
    }
  }
  return probedFeatures
}

/** True when `fd` in this process is a userfaultfd (and not a socket, file, ...). */
export function isUserfaultfd(fd: number): boolean {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[userfaultfd]'
  } catch {
    return false
  }
}

export interface ApiResult {
  /** Features enabled on this uffd. */
  features: number
  /** Wanted features this kernel lacks (not enabled). */
  missing: string[]
}

export class Userfaultfd {
  readonly fd: number
  private closed = false
  private readonly args = Buffer.alloc(48)
  private readonly u32 = new Uint32Array(this.args.buffer, this.args.byteOffset, 12)
  private readonly i32 = new Int32Array(this.args.buffer, this.args.byteOffset, 12)
  /** Destination and source of copyAtTarget/zeropageAtTarget. The fault path writes addresses
   * here: passed as arguments they would be boxed into a heap number per call (V8's small
   * integers stop at 2^30). */
  readonly target = new Float64Array(2)

  constructor(fd: number) {
    this.fd = fd
  }

  static create(): Userfaultfd {
    return new Userfaultfd(openUserfaultfd())
  }

  /** UFFDIO_API: enables the wanted features the kernel has; throws if a `required` one is
   * missing. */
  api(wanted: number, required = 0): ApiResult {
    const offered = wanted === 0 ? 0 : supportedFeatures()
    const missingBits = wanted & ~offered
    if ((required & missingBits) !== 0) {
      throw new UffdError('UFFDIO_API', abi.EOPNOTSUPP, `kernel lacks required features ${featureNames(required & missingBits).join(', ')}`)
    }
    const ask = wanted & offered
    this.args.fill(0)
    putU64(this.u32, 0, abi.UFFD_API)
    putU64(this.u32, 2, ask)
    if (libc.ioctl(this.fd, abi.UFFDIO_API | 0, this.args) < 0) throw new UffdError('UFFDIO_API', errno(), `fd ${this.fd}`)
    const features = wanted === 0 ? getS64(this.u32, this.i32, 2) : ask
    return { features, missing: featureNames(missingBits) }
  }

  register(start: number, length: number, mode = abi.UFFDIO_REGISTER_MODE_MISSING): void {
    this.args.fill(0)
    putU64(this.u32, 0, start)
    putU64(this.u32, 2, length)
    putU64(this.u32, 4, mode)
    if (libc.ioctl(this.fd, abi.UFFDIO_REGISTER | 0, this.args) < 0) {
      throw new UffdError('UFFDIO_REGISTER', errno(), `0x${start.toString(16)}+${length}`)
    }
  }

  unregister(start: number, length: number): void {
    this.rangeIoctl(abi.UFFDIO_UNREGISTER, 'UFFDIO_UNREGISTER', start, length)
  }

  wake(start: number, length: number): void {
    this.rangeIoctl(abi.UFFDIO_WAKE, 'UFFDIO_WAKE', start, length)
  }

  private rangeIoctl(request: number, op: string, start: number, length: number): void {
    putU64(this.u32, 0, start)
    putU64(this.u32, 2, length)
    if (libc.ioctl(this.fd, request | 0, this.args) < 0) {
      const e = errno()
      // The range went away (guest unmapped it, or exited): nothing left to do there.
      if (e === ENOENT || e === ESRCH) return
      throw new UffdError(op, e, `0x${start.toString(16)}+${length}`)
    }
  }

  /**
   * UFFDIO_COPY of `length` bytes from our memory at `srcAddress` to the guest at `dst`.
   * Returns the bytes handled from the start of the range: all of it when done (pages that
   * already existed, EEXIST, are skipped and count as done; a faulting thread waiting on one
   * of them is woken), or fewer when the kernel said EAGAIN (the guest's address space is
   * changing: read pending events, then retry the rest). Throws GuestGoneError when the
   * guest's address space no longer exists.
   */
  copy(dst: number, srcAddress: number, length: number, pageSize: number): number {
    this.target[TARGET_DST] = dst
    this.target[TARGET_SRC] = srcAddress
    return this.fill(abi.UFFDIO_COPY, length, pageSize)
  }

  /** copy() from target[TARGET_SRC] to target[TARGET_DST]. `dontWake`: no thread waits on
   * these pages (a prefetch), so the kernel need not look for one (UFFDIO_COPY_MODE_DONTWAKE;
   * a thread that faulted on one meanwhile is woken when its fault is read). */
  copyAtTarget(length: number, pageSize: number, dontWake = false): number {
    return this.fill(abi.UFFDIO_COPY, length, pageSize, dontWake ? abi.UFFDIO_COPY_MODE_DONTWAKE : 0)
  }

  /** UFFDIO_ZEROPAGE over `length` bytes at `dst`; same return contract as copy(). */
  zeropage(dst: number, length: number, pageSize: number): number {
    this.target[TARGET_DST] = dst
    return this.fill(abi.UFFDIO_ZEROPAGE, length, pageSize)
  }

  /** zeropage() at target[TARGET_DST]; `dontWake` as for copyAtTarget. */
  zeropageAtTarget(length: number, pageSize: number, dontWake = false): number {
    return this.fill(abi.UFFDIO_ZEROPAGE, length, pageSize, dontWake ? abi.UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0)
  }

  /** UFFDIO_POISON: later accesses to the range raise SIGBUS in the guest instead of
   * reading memory faultline could not vouch for. */
  poison(dst: number, length: number, pageSize: number): number {
    this.target[TARGET_DST] = dst
    return this.fill(abi.UFFDIO_POISON, length, pageSize)
  }

  /** The range starts at target[TARGET_DST]; COPY's source at target[TARGET_SRC]. */
  private fill(request: number, length: number, pageSize: number, mode = 0): number {
    const u32 = this.u32
    const dst = this.target[TARGET_DST]
    const src = request === abi.UFFDIO_COPY ? this.target[TARGET_SRC] : -1
    let done = 0
    while (done < length) {
      // copy: dst, src, len, mode, copy (result at word 8); zeropage/poison: start, len,
      // mode, result (word 6).
      let resultWord: number
      // Written out rather than through putU64: V8 did not inline it here, and each address
      // passed to it was boxed (measured: one heap number every few faults).
      const d = dst + done,
        dLow = d % TWO32
      const l = length - done,
        lLow = l % TWO32
      u32[0] = dLow
      u32[1] = (d - dLow) / TWO32
      if (src >= 0) {
        const s = src + done,
          sLow = s % TWO32
        u32[2] = sLow
        u32[3] = (s - sLow) / TWO32
        u32[4] = lLow
        u32[5] = (l - lLow) / TWO32
        u32[6] = mode
        u32[7] = 0
        resultWord = 8
      } else {
        u32[2] = lLow
        u32[3] = (l - lLow) / TWO32
        u32[4] = mode
        u32[5] = 0
        resultWord = 6
      }
      // The kernel writes the result only on some paths (not when the guest's address space is
      // gone: ESRCH): a count left from the last call would pass for progress.
      u32[resultWord] = 0
      u32[resultWord + 1] = 0
      if (libc.ioctl(this.fd, request | 0, this.args) === 0) return length
      const e = errno()
      const result = getS64(u32, this.i32, resultWord)
      if (result > 0) {
        done += result
        continue
      }
      if (e === EEXIST) {
        this.wake(dst + done, pageSize)
        done += pageSize
        continue
      }
      if (e === EAGAIN) return done
      if (e === EINTR) continue
      if (e === ENOENT) return length // the range was unmapped meanwhile: nothing to serve
      if (e === ESRCH) throw new GuestGoneError(request === abi.UFFDIO_COPY ? 'UFFDIO_COPY' : 'UFFDIO_ZEROPAGE')
      const op = request === abi.UFFDIO_COPY ? 'UFFDIO_COPY' : request === abi.UFFDIO_ZEROPAGE ? 'UFFDIO_ZEROPAGE' : 'UFFDIO_POISON'
      throw new UffdError(op, e, `0x${(dst + done).toString(16)}+${length - done}`)
    }
    return length
  }

  /** False once the address space this uffd serves is gone (its process exited or exec'd).
   * The probe is UFFDIO_WRITEPROTECT clearing protection on a page of `address`'s range: on
   * memory registered in missing mode only it changes nothing (ENOENT); ESRCH means the mm is
   * gone. (A forked child's uffd gives no other sign of the child's exit.) */
  isAttached(address: number, pageSize: number): boolean {
    const u32 = this.u32
    const lo = address % TWO32
    u32[0] = lo
    u32[1] = (address - lo) / TWO32
    u32[2] = pageSize
    u32[3] = 0
    u32[4] = 0
    u32[5] = 0
    if (libc.ioctl(this.fd, abi.UFFDIO_WRITEPROTECT | 0, this.args) === 0) return true
    return errno() !== ESRCH
  }

  /** Reads up to `messages.capacity` pending events; 0 when none are pending. */
  readMessages(messages: UffdMessages): number {
    const n = libc.read(this.fd, messages.buffer, messages.buffer.length)
    if (n < 0) {
      const e = errno()
      if (e === EAGAIN || e === EINTR) return 0
      throw new UffdError('read(uffd)', e)
    }
    messages.count = n / abi.UFFD_MSG_SIZE
    return messages.count
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    libc.close(this.fd)
  }
}

/** The guest's address space is gone (it exited or exec'd): its session is over. */
export class GuestGoneError extends UffdError {
  override readonly code: string = 'FL_ERR_GUEST_GONE'
  constructor(op: string) {
    super(op, ESRCH, 'the guest has exited')
  }
}

/** A reusable batch of uffd_msg records with accessors that allocate nothing. */
export class UffdMessages {
  readonly buffer: Buffer
  readonly capacity: number
  count = 0
  private readonly u32: Uint32Array
  private readonly i32: Int32Array

  constructor(capacity = 64) {
    this.capacity = capacity
    this.buffer = Buffer.alloc(capacity * abi.UFFD_MSG_SIZE)
    this.u32 = new Uint32Array(this.buffer.buffer, this.buffer.byteOffset, capacity * 8)
    this.i32 = new Int32Array(this.buffer.buffer, this.buffer.byteOffset, capacity * 8)
  }

  event(i: number): number {
    return this.buffer[i * abi.UFFD_MSG_SIZE]
  }
  /** pagefault: UFFD_PAGEFAULT_FLAG_* */
  faultFlags(i: number): number {
    return this.u32[i * 8 + 2]
  }
  faultAddress(i: number): number {
    return getS64(this.u32, this.i32, i * 8 + 4)
  }
  /** pagefault: faulting thread id (with UFFD_FEATURE_THREAD_ID, else 0). */
  faultThreadId(i: number): number {
    return this.u32[i * 8 + 6]
  }
  /** fork: the child's uffd, already installed in this process. */
  forkFd(i: number): number {
    return this.u32[i * 8 + 2]
  }
  /** remap: from, to, len. */
  remapFrom(i: number): number {
    return getS64(this.u32, this.i32, i * 8 + 2)
  }
  remapTo(i: number): number {
    return getS64(this.u32, this.i32, i * 8 + 4)
  }
  remapLength(i: number): number {
    return getS64(this.u32, this.i32, i * 8 + 6)
  }
  /** remove / unmap: [start, end). */
  rangeStart(i: number): number {
    return getS64(this.u32, this.i32, i * 8 + 2)
  }
  rangeEnd(i: number): number {
    return getS64(this.u32, this.i32, i * 8 + 4)
  }
}

/** Page-aligned memory of our own, the source of UFFDIO_COPY (the kernel requires an aligned
 * source address). */
export class CopySourceBuffer {
  readonly buffer: Buffer
  readonly address: number

  constructor(sizeBytes: number, alignBytes = 4096) {
    const raw = Buffer.alloc(sizeBytes + alignBytes)
    const base = addressOf(raw)
    const pad = (alignBytes - (base % alignBytes)) % alignBytes
    this.buffer = raw.subarray(pad, pad + sizeBytes)
    this.address = base + pad
  }
}
