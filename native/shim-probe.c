/* Stand-in for QEMU when testing the shim: maps FAULTLINE_RAM_SIZE bytes anonymous-private the
 * way a VMM maps guest RAM, checksums every byte and, given the raw image, checks the checksum. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "args.h"
#include "timing.h"

#define RESERVE_ALIGN (2u << 20)
#define READ_BLOCK (1u << 20)

static const char usage[] =
	"usage: FAULTLINE_RAM_SIZE=BYTES [FAULTLINE_OFFSET=BYTES] shim-probe [--fixed] [--expect RAW]\n"
	"  --fixed   reserve a larger PROT_NONE range, then map RAM over it with MAP_FIXED (as QEMU)\n"
	"  --expect  compare with the checksum of RAW from FAULTLINE_OFFSET (zeros past its end)\n";

/* FNV-1a over 64-bit little-endian words: cheap, and any misplaced page changes it. */
static uint64_t checksum_words(uint64_t h, const uint64_t *words, size_t count)
{
	for (size_t i = 0; i < count; i++)
		h = (h ^ words[i]) * 0x100000001b3ull;
	return h;
}

#define CHECKSUM_SEED 0xcbf29ce484222325ull

static uint64_t checksum_raw(const char *path, uint64_t offset, uint64_t size)
{
	static uint64_t block[READ_BLOCK / 8];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		args_fail("--expect: cannot open '%s': %s", path, strerror(errno));
	uint64_t h = CHECKSUM_SEED;
	for (uint64_t at = 0; at < size;) {
		size_t want = size - at < READ_BLOCK ? (size_t)(size - at) : READ_BLOCK;
		size_t got = 0;
		while (got < want) {
			ssize_t n = pread(fd, (char *)block + got, want - got, (off_t)(offset + at + got));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				args_fail("--expect: reading '%s': %s", path, strerror(errno));
			if (n == 0)
				break;
			got += (size_t)n;
		}
		memset((char *)block + got, 0, want - got);
		h = checksum_words(h, block, want / 8);
		at += want;
	}
	close(fd);
	return h;
}

int main(int argc, char **argv)
{
	int fixed = 0;
	const char *expect = NULL;
	struct args a;
	args_init(&a, "shim-probe", argc, argv);
	while (args_next(&a)) {
		if (args_is(&a, "--help")) {
			fputs(usage, stdout);
			return 0;
		} else if (args_is(&a, "--fixed")) {
			args_no_value(&a);
			fixed = 1;
		} else if (args_is(&a, "--expect")) {
			expect = args_value(&a);
		} else {
			args_fail("unknown option '%s' (see --help)", a.name);
		}
	}
	const char *size_text = getenv("FAULTLINE_RAM_SIZE");
	if (!size_text)
		args_fail("FAULTLINE_RAM_SIZE: required");
	uint64_t size = args_u64("FAULTLINE_RAM_SIZE", size_text, 1, UINT64_MAX, 1);
	const char *offset_text = getenv("FAULTLINE_OFFSET");
	uint64_t offset = offset_text && *offset_text
				  ? args_u64("FAULTLINE_OFFSET", offset_text, 0, UINT64_MAX, 1) : 0;
	if (size % 8)
		args_fail("FAULTLINE_RAM_SIZE: expected a multiple of 8, got '%s'", size_text);

	uint64_t t0 = now_ns();
	char *ram;
	if (fixed) {
		char *reserve = mmap(NULL, size + RESERVE_ALIGN, PROT_NONE,
				     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (reserve == MAP_FAILED)
			args_fail("cannot reserve %llu bytes: %s", (unsigned long long)size, strerror(errno));
		char *aligned = (char *)(((uintptr_t)reserve + RESERVE_ALIGN - 1) & ~(uintptr_t)(RESERVE_ALIGN - 1));
		ram = mmap(aligned, size, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS,
			   -1, 0);
	} else {
		ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	if (ram == MAP_FAILED)
		args_fail("cannot map %llu bytes: %s", (unsigned long long)size, strerror(errno));
	uint64_t map_ns = now_ns() - t0;
	uint64_t sum = checksum_words(CHECKSUM_SEED, (const uint64_t *)ram, size / 8);
	uint64_t checksum_ns = now_ns() - t0 - map_ns;

	int ok = 1;
	char expected[32] = "null";
	if (expect) {
		uint64_t want = checksum_raw(expect, offset, size);
		snprintf(expected, sizeof expected, "\"%016llx\"", (unsigned long long)want);
		ok = want == sum;
	}
	printf("{\"ok\":%s,\"bytes\":%llu,\"fixed\":%s,\"checksum\":\"%016llx\",\"expected\":%s,"
	       "\"map_ns\":%llu,\"checksum_ns\":%llu}\n",
	       ok ? "true" : "false", (unsigned long long)size, fixed ? "true" : "false",
	       (unsigned long long)sum, expected, (unsigned long long)map_ns,
	       (unsigned long long)checksum_ns);
	return ok ? 0 : 1;
}
