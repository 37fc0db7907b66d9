// Memory and process handles: mmap/munmap/madvise on our own memory, eventfds to wake a
// blocked fault loop, and pidfds to take a descriptor from another process.
import * as abi from './abi.js'
import { UffdError } from './errors.js'
import { errno, libc, viewOf } from './libc.js'

export interface Mapping {
  address: number
  length: number
  bytes: Buffer
}

export function mapAnonymous(length: number): Mapping {
  const address = Number(libc.mmap(0, length, abi.PROT_READ | abi.PROT_WRITE, abi.MAP_PRIVATE | abi.MAP_ANONYMOUS, -1, 0))
  if (address === -1) throw new UffdError('mmap', errno(), `${length} bytes`)
  return { address, length, bytes: viewOf(address, length) }
}

export function unmap(m: Mapping): void {
  if (libc.munmap(m.address, m.length) < 0) throw new UffdError('munmap', errno())
}

export function adviseDontNeed(address: number, length: number): void {
  if (libc.madvise(address, length, abi.MADV_DONTNEED) < 0) throw new UffdError('madvise', errno())
}

export function createEventFd(): number {
  const fd = libc.eventfd(0, abi.EFD_CLOEXEC | abi.EFD_NONBLOCK)
  if (fd < 0) throw new UffdError('eventfd', errno())
  return fd
}

const one = Buffer.alloc(8)
one.writeBigUInt64LE(1n)
const drain = Buffer.alloc(8)

export function signalEventFd(fd: number): void {
  libc.write(fd, one, 8)
}

export function drainEventFd(fd: number): void {
  libc.read(fd, drain, 8)
}

export function pidfdOpen(pid: number): number {
  const fd = Number(libc.syscall(abi.SYS_PIDFD_OPEN, 'int', pid, 'unsigned int', 0))
  if (fd < 0) throw new UffdError('pidfd_open', errno(), `pid ${pid}`)
  return fd
}

/** Sends `signal` to the process behind `pidfd` (never to a process that reused its pid).
 * Returns false when that process is gone already (ESRCH). */
export function pidfdSendSignal(pidfd: number, signal: number): boolean {
  const r = Number(libc.syscall(abi.SYS_PIDFD_SEND_SIGNAL, 'int', pidfd, 'int', signal, 'void *', null, 'unsigned int', 0))
  if (r === 0) return true
  const e = errno()
  if (e === abi.ESRCH) return false
  throw new UffdError('pidfd_send_signal', e, `pidfd ${pidfd}`)
}

/** Duplicates descriptor `targetFd` of the process behind `pidfd` into this one. */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  const fd = Number(libc.syscall(abi.SYS_PIDFD_GETFD, 'int', pidfd, 'int', targetFd, 'unsigned int', 0))
  if (fd < 0) throw new UffdError('pidfd_getfd', errno(), `fd ${targetFd}`)
  return fd
}
