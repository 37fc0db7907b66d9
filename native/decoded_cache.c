/* The decoded cache of a snapshot (see decoded_cache.h). */
#include "decoded_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <unistd.h>

#define THP_DIR "/sys/kernel/mm/transparent_hugepage"
#define DEFAULT_PMD_BYTES (2u << 20)

/* The bracketed choice of a sysfs THP knob ("always [inherit] never" -> "inherit"), or "". */
static void thp_setting(const char *path, char *out, size_t cap)
{
	char line[256] = "";
	out[0] = '\0';
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	if (fgets(line, sizeof line, f)) {
		char *open = strchr(line, '['), *close = open ? strchr(open, ']') : NULL;
		if (close && (size_t)(close - open - 1) < cap) {
			memcpy(out, open + 1, (size_t)(close - open - 1));
			out[close - open - 1] = '\0';
		}
	}
	fclose(f);
}

static uint64_t pmd_bytes(void)
{
	unsigned long long v = 0;
	FILE *f = fopen(THP_DIR "/hpage_pmd_size", "r");
	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v >= 4096 && !(v & (v - 1)) ? v : DEFAULT_PMD_BYTES;
}

static int huge_without_advice(const char *setting)
{
	return !strcmp(setting, "always") || !strcmp(setting, "within_size") || !strcmp(setting, "force");
}

/* Could a memfd written with pwrite get folios larger than a page here? Only the global shmem
 * knob and the per-size ones (which may inherit it) decide; nobody madvises the file. */
static int shmem_may_use_large_folios(char *why, size_t cap)
{
	char global[32], setting[32], path[512];
	thp_setting(THP_DIR "/shmem_enabled", global, sizeof global);
	if (huge_without_advice(global)) {
		snprintf(why, cap, "shmem_enabled is %s", global);
		return 1;
	}
	DIR *d = opendir(THP_DIR);
	struct dirent *e;
	int large = 0;
	while (d && !large && (e = readdir(d))) {
		if (strncmp(e->d_name, "hugepages-", 10) != 0)
			continue;
		snprintf(path, sizeof path, THP_DIR "/%s/shmem_enabled", e->d_name);
		thp_setting(path, setting, sizeof setting);
		if (huge_without_advice(setting)) {
			snprintf(why, cap, "%.40s/shmem_enabled is %s", e->d_name, setting);
			large = 1;
		}
	}
	if (d)
		closedir(d);
	if (!large)
		snprintf(why, cap, "shmem_enabled is %s", global[0] ? global : "unknown");
	return large;
}

/* A file on a tmpfs of our own, mounted huge=within_size and never attached: no path reaches
 * it, and it goes away with its last descriptor. Returns the fd or -1 with why set. */
static int private_tmpfs_file(uint64_t size, char *why, size_t cap)
{
	char bytes[32];
	snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)size);
	int fs = fsopen("tmpfs", FSOPEN_CLOEXEC);
	if (fs < 0) {
		snprintf(why, cap, "fsopen(tmpfs): %s", strerror(errno));
		return -1;
	}
	int fd = -1, mnt = -1;
	const char *step = "fsconfig huge=within_size";
	if (fsconfig(fs, FSCONFIG_SET_STRING, "huge", "within_size", 0) < 0)
		goto out;
	step = "fsconfig size";
	if (fsconfig(fs, FSCONFIG_SET_STRING, "size", bytes, 0) < 0)
		goto out;
	step = "fsconfig mode";
	if (fsconfig(fs, FSCONFIG_SET_STRING, "mode", "0700", 0) < 0)
		goto out;
	step = "creating the tmpfs";
	if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		goto out;
	step = "fsmount";
	mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
	if (mnt < 0)
		goto out;
	step = "creating the cache file";
	fd = openat(mnt, "cache", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0)
		unlinkat(mnt, "cache", 0);
out:
	if (fd < 0)
		snprintf(why, cap, "%s: %s", step, strerror(errno));
	if (mnt >= 0)
		close(mnt);
	close(fs);
	return fd;
}

