// Kernel ABI constants for userfaultfd and the few socket/memory calls faultline makes.
// Values from include/uapi/linux/userfaultfd.h, asm-generic/ioctl.h, sys/socket.h and
// sys/mman.h for x86_64 and aarch64 (both use the generic ioctl encoding and syscall table
// differences are handled in libc.ts). Nothing outside src/uffd/ should need these numbers.

export const UFFD_API = 0xaa

// _IOC(dir, 0xAA, nr, size): dir<<30 | size<<16 | 0xAA<<8 | nr (read=2, write=1)
function iowr(nr: number, size: number): number {
  return 3 * 2 ** 30 + size * 65536 + 0xaa00 + nr
}
function ior(nr: number, size: number): number {
  return 2 * 2 ** 30 + size * 65536 + 0xaa00 + nr
}

export const UFFDIO_API = iowr(0x3f, 24)
export const UFFDIO_REGISTER = iowr(0x00, 32)
export const UFFDIO_UNREGISTER = ior(0x01, 16)
export const UFFDIO_WAKE = ior(0x02, 16)
export const UFFDIO_COPY = iowr(0x03, 40)
export const UFFDIO_ZEROPAGE = iowr(0x04, 32)
export const UFFDIO_MOVE = iowr(0x05, 40)
export const UFFDIO_WRITEPROTECT = iowr(0x06, 24)
export const UFFDIO_CONTINUE = iowr(0x07, 32)
export const UFFDIO_POISON = iowr(0x08, 32)
/** ioctl on /dev/userfaultfd that returns a new uffd: _IO(0xAA, 0x00). */
export const USERFAULTFD_IOC_NEW = 0xaa00
/** userfaultfd(2) flag: the uffd handles faults from user space only (allowed unprivileged). */
export const UFFD_USER_MODE_ONLY = 1

// UFFDIO_API features.
export const UFFD_FEATURE_PAGEFAULT_FLAG_WP = 1 << 0
export const UFFD_FEATURE_EVENT_FORK = 1 << 1
export const UFFD_FEATURE_EVENT_REMAP = 1 << 2
export const UFFD_FEATURE_EVENT_REMOVE = 1 << 3
export const UFFD_FEATURE_MISSING_HUGETLBFS = 1 << 4
export const UFFD_FEATURE_MISSING_SHMEM = 1 << 5
export const UFFD_FEATURE_EVENT_UNMAP = 1 << 6
export const UFFD_FEATURE_SIGBUS = 1 << 7
export const UFFD_FEATURE_THREAD_ID = 1 << 8
export const UFFD_FEATURE_MINOR_HUGETLBFS = 1 << 9
export const UFFD_FEATURE_MINOR_SHMEM = 1 << 10
export const UFFD_FEATURE_EXACT_ADDRESS = 1 << 11
export const UFFD_FEATURE_WP_HUGETLBFS_SHMEM = 1 << 12
export const UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
export const UFFD_FEATURE_POISON = 1 << 14
export const UFFD_FEATURE_WP_ASYNC = 1 << 15
export const UFFD_FEATURE_MOVE = 1 << 16
/** Not in the uapi header: fs/userfaultfd.c's mark of a uffd whose UFFDIO_API is done, shown
 * with its features in /proc/PID/fdinfo (Linux 6.x). */
export const UFFD_FEATURE_INITIALIZED = 0x80000000

export const FEATURE_NAMES: ReadonlyArray<readonly [number, string]> = [
  [UFFD_FEATURE_PAGEFAULT_FLAG_WP, 'PAGEFAULT_FLAG_WP'],
  [UFFD_FEATURE_EVENT_FORK, 'EVENT_FORK'],
  [UFFD_FEATURE_EVENT_REMAP, 'EVENT_REMAP'],
  [UFFD_FEATURE_EVENT_REMOVE, 'EVENT_REMOVE'],
  [UFFD_FEATURE_MISSING_HUGETLBFS, 'MISSING_HUGETLBFS'],
  [UFFD_FEATURE_MISSING_SHMEM, 'MISSING_SHMEM'],
  [UFFD_FEATURE_EVENT_UNMAP, 'EVENT_UNMAP'],
  [UFFD_FEATURE_SIGBUS, 'SIGBUS'],
  [UFFD_FEATURE_THREAD_ID, 'THREAD_ID'],
  [UFFD_FEATURE_MINOR_HUGETLBFS, 'MINOR_HUGETLBFS'],
  [UFFD_FEATURE_MINOR_SHMEM, 'MINOR_SHMEM'],
  [UFFD_FEATURE_EXACT_ADDRESS, 'EXACT_ADDRESS'],
  [UFFD_FEATURE_WP_HUGETLBFS_SHMEM, 'WP_HUGETLBFS_SHMEM'],
  [UFFD_FEATURE_WP_UNPOPULATED, 'WP_UNPOPULATED'],
  [UFFD_FEATURE_POISON, 'POISON'],
  [UFFD_FEATURE_WP_ASYNC, 'WP_ASYNC'],
  [UFFD_FEATURE_MOVE, 'MOVE'],
]

