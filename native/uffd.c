/* userfaultfd creation, setup and installing ioctls (see uffd.h); no allocation, so the
 * LD_PRELOAD shim can use it from inside its mmap wrapper. */
#include "uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define UFFD_FLAGS (O_CLOEXEC | O_NONBLOCK)

int uffd_create(int allow_user_mode, char *err, size_t errcap)
{
	int fd = (int)syscall(SYS_userfaultfd, UFFD_FLAGS);
	if (fd >= 0)
		return fd;
	int first = errno;
	if (first != EPERM) {
		snprintf(err, errcap, "cannot create a userfaultfd: %s", strerror(first));
		return -1;
	}
	/* Since 6.1 the device grants kernel-mode faults to whoever may open it, whatever the sysctl. */
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, UFFD_FLAGS);
		close(dev);
		if (fd >= 0)
			return fd;
	}
	if (allow_user_mode) {
		fd = (int)syscall(SYS_userfaultfd, UFFD_FLAGS | UFFD_USER_MODE_ONLY);
		if (fd >= 0)
			return fd;
	}
	snprintf(err, errcap,
		 "cannot create a userfaultfd: %s (run as root, or `sysctl vm.unprivileged_userfaultfd=1`)",
		 strerror(first));
	return -1;
}

int uffd_api(int uffd, uint64_t features, char *err, size_t errcap)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	if (ioctl(uffd, UFFDIO_API, &api) < 0) {
		snprintf(err, errcap, "UFFDIO_API: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int uffd_register_missing(int uffd, uint64_t addr, uint64_t len, char *err, size_t errcap)
{
	struct uffdio_register reg = {
		.range = { .start = addr, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
		snprintf(err, errcap, "UFFDIO_REGISTER 0x%llx+%llu: %s", (unsigned long long)addr,
			 (unsigned long long)len, strerror(errno));
		return -1;
	}
	if (!(reg.ioctls & ((uint64_t)1 << _UFFDIO_COPY))) {
		snprintf(err, errcap, "UFFDIO_REGISTER 0x%llx+%llu: range does not support UFFDIO_COPY",
			 (unsigned long long)addr, (unsigned long long)len);
		return -1;
	}
	return 0;
}

enum install_op { OP_COPY, OP_ZEROPAGE, OP_POISON };

static const char *const op_names[] = { "UFFDIO_COPY", "UFFDIO_ZEROPAGE", "UFFDIO_POISON" };

/* One ioctl over [dst+done, dst+len); returns 0 or -errno, with *progress the bytes it did. */
static int install_once(int uffd, enum install_op op, uint64_t dst, const char *src, uint64_t len,
			int64_t *progress)
{
	int rc;
	if (op == OP_COPY) {
		struct uffdio_copy a = { .dst = dst, .src = (uint64_t)(uintptr_t)src, .len = len };
		rc = ioctl(uffd, UFFDIO_COPY, &a);
		*progress = a.copy;
	} else if (op == OP_ZEROPAGE) {
		struct uffdio_zeropage a = { .range = { .start = dst, .len = len } };
		rc = ioctl(uffd, UFFDIO_ZEROPAGE, &a);
		*progress = a.zeropage;
	} else {
		struct uffdio_poison a = { .range = { .start = dst, .len = len } };
		rc = ioctl(uffd, UFFDIO_POISON, &a);
		*progress = a.updated;
	}
	if (rc == 0) {
		*progress = (int64_t)len;
		return 0;
	}
	return -errno;
}

/* EEXIST is success for that page (skip it and go on); EAGAIN (partial, or the guest's mm
 * changing) is retried. */
static enum uffd_install_result install(int uffd, enum install_op op, uint64_t dst, const void *src,
					uint64_t len, struct uffd_install_counts *c, char *err,
					size_t errcap)
{
	uint64_t done = 0;
	while (done < len) {
		int64_t progress = 0;
		int rc = install_once(uffd, op, dst + done, src ? (const char *)src + done : NULL, len - done,
				      &progress);
		if (progress > 0) {
			c->pages += (uint64_t)progress / FL_PAGE_SIZE;
			done += (uint64_t)progress;
		}
		if (rc == 0)
			break;
		if (rc == -EAGAIN) {
			c->eagain++;
		} else if (rc == -EEXIST) {
			c->eexist++;
			done += FL_PAGE_SIZE;
		} else if (rc == -ESRCH) {
			return UFFD_INSTALL_GUEST_GONE;
		} else {
			snprintf(err, errcap, "%s 0x%llx+%llu: %s", op_names[op], (unsigned long long)(dst + done),
				 (unsigned long long)(len - done), strerror(-rc));
			return UFFD_INSTALL_FAILED;
		}
	}
	return UFFD_INSTALL_OK;
}

enum uffd_install_result uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len,
				   struct uffd_install_counts *c, char *err, size_t errcap)
{
	return install(uffd, OP_COPY, dst, src, len, c, err, errcap);
}

enum uffd_install_result uffd_zeropage(int uffd, uint64_t dst, uint64_t len,
				       struct uffd_install_counts *c, char *err, size_t errcap)
{
	return install(uffd, OP_ZEROPAGE, dst, NULL, len, c, err, errcap);
}

enum uffd_install_result uffd_poison(int uffd, uint64_t dst, uint64_t len,
				     struct uffd_install_counts *c, char *err, size_t errcap)
{
	return install(uffd, OP_POISON, dst, NULL, len, c, err, errcap);
}

int uffd_wake(int uffd, uint64_t start, uint64_t len, char *err, size_t errcap)
{
	struct uffdio_range r = { .start = start, .len = len };
	if (ioctl(uffd, UFFDIO_WAKE, &r) < 0) {
		snprintf(err, errcap, "UFFDIO_WAKE 0x%llx+%llu: %s", (unsigned long long)start,
			 (unsigned long long)len, strerror(errno));
		return -1;
	}
	return 0;
}

int uffd_is_userfaultfd(int fd)
{
	char path[64], target[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, target, sizeof target - 1);
	if (n < 0)
		return 0;
	target[n] = '\0';
	return strcmp(target, "anon_inode:[userfaultfd]") == 0;
}
