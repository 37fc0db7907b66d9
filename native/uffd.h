/* userfaultfd creation and setup ioctls shared by the guest, the shim and the floor handler;
 * errors come back as one line naming the cause and, for permissions, the fix. */
#ifndef FAULTLINE_UFFD_H
#define FAULTLINE_UFFD_H

#include <stddef.h>
#include <stdint.h>

#define FL_PAGE_SIZE 4096u

/* Creates a uffd with O_CLOEXEC|O_NONBLOCK: the syscall, then /dev/userfaultfd on EPERM, then
 * (if allow_user_mode) UFFD_USER_MODE_ONLY, which is enough for a guest that only touches its
 * memory from user space but not for QEMU, whose kernel-side accesses would fail. */
int uffd_create(int allow_user_mode, char *err, size_t errcap);

/* UFFDIO_API handshake with the given feature bits; returns 0 or -1 with err set. */
int uffd_api(int uffd, uint64_t features, char *err, size_t errcap);

/* Registers [addr, addr+len) in missing mode and checks UFFDIO_COPY is available on it. */
int uffd_register_missing(int uffd, uint64_t addr, uint64_t len, char *err, size_t errcap);

/* 1 if fd is a userfaultfd (by its anon inode name), so a server can refuse anything else. */
int uffd_is_userfaultfd(int fd);

#endif