int fl_cache_create(struct fl_decoded_cache *c, const struct fl_snapshot *s, char *err, size_t errcap)
{
	memset(c, 0, sizeof *c);
	c->fd = c->guest_fd = -1;
	uint64_t pmd = pmd_bytes(), image = s->page_count * s->page_size;
	char why_not_tmpfs[96], thp[96];
	uint64_t size = (image + pmd - 1) / pmd * pmd;
	c->fd = private_tmpfs_file(size + pmd, why_not_tmpfs, sizeof why_not_tmpfs);
	if (c->fd >= 0) {
		c->folio_bytes = pmd;
		snprintf(c->what, sizeof c->what,
			 "a file on a private tmpfs mounted huge=within_size, filled %llu KiB folios at a time",
			 (unsigned long long)(pmd >> 10));
	} else {
		c->fd = memfd_create("faultline-cache", MFD_CLOEXEC);
		if (c->fd < 0) {
			snprintf(err, errcap, "cannot create the decoded cache: %s; memfd_create: %s", why_not_tmpfs,
				 strerror(errno));
			return -1;
		}
		int large = shmem_may_use_large_folios(thp, sizeof thp);
		c->folio_bytes = large ? pmd : s->page_size;
		snprintf(c->what, sizeof c->what, "a memfd (no private tmpfs: %s), filled %llu KiB at a time (%s)",
			 why_not_tmpfs, (unsigned long long)(c->folio_bytes >> 10), thp);
	}
	c->size = (image + c->folio_bytes - 1) / c->folio_bytes * c->folio_bytes;
	c->folios = c->size / c->folio_bytes;
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", c->fd);
	if (ftruncate(c->fd, (off_t)c->size) < 0 || (c->guest_fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		snprintf(err, errcap, "cannot set up the decoded cache (%s): %s", c->what, strerror(errno));
		return -1;
	}
	c->state = calloc(c->folios, 1);
	if (!c->state || posix_memalign((void **)&c->stored, 4096, c->folio_bytes) ||
	    posix_memalign((void **)&c->decoded, 4096, c->folio_bytes)) {
		snprintf(err, errcap, "cannot allocate the decoded cache's buffers");
		return -1;
	}
	/* Touched now, so their first use is not a page-fault storm in a guest's fault. */
	memset(c->stored, 0, c->folio_bytes);
	memset(c->decoded, 0, c->folio_bytes);
	return 0;
}

enum fl_fill_result fl_cache_fill(struct fl_decoded_cache *c, const struct fl_snapshot *s, uint64_t k,
				  uint64_t *bytes_read, char *err, size_t errcap)
{
	uint64_t per = c->folio_bytes / s->page_size, first = k * per;
	uint64_t n = first >= s->page_count ? 0 : s->page_count - first < per ? s->page_count - first : per;
	uint64_t stored = 0;
	for (uint64_t i = 0; i < n; i++)
		stored += fl_snapshot_kind(s, first + i) != KIND_ZERO;
	if (!stored) {
		c->state[k] = FOLIO_ZERO;
		return FILL_ZERO;
	}
	uint64_t bad;
	if (fl_snapshot_read_pages(s, first, n, c->stored, c->decoded, &bad, bytes_read, err, errcap) != FL_READ_OK) {
		c->state[k] = FOLIO_CORRUPT;
		return FILL_CORRUPT;
	}
	memset(c->decoded + n * s->page_size, 0, c->folio_bytes - n * s->page_size);
	/* One write of the whole folio: the folio is locked from write_begin to write_end, so a
	 * guest faulting inside it meanwhile waits and then maps every byte written. */
	ssize_t w;
	do
		w = pwrite(c->fd, c->decoded, c->folio_bytes, (off_t)(k * c->folio_bytes));
	while (w < 0 && errno == EINTR);
	if (w != (ssize_t)c->folio_bytes) {
		snprintf(err, errcap, "writing folio %llu of the decoded cache: %s", (unsigned long long)k,
			 w < 0 ? strerror(errno) : "short write");
		/* Part of a folio must never stay: guests would map its zeros. */
		fallocate(c->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(k * c->folio_bytes),
			  (off_t)c->folio_bytes);
		return FILL_FAILED;
	}
	c->state[k] = FOLIO_CACHED;
	return FILL_CACHED;
}

uint64_t fl_cache_scrub(struct fl_decoded_cache *c)
{
	uint64_t removed = 0;
	off_t at = 0, size = (off_t)c->size;
	while (at < size) {
		off_t data = lseek(c->fd, at, SEEK_DATA);
		if (data < 0)
			break;
		off_t hole = lseek(c->fd, data, SEEK_HOLE);
		if (hole < 0)
			hole = size;
		for (uint64_t k = (uint64_t)data / c->folio_bytes; k * c->folio_bytes < (uint64_t)hole; k++) {
			if (c->state[k] == FOLIO_CACHED)
				continue;
			if (fallocate(c->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(k * c->folio_bytes),
				      (off_t)c->folio_bytes) == 0)
				removed++;
		}
		at = hole;
	}
	return removed;
}
