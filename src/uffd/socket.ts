// Unix stream sockets with SCM_RIGHTS, which node:net cannot do: listen, accept, peer
// credentials, receive a message with its file descriptors, send with one.
import { chmodSync, renameSync, unlinkSync } from 'node:fs'
import * as abi from './abi.js'
import { UffdError } from './errors.js'
import { addressOf, errno, libc } from './libc.js'

const { EAGAIN, EINTR, ECONNABORTED } = abi
const SUN_PATH_MAX = 108
const MAX_FDS = 16

function sockaddrUnix(path: string): Buffer {
  const bytes = Buffer.from(path)
  if (bytes.length >= SUN_PATH_MAX) throw new UffdError('bind', abi.ENAMETOOLONG, `socket path longer than ${SUN_PATH_MAX - 1} bytes: ${path}`)
  const addr = Buffer.alloc(2 + SUN_PATH_MAX)
  addr.writeUInt16LE(abi.AF_UNIX, 0)
  bytes.copy(addr, 2)
  return addr
}

function newSocket(): number {
  const fd = libc.socket(abi.AF_UNIX, abi.SOCK_STREAM | abi.SOCK_CLOEXEC | abi.SOCK_NONBLOCK, 0)
  if (fd < 0) throw new UffdError('socket', errno())
  return fd
}

/** Listens on `path` with `mode` (0600 by default) from the first instant: bound under a
 * temporary name, chmod-ed, then renamed into place, so no other user can ever connect unless
 * `mode` lets them. */
export function listenUnix(path: string, backlog = 128, mode = 0o600): number {
  const fd = newSocket()
  const tmp = `${path}.${process.pid}.tmp`
  try {
    try {
      unlinkSync(tmp)
    } catch {
      /* not there */
    }
    if (libc.bind(fd, sockaddrUnix(tmp), 2 + SUN_PATH_MAX) < 0) throw new UffdError('bind', errno(), tmp)
    chmodSync(tmp, mode)
    renameSync(tmp, path)
    if (libc.listen(fd, backlog) < 0) throw new UffdError('listen', errno(), path)
    return fd
  } catch (err) {
    libc.close(fd)
    try {
      unlinkSync(tmp)
    } catch {
      /* not there */
    }
    throw err
  }
}

/** Connects to a Unix socket (blocking connect on a non-blocking socket: loopback completes
 * at once or fails). */
export function connectUnix(path: string): number {
  const fd = newSocket()
  if (libc.connect(fd, sockaddrUnix(path), 2 + SUN_PATH_MAX) < 0) {
    const e = errno()
    libc.close(fd)
    throw new UffdError('connect', e, path)
  }
  return fd
}

/** Accepts one pending connection (non-blocking, close-on-exec); -1 when none is pending. */
export function acceptConnection(listenFd: number): number {
  const fd = libc.accept4(listenFd, null, null, abi.SOCK_CLOEXEC | abi.SOCK_NONBLOCK)
  if (fd >= 0) return fd
  const e = errno()
  if (e === EAGAIN || e === EINTR || e === ECONNABORTED) return -1
  throw new UffdError('accept4', e)
}

export interface PeerCredentials {
  pid: number
  uid: number
  gid: number
}

export function peerCredentials(fd: number): PeerCredentials {
  const cred = Buffer.alloc(12)
  const len = Buffer.alloc(4)
  len.writeUInt32LE(12)
  if (libc.getsockopt(fd, abi.SOL_SOCKET, abi.SO_PEERCRED, cred, len) < 0) throw new UffdError('getsockopt(SO_PEERCRED)', errno())
  return { pid: cred.readInt32LE(0), uid: cred.readUInt32LE(4), gid: cred.readUInt32LE(8) }
}

/** A pidfd of the process that connected to socket `fd` (SO_PEERPIDFD: the kernel took it at
 * connect(2), so it cannot name a process that reused the pid since); -1 where the kernel is
 * older than 6.5 (the caller falls back to pidfd_open of SO_PEERCRED's pid). */
export function peerPidfd(fd: number): number {
  const out = Buffer.alloc(4)
  const len = Buffer.alloc(4)
  len.writeUInt32LE(4)
  if (libc.getsockopt(fd, abi.SOL_SOCKET, abi.SO_PEERPIDFD, out, len) < 0) {
    const e = errno()
    if (e === abi.ENOPROTOOPT) return -1
    throw new UffdError('getsockopt(SO_PEERPIDFD)', e)
  }
  return out.readInt32LE(0)
}

export interface ReceivedMessage {
  /** Bytes received into the buffer; 0 at end of stream; -1 when nothing is pending. */
  bytes: number
  /** Descriptors that arrived with it, already close-on-exec in this process. */
  fds: number[]
  /** The sender sent more descriptors than fit (the kernel closed the rest). */
  truncated: boolean
}

