/* userfaultfd creation, setup and page-installing ioctls shared by the guest, the shim and the
 * floor handler; errors come back as one line naming the cause and, for permissions, the fix. */
#ifndef FAULTLINE_UFFD_H
#define FAULTLINE_UFFD_H

#include <linux/userfaultfd.h>
#include <stddef.h>
#include <stdint.h>

#define FL_PAGE_SIZE 4096u

/* Linux 6.6's UFFDIO_POISON, for older userspace headers (Debian 12 ships 6.1's). */
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

/* Creates a uffd with O_CLOEXEC|O_NONBLOCK: the syscall, then /dev/userfaultfd on EPERM, then
 * (if allow_user_mode) UFFD_USER_MODE_ONLY, which is enough for a guest that only touches its
 * memory from user space but not for QEMU, whose kernel-side accesses would fail. */
int uffd_create(int allow_user_mode, char *err, size_t errcap);

/* UFFDIO_API handshake with the given feature bits; returns 0 or -1 with err set. */
int uffd_api(int uffd, uint64_t features, char *err, size_t errcap);

/* Registers [addr, addr+len) in missing mode and checks UFFDIO_COPY is available on it. */
int uffd_register_missing(int uffd, uint64_t addr, uint64_t len, char *err, size_t errcap);

/* What installing a range did: pages installed, pages found present already (EEXIST: skipped,
 * someone installed them first) and EAGAIN retries (the guest's address space was changing). */
struct uffd_install_counts {
	uint64_t pages, eexist, eagain;
};

enum uffd_install_result { UFFD_INSTALL_OK, UFFD_INSTALL_GUEST_GONE, UFFD_INSTALL_FAILED };

/* UFFDIO_COPY of [dst, dst+len) from src, UFFDIO_ZEROPAGE and UFFDIO_POISON of [dst, dst+len)
 * (page multiples), each also waking the threads waiting there; failures other than the guest
 * having gone set err. */
enum uffd_install_result uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len,
				   struct uffd_install_counts *c, char *err, size_t errcap);
enum uffd_install_result uffd_zeropage(int uffd, uint64_t dst, uint64_t len,
				       struct uffd_install_counts *c, char *err, size_t errcap);
enum uffd_install_result uffd_poison(int uffd, uint64_t dst, uint64_t len,
				     struct uffd_install_counts *c, char *err, size_t errcap);

/* UFFDIO_WAKE of [start, start+len): the waiting threads retry their faults. */
int uffd_wake(int uffd, uint64_t start, uint64_t len, char *err, size_t errcap);

/* 1 if fd is a userfaultfd (by its anon inode name), so a server can refuse anything else. */
int uffd_is_userfaultfd(int fd);

#endif
