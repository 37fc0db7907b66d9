// koffi bindings to the libc calls faultline makes. Pointers never leave src/uffd/: callers
// pass Buffers, and addresses are plain Numbers (user space fits in 2^53).
import { createRequire } from 'node:module'
import { arch } from 'node:process'
import { SYS_USERFAULTFD_ARM64, SYS_USERFAULTFD_X64 } from './abi.js'

const require = createRequire(import.meta.url)
type Koffi = typeof import('koffi')
export const koffi: Koffi = require('koffi')

const lib = koffi.load('libc.so.6')

// Buffers are passed as `void *`; addresses the kernel reads from inside structs are written
// by the caller as Numbers.
export const libc = {
  close: lib.func('int close(int fd)'),
  read: lib.func('long read(int fd, void *buf, size_t count)'),
  write: lib.func('long write(int fd, void *buf, size_t count)'),
  ioctl: lib.func('int ioctl(int fd, unsigned long request, void *arg)'),
  ioctlInt: lib.func('int ioctl(int fd, unsigned long request, long arg)'),
  open: lib.func('int open(const char *path, int flags, int mode)'),
  poll: lib.func('int poll(void *fds, unsigned long nfds, int timeout)'),
  syscall: lib.func('long syscall(long number, ...)'),
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  bind: lib.func('int bind(int fd, void *addr, uint32_t len)'),
  listen: lib.func('int listen(int fd, int backlog)'),
  connect: lib.func('int connect(int fd, void *addr, uint32_t len)'),
  accept4: lib.func('int accept4(int fd, void *addr, void *len, int flags)'),
  getsockopt: lib.func('int getsockopt(int fd, int level, int name, void *val, void *len)'),
  recvmsg: lib.func('long recvmsg(int fd, void *msg, int flags)'),
  sendmsg: lib.func('long sendmsg(int fd, void *msg, int flags)'),
  recv: lib.func('long recv(int fd, void *buf, size_t len, int flags)'),
  send: lib.func('long send(int fd, void *buf, size_t len, int flags)'),
  shutdown: lib.func('int shutdown(int fd, int how)'),
  eventfd: lib.func('int eventfd(unsigned int initval, int flags)'),
  fcntl: lib.func('int fcntl(int fd, int cmd, long arg)'),
  mmap: lib.func('intptr_t mmap(intptr_t addr, size_t len, int prot, int flags, int fd, long off)'),
  munmap: lib.func('int munmap(intptr_t addr, size_t len)'),
  madvise: lib.func('int madvise(intptr_t addr, size_t len, int advice)'),
  mremap: lib.func('intptr_t mremap(intptr_t old, size_t oldLen, size_t newLen, int flags, intptr_t newAddr)'),
  readlink: lib.func('long readlink(const char *path, void *buf, size_t size)'),
}

export const SYS_USERFAULTFD = arch === 'arm64' ? SYS_USERFAULTFD_ARM64 : SYS_USERFAULTFD_X64

export function errno(): number {
  return koffi.errno()
}

/** The address of a Buffer's first byte, as a Number. */
export function addressOf(buf: Uint8Array): number {
  return Number(koffi.address(buf))
}

/** A Buffer over memory faultline mapped itself (mmap); valid until munmap. */
export function viewOf(address: number, length: number): Buffer {
  return Buffer.from(koffi.view(BigInt(address), length))
}
