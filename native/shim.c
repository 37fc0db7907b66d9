/* LD_PRELOAD shim: the first writable private anonymous mmap of exactly FAULTLINE_RAM_SIZE bytes
 * gets a userfaultfd and goes to the page server at FAULTLINE_SOCKET, so unmodified QEMU resumes lazily.
 * It asks for the server's decoded cache (FAULTLINE_MAP=anonymous opts out) and maps it over that
 * RAM with the real mmap when the server has one. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "args.h"
#include "handshake.h"
#include "uffd.h"

#define WHO "faultline-shim"

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);

static mmap_fn real_mmap;
static mmap_fn real_mmap64;
static int enabled;
static int claimed; /* set once, atomically: exactly one mapping is ever handed over */
static uint64_t ram_size;
static uint64_t ram_offset;
static const char *socket_path;
static enum fl_map ram_map = FL_MAP_CACHE;

/* write(2) only: this runs inside the program's mmap(), maybe with malloc's locks held. */
__attribute__((noreturn)) static void die(const char *what, const char *detail)
{
	char line[768];
	int n = snprintf(line, sizeof line, WHO ": %s%s\n", what, detail ? detail : "");
	ssize_t unused = write(STDERR_FILENO, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
	(void)unused;
	_exit(2);
}

static void resolve(void)
{
	if (!real_mmap)
		real_mmap = (mmap_fn)dlsym(RTLD_NEXT, "mmap");
	if (!real_mmap64)
		real_mmap64 = (mmap_fn)dlsym(RTLD_NEXT, "mmap64");
	if (!real_mmap64)
		real_mmap64 = real_mmap;
	if (!real_mmap)
		die("cannot find the real mmap: ", dlerror());
}

__attribute__((constructor)) static void shim_init(void)
{
	resolve();
	socket_path = getenv("FAULTLINE_SOCKET");
	if (!socket_path || !*socket_path)
		return;
	args_set_program(WHO);
	const char *size = getenv("FAULTLINE_RAM_SIZE");
	if (!size || !*size)
		die("FAULTLINE_SOCKET is set but FAULTLINE_RAM_SIZE is not", NULL);
	ram_size = args_u64("FAULTLINE_RAM_SIZE", size, 1, UINT64_MAX, 1);
	const char *offset = getenv("FAULTLINE_OFFSET");
	if (offset && *offset)
		ram_offset = args_u64("FAULTLINE_OFFSET", offset, 0, UINT64_MAX, 1);
	if (ram_size % FL_PAGE_SIZE || ram_offset % FL_PAGE_SIZE)
		die("FAULTLINE_RAM_SIZE and FAULTLINE_OFFSET must be multiples of 4096", NULL);
	const char *map = getenv("FAULTLINE_MAP");
	if (map && *map && strcmp(map, "cache") != 0 && strcmp(map, "anonymous") != 0)
		die("FAULTLINE_MAP must be anonymous or cache, got ", map);
	if (map && strcmp(map, "anonymous") == 0)
		ram_map = FL_MAP_ANONYMOUS;
	enabled = 1;
}

/* A process that never maps that size is left alone, silently: wrappers and helpers inherit
 * LD_PRELOAD too. End-to-end tests must compare memory checksums, not trust the shim engaged. */
static int is_ram(size_t len, int prot, int flags)
{
	return enabled && len == ram_size && (prot & PROT_WRITE) && (flags & MAP_ANONYMOUS) &&
	       (flags & MAP_TYPE) == MAP_PRIVATE && !__atomic_load_n(&claimed, __ATOMIC_ACQUIRE);
}

static void attach(void *addr, size_t len)
{
	char err[512];
	int uffd = uffd_create(0, err, sizeof err);
	if (uffd < 0)
		die(err, NULL);
	struct fl_region r = {
		.addr = (uint64_t)(uintptr_t)addr, .size = len, .offset = ram_offset,
		.page_size = FL_PAGE_SIZE,
	};
	char body[512];
	int body_len = fl_handshake_body(FL_HANDSHAKE_FAULTLINE, ram_map, &r, 1, body, sizeof body);
	/* The cache goes over the RAM with the real mmap: this runs inside the program's mmap(). */
	struct fl_attach a = { .map = ram_map, .regions = &r, .count = 1, .mmap = real_mmap };
	int sock = fl_handshake_attach(socket_path, body, (size_t)body_len, uffd, &a, err, sizeof err);
	if (sock < 0)
		die(a.refused ? "server refused: " : err, a.refused ? err : NULL);
	/* The uffd stays open: with the server's copy gone, ours keeps faults waiting for the
	 * watchdog instead of letting them read zeros. */
	if (fl_watchdog_start(sock, WHO, err, sizeof err) < 0)
		die(err, NULL);
	/* Children inherit LD_PRELOAD; only this process's RAM belongs to this session. */
	unsetenv("FAULTLINE_SOCKET");
}

static void *wrap(mmap_fn real, void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	if (!real_mmap)
		resolve();
	if (!is_ram(len, prot, flags))
		return (real ? real : real_mmap)(addr, len, prot, flags, fd, off);
	/* Prefaulted zero pages would never fault, and the program would run on zeros. */
	void *p = (real ? real : real_mmap)(addr, len, prot, flags & ~MAP_POPULATE, fd, off);
	if (p == MAP_FAILED || __atomic_exchange_n(&claimed, 1, __ATOMIC_ACQ_REL))
		return p;
	attach(p, len);
	return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return wrap(real_mmap, addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return wrap(real_mmap64, addr, len, prot, flags, fd, off);
}
