/* userfaultfd creation and setup ioctls (see uffd.h); no allocation, so the LD_PRELOAD shim
 * can use it from inside its mmap wrapper. */
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