export const UFFDIO_REGISTER_MODE_MISSING = 1
export const UFFDIO_REGISTER_MODE_WP = 2
export const UFFDIO_REGISTER_MODE_MINOR = 4
export const UFFDIO_COPY_MODE_DONTWAKE = 1
export const UFFDIO_ZEROPAGE_MODE_DONTWAKE = 1

// struct uffd_msg: 32 bytes; event u8 at 0, union at 8.
export const UFFD_MSG_SIZE = 32
export const UFFD_EVENT_PAGEFAULT = 0x12
export const UFFD_EVENT_FORK = 0x13
export const UFFD_EVENT_REMAP = 0x14
export const UFFD_EVENT_REMOVE = 0x15
export const UFFD_EVENT_UNMAP = 0x16
export const UFFD_PAGEFAULT_FLAG_WRITE = 1 << 0
export const UFFD_PAGEFAULT_FLAG_WP = 1 << 1
export const UFFD_PAGEFAULT_FLAG_MINOR = 1 << 2

// fcntl / socket / poll / mman
export const O_RDWR = 0o2
export const O_NONBLOCK = 0o4000
export const O_CLOEXEC = 0o2000000
export const AF_UNIX = 1
export const SOCK_STREAM = 1
export const SOCK_NONBLOCK = O_NONBLOCK
export const SOCK_CLOEXEC = O_CLOEXEC
export const SOL_SOCKET = 1
export const SO_PEERCRED = 17
/** getsockopt: a pidfd of the process that connected (Linux 6.5+), taken at its connect(2). */
export const SO_PEERPIDFD = 77
export const SCM_RIGHTS = 1
export const MSG_CTRUNC = 0x8
export const MSG_DONTWAIT = 0x40
export const MSG_NOSIGNAL = 0x4000
export const MSG_CMSG_CLOEXEC = 0x40000000
export const POLLIN = 0x1
export const POLLPRI = 0x2
export const POLLOUT = 0x4
export const POLLERR = 0x8
export const POLLHUP = 0x10
export const POLLNVAL = 0x20
export const POLLRDHUP = 0x2000
export const PROT_NONE = 0
export const PROT_READ = 1
export const PROT_WRITE = 2
export const MAP_SHARED = 0x01
export const MAP_PRIVATE = 0x02
export const MAP_FIXED = 0x10
export const MAP_ANONYMOUS = 0x20
export const MADV_DONTNEED = 4
export const MADV_REMOVE = 9
export const MADV_HUGEPAGE = 14
// memfd, mount, fallocate, fadvise: the decoded cache's backing file (linux/memfd.h,
// linux/mount.h, linux/falloc.h, fcntl.h).
export const MFD_CLOEXEC = 1
export const MS_NOSUID = 2
export const MS_NODEV = 4
export const MS_NOEXEC = 8
export const MNT_DETACH = 2
// The mount API (linux/mount.h): a tmpfs made and mounted without ever being attached to a path.
export const SYS_FSOPEN = 430,
  SYS_FSCONFIG = 431,
  SYS_FSMOUNT = 432
export const FSOPEN_CLOEXEC = 1
export const FSCONFIG_SET_STRING = 1
export const FSCONFIG_CMD_CREATE = 6
export const FSMOUNT_CLOEXEC = 1
export const MOUNT_ATTR_NOSUID = 0x2,
  MOUNT_ATTR_NODEV = 0x4,
  MOUNT_ATTR_NOEXEC = 0x8
export const O_CREAT = 0o100
export const O_EXCL = 0o200
export const FALLOC_FL_KEEP_SIZE = 1
export const FALLOC_FL_PUNCH_HOLE = 2
export const SEEK_DATA = 3,
  SEEK_HOLE = 4
export const ENXIO = 6
export const POSIX_FADV_WILLNEED = 3
export const POSIX_FADV_DONTNEED = 4
export const EFD_CLOEXEC = O_CLOEXEC
export const EFD_NONBLOCK = O_NONBLOCK

// errno values (asm-generic/errno-base.h, asm-generic/errno.h: the same on x86_64 and aarch64)
export const EPERM = 1
export const ENOENT = 2
export const ESRCH = 3
export const EINTR = 4
export const EAGAIN = 11
export const EACCES = 13
export const EEXIST = 17
export const EOPNOTSUPP = 95
export const ENAMETOOLONG = 36
export const ECONNABORTED = 103
export const ENOSYS = 38

export const SYS_USERFAULTFD_X64 = 323
export const SYS_USERFAULTFD_ARM64 = 282
export const SYS_PIDFD_OPEN = 434
export const SYS_PIDFD_GETFD = 438
export const SYS_PIDFD_SEND_SIGNAL = 424
export const SIGKILL = 9
export const ENOPROTOOPT = 92