/** One recvmsg(2) into `into` at `offset`, collecting SCM_RIGHTS descriptors. */
export class MessageReceiver {
  private readonly msg = Buffer.alloc(56)
  private readonly iov = Buffer.alloc(16)
  private readonly control = Buffer.alloc(16 + 4 * MAX_FDS + 8)
  private readonly controlAddress = addressOf(this.control)
  private readonly iovAddress = addressOf(this.iov)

  receive(fd: number, into: Buffer, offset: number): ReceivedMessage {
    this.iov.writeBigUInt64LE(BigInt(addressOf(into) + offset), 0)
    this.iov.writeBigUInt64LE(BigInt(into.length - offset), 8)
    this.msg.fill(0)
    this.msg.writeBigUInt64LE(BigInt(this.iovAddress), 16) // msg_iov
    this.msg.writeBigUInt64LE(1n, 24) // msg_iovlen
    this.msg.writeBigUInt64LE(BigInt(this.controlAddress), 32) // msg_control
    this.msg.writeBigUInt64LE(BigInt(this.control.length), 40) // msg_controllen
    this.control.fill(0)
    const n = Number(libc.recvmsg(fd, this.msg, abi.MSG_CMSG_CLOEXEC | abi.MSG_DONTWAIT))
    if (n < 0) {
      const e = errno()
      if (e === EAGAIN || e === EINTR) return { bytes: -1, fds: [], truncated: false }
      throw new UffdError('recvmsg', e)
    }
    const flags = this.msg.readInt32LE(48)
    const fds: number[] = []
    const controlLen = Number(this.msg.readBigUInt64LE(40))
    let at = 0
    while (at + 16 <= controlLen) {
      const len = Number(this.control.readBigUInt64LE(at))
      if (len < 16) break
      const level = this.control.readInt32LE(at + 8)
      const type = this.control.readInt32LE(at + 12)
      if (level === abi.SOL_SOCKET && type === abi.SCM_RIGHTS) {
        for (let p = at + 16; p + 4 <= at + len; p += 4) fds.push(this.control.readInt32LE(p))
      }
      at += (len + 7) & ~7
    }
    return { bytes: n, fds, truncated: (flags & abi.MSG_CTRUNC) !== 0 }
  }
}

/** sendmsg(2) of `body` with the descriptors `fds` attached (what a guest does). */
export function sendWithFds(fd: number, body: Buffer, fds: number[]): number {
  const iov = Buffer.alloc(16)
  iov.writeBigUInt64LE(BigInt(addressOf(body)), 0)
  iov.writeBigUInt64LE(BigInt(body.length), 8)
  const controlLen = fds.length ? (16 + 4 * fds.length + 7) & ~7 : 0
  const control = Buffer.alloc(Math.max(controlLen, 8))
  if (fds.length) {
    control.writeBigUInt64LE(BigInt(16 + 4 * fds.length), 0)
    control.writeInt32LE(abi.SOL_SOCKET, 8)
    control.writeInt32LE(abi.SCM_RIGHTS, 12)
    for (let i = 0; i < fds.length; i++) control.writeInt32LE(fds[i], 16 + 4 * i)
  }
  const msg = Buffer.alloc(56)
  msg.writeBigUInt64LE(BigInt(addressOf(iov)), 16)
  msg.writeBigUInt64LE(1n, 24)
  if (fds.length) {
    msg.writeBigUInt64LE(BigInt(addressOf(control)), 32)
    msg.writeBigUInt64LE(BigInt(controlLen), 40)
  }
  const n = Number(libc.sendmsg(fd, msg, abi.MSG_NOSIGNAL))
  if (n < 0) throw new UffdError('sendmsg', errno())
  return n
}

/** Writes `data` to a socket without SIGPIPE; returns bytes written (-1 if it would block). */
export function sendBytes(fd: number, data: Buffer): number {
  const n = Number(libc.send(fd, data, data.length, abi.MSG_NOSIGNAL | abi.MSG_DONTWAIT))
  if (n < 0) {
    const e = errno()
    if (e === EAGAIN || e === EINTR) return -1
    throw new UffdError('send', e)
  }
  return n
}

/** Reads what a peer sent: bytes read, 0 at end of stream (or reset), -1 if nothing pending. */
export function receiveBytes(fd: number, into: Buffer): number {
  const n = Number(libc.recv(fd, into, into.length, abi.MSG_DONTWAIT))
  if (n >= 0) return n
  const e = errno()
  return e === EAGAIN || e === EINTR ? -1 : 0
}

export function closeFd(fd: number): void {
  if (fd >= 0) libc.close(fd)
}
