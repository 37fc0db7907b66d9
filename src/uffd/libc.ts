// koffi bindings to the libc calls faultline makes. Pointers never leave src/uffd/: callers
// pass Buffers, and addresses are plain Numbers (user space fits in 2^53). FAULTLINE_FFI=ffi-napi
// (set before this module loads; `--ffi ffi-napi` does it) binds the fault loop's calls (read,
// ioctl, poll) through ffi-napi instead, with the same signatures, to compare the two.
import { createRequire } from 'node:module'
import { arch, env } from 'node:process'
import { UsageError } from '../errors.js'
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
  pread: lib.func('long pread(int fd, void *buf, size_t count, long offset)'),
  preadAt: lib.func('long pread(int fd, intptr_t buf, size_t count, long offset)'),
  write: lib.func('long write(int fd, void *buf, size_t count)'),
  // The kernel reads an ioctl's request as a 32-bit unsigned int, so it is passed as an int32:
  // UFFDIO_* numbers exceed V8's small integers (2^30) as unsigned, and a number that is not
  // one is boxed on every call. Callers pass `request | 0`.
  ioctl: lib.func('int ioctl(int fd, int request, void *arg)'),
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
  clock_gettime: lib.func('int clock_gettime(int clock, void *ts)'),
  gettid: lib.func('int gettid(void)'),
  sched_setscheduler: lib.func('int sched_setscheduler(int tid, int policy, void *param)'),
  geteuid: lib.func('unsigned int geteuid(void)'),
  // The decoded cache's backing file (shared-file.ts).
  memfd_create: lib.func('int memfd_create(const char *name, unsigned int flags)'),
  openat: lib.func('int openat(int dirfd, const char *path, int flags, int mode)'),
  unlinkat: lib.func('int unlinkat(int dirfd, const char *path, int flags)'),
  mount: lib.func('int mount(const char *source, const char *target, const char *type, unsigned long flags, const char *data)'),
  umount2: lib.func('int umount2(const char *target, int flags)'),
  ftruncate: lib.func('int ftruncate(int fd, long length)'),
  fallocate: lib.func('int fallocate(int fd, int mode, long offset, long length)'),
  lseek: lib.func('long lseek(int fd, long offset, int whence)'),
  pwrite: lib.func('long pwrite(int fd, void *buf, size_t count, long offset)'),
  pwriteAt: lib.func('long pwrite(int fd, intptr_t buf, size_t count, long offset)'),
  mincore: lib.func('int mincore(intptr_t addr, size_t len, void *vec)'),
  posix_fadvise: lib.func('int posix_fadvise(int fd, long offset, long len, int advice)'),
}

export const SYS_USERFAULTFD = arch === 'arm64' ? SYS_USERFAULTFD_ARM64 : SYS_USERFAULTFD_X64

export type FfiBackend = 'koffi' | 'ffi-napi'
export const FFI_BACKENDS: readonly FfiBackend[] = ['koffi', 'ffi-napi']

/** Which FFI the fault loop's calls go through in this thread. */
export const ffiBackend: FfiBackend = selectBackend(env.FAULTLINE_FFI)

function selectBackend(name: string | undefined): FfiBackend {
  if (name === undefined || name === '' || name === 'koffi') return 'koffi'
  if (name === 'ffi-napi') return 'ffi-napi'
  throw new UsageError(`FAULTLINE_FFI=${name}: expected koffi or ffi-napi`)
}

// errno of the last call: koffi keeps its own; ffi-napi calls save theirs here, and `hot` says
// whose call came last (in ffi-napi mode every koffi function is wrapped to clear it).
let hot = false
let hotErrno = 0

if (ffiBackend === 'ffi-napi') useFfiNapi()

function useFfiNapi(): void {
  type Ffi = { Library(name: string, fns: Record<string, [string, string[]]>): Record<string, (...a: unknown[]) => number>; errno(): number }
  let ffi: Ffi
  try {
    ffi = require('ffi-napi') as Ffi
  } catch (err) {
    throw new UsageError(
      `FAULTLINE_FFI=ffi-napi: the optional dependency ffi-napi is not installed or did not build ` +
        `(${(err as Error).message.split('\n')[0]}); \`npm install\` builds it, koffi needs nothing`,
    )
  }
  const f = ffi.Library('libc.so.6', {
    read: ['long', ['int', 'pointer', 'size_t']],
    ioctl: ['int', ['int', 'int', 'pointer']],
    poll: ['int', ['pointer', 'ulong', 'int']],
  })
  const table = libc as unknown as Record<string, (...a: unknown[]) => unknown>
  for (const name of Object.keys(table)) {
    if (name === 'clock_gettime') continue // cannot fail here; the fault loop's clock
    const viaKoffi = table[name]
    table[name] = (...a: unknown[]) => {
      hot = false
      return viaKoffi(...a)
    }
  }
  const fRead = f.read,
    fIoctl = f.ioctl,
    fPoll = f.poll,
    fErrno = ffi.errno
  table.read = (fd, buf, count) => {
    const r = fRead(fd, buf, count)
    hot = true
    hotErrno = r < 0 ? fErrno() : 0
    return r
  }
  table.ioctl = (fd, req, arg) => {
    const r = fIoctl(fd, req, arg)
    hot = true
    hotErrno = r < 0 ? fErrno() : 0
    return r
  }
  table.poll = (fds, n, timeout) => {
    const r = fPoll(fds, n, timeout)
    hot = true
    hotErrno = r < 0 ? fErrno() : 0
    return r
  }
}

export function errno(): number {
  return hot ? hotErrno : koffi.errno()
}

/** The address of a Buffer's first byte, as a Number. */
export function addressOf(buf: Uint8Array): number {
  return Number(koffi.address(buf))
}

/** A Buffer over memory faultline mapped itself (mmap); valid until munmap. */
export function viewOf(address: number, length: number): Buffer {
  return Buffer.from(koffi.view(BigInt(address), length))
}
