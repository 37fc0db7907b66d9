// Files whose page cache several processes map: the decoded cache's backing file, a file on a
// private tmpfs (huge folios) or a memfd. Created, sized, written with pwrite and its holes
// punched here, so the only FFI of the cache stays in src/uffd/.
import { closeSync, mkdtempSync, openSync, rmdirSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import * as abi from './abi.js'
import { UffdError } from './errors.js'
import { addressOf, errno, libc } from './libc.js'

const { EINTR } = abi

/**
 * A file on a tmpfs of its own, configured with `options` (e.g. { huge: 'within_size', size:
 * '...' }) and mounted with the mount API (fsopen, fsconfig, fsmount) without ever being
 * attached to a path: nothing but the returned descriptor reaches it, and no mount is left
 * behind whatever happens to this process. Needs CAP_SYS_ADMIN; throws UffdError('fsopen' ...)
 * without it.
 */
export function createUnattachedTmpfsFile(options: Record<string, string>): number {
  const fs = Number(libc.syscall(abi.SYS_FSOPEN, 'const char *', 'tmpfs', 'unsigned int', abi.FSOPEN_CLOEXEC))
  if (fs < 0) throw new UffdError('fsopen', errno(), 'tmpfs')
  let mnt = -1
  try {
    for (const [key, value] of Object.entries(options)) {
      if (
        Number(libc.syscall(abi.SYS_FSCONFIG, 'int', fs, 'unsigned int', abi.FSCONFIG_SET_STRING, 'const char *', key, 'const char *', value, 'int', 0)) < 0
      ) {
        throw new UffdError('fsconfig', errno(), `tmpfs ${key}=${value}`)
      }
    }
    if (Number(libc.syscall(abi.SYS_FSCONFIG, 'int', fs, 'unsigned int', abi.FSCONFIG_CMD_CREATE, 'void *', null, 'void *', null, 'int', 0)) < 0) {
      throw new UffdError('fsconfig', errno(), 'tmpfs create')
    }
    mnt = Number(
      libc.syscall(
        abi.SYS_FSMOUNT,
        'int',
        fs,
        'unsigned int',
        abi.FSMOUNT_CLOEXEC,
        'unsigned int',
        abi.MOUNT_ATTR_NOSUID | abi.MOUNT_ATTR_NODEV | abi.MOUNT_ATTR_NOEXEC,
      ),
    )
    if (mnt < 0) throw new UffdError('fsmount', errno(), 'tmpfs')
    const fd = libc.openat(mnt, 'cache', abi.O_RDWR | abi.O_CREAT | abi.O_EXCL | abi.O_CLOEXEC, 0o600)
    if (fd < 0) throw new UffdError('openat', errno(), 'cache on the new tmpfs')
    libc.unlinkat(mnt, 'cache', 0)
    return fd
  } finally {
    if (mnt >= 0) libc.close(mnt)
    libc.close(fs)
  }
}

/**
 * A file on a tmpfs of its own, mounted with `options` (e.g. `huge=within_size,size=...`) in a
 * fresh directory under `parent`, opened, unlinked and detached at once: the descriptor keeps
 * the file alive and no mount is left behind, whatever happens to this process. Needs
 * CAP_SYS_ADMIN; throws UffdError('mount', errno) without it.
 */
export function createDetachedTmpfsFile(parent: string, options: string): number {
  const dir = mkdtempSync(join(parent, 'faultline-cache-'))
  let mounted = false
  try {
    if (libc.mount('faultline-cache', dir, 'tmpfs', abi.MS_NOSUID | abi.MS_NODEV | abi.MS_NOEXEC, options) < 0) {
      throw new UffdError('mount', errno(), `tmpfs ${options} on ${dir}`)
    }
    mounted = true
    const path = join(dir, 'cache')
    // 'wx+': O_RDWR|O_CREAT|O_EXCL (libuv adds O_CLOEXEC); a fresh mount holds nothing to follow.
    const fd = openSync(path, 'wx+', 0o600)
    unlinkSync(path)
    return fd
  } finally {
    if (mounted && libc.umount2(dir, abi.MNT_DETACH) < 0) {
      // Still mounted (it never is once mount succeeded): say so rather than hide a mount.
      // biome-ignore lint/correctness/noUnsafeFinally: a leftover mount matters more than the error it replaces
      throw new UffdError('umount2', errno(), dir)
    }
    try {
      rmdirSync(dir)
    } catch {
      /* gone */
    }
  }
}

/** memfd_create(name, MFD_CLOEXEC). */
export function createMemfd(name: string): number {
  const fd = libc.memfd_create(name, abi.MFD_CLOEXEC)
  if (fd < 0) throw new UffdError('memfd_create', errno(), name)
  return fd
}

export function truncateFile(fd: number, lengthBytes: number): void {
  if (libc.ftruncate(fd, lengthBytes) < 0) throw new UffdError('ftruncate', errno(), `fd ${fd} to ${lengthBytes} bytes`)
}

/** Frees [offset, offset+length) of the file (the length stays): every mapping of those pages
 * loses them, and a private mapping's next touch faults again. */
export function punchHole(fd: number, offset: number, length: number): void {
  if (libc.fallocate(fd, abi.FALLOC_FL_PUNCH_HOLE | abi.FALLOC_FL_KEEP_SIZE, offset, length) < 0) {
    throw new UffdError('fallocate(PUNCH_HOLE)', errno(), `fd ${fd}, ${length} bytes at ${offset}`)
  }
}

/**
 * Writes `length` bytes of `from` (from its first byte) at `offset`, all of it: one pwrite
 * unless the kernel writes less. A whole folio written in one call is never seen half
 * written by a process faulting on it (the folio is locked between the kernel's write_begin
 * and write_end).
 */
export function pwriteAll(fd: number, from: Buffer, length: number, offset: number): void {
  let done = 0
  const base = addressOf(from)
  while (done < length) {
    const n = Number(libc.pwriteAt(fd, base + done, length - done, offset + done))
    if (n > 0) {
      done += n
      continue
    }
    const e = n < 0 ? errno() : 0
    if (e === EINTR) continue
    throw new UffdError('pwrite', e === 0 ? 28 /* ENOSPC: the kernel wrote nothing */ : e, `fd ${fd}, ${length - done} bytes at ${offset + done}`)
  }
}

/** The byte ranges of `fd` that hold data (not holes), [start, end) pairs, by SEEK_DATA and
 * SEEK_HOLE over [0, size). */
export function dataExtents(fd: number, size: number): number[] {
  const out: number[] = []
  let at = 0
  while (at < size) {
    const start = Number(libc.lseek(fd, at, abi.SEEK_DATA))
    if (start < 0) {
      if (errno() === abi.ENXIO) break // no data past `at`
      throw new UffdError('lseek(SEEK_DATA)', errno(), `fd ${fd} at ${at}`)
    }
    if (start >= size) break
    const end = Number(libc.lseek(fd, start, abi.SEEK_HOLE))
    if (end < 0) throw new UffdError('lseek(SEEK_HOLE)', errno(), `fd ${fd} at ${start}`)
    out.push(start, Math.min(end, size))
    at = end
  }
  return out
}

/** posix_fadvise over [offset, offset+length); errors are ignored (advice only). */
export function adviseFile(fd: number, offset: number, length: number, advice: 'willneed' | 'dontneed'): void {
  libc.posix_fadvise(fd, offset, length, advice === 'willneed' ? abi.POSIX_FADV_WILLNEED : abi.POSIX_FADV_DONTNEED)
}

/** A MAP_SHARED mapping of `fd` (read-only unless `writable`). */
export function mapFileShared(fd: number, length: number, writable = false): { address: number; length: number } {
  const prot = abi.PROT_READ | (writable ? abi.PROT_WRITE : 0)
  const address = Number(libc.mmap(0, length, prot, abi.MAP_SHARED, fd, 0))
  if (address === -1) throw new UffdError('mmap', errno(), `fd ${fd}, ${length} bytes shared`)
  return { address, length }
}

/** Which pages of our own mapping [address, address+length) are resident (mincore). */
export function residentPages(address: number, length: number, pageSize: number): Uint8Array {
  const vec = Buffer.alloc(Math.ceil(length / pageSize))
  if (libc.mincore(address, length, vec) < 0) throw new UffdError('mincore', errno())
  return new Uint8Array(vec.buffer, vec.byteOffset, vec.length)
}

/** Opens /proc/self/fd/FD again read-only: a descriptor of the same file that cannot write it. */
export function reopenReadOnly(fd: number): number {
  return openSync(`/proc/self/fd/${fd}`, 'r')
}

export function closeFile(fd: number): void {
  if (fd >= 0) closeSync(fd)
}
