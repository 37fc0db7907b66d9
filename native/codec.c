/* The snapshot page codec for the fault path: decodes a run of stored pages (LZ4, raw, zero)
 * and checks each page's CRC-32 in one call, with liblz4 and ISA-L's CRC-32. The TypeScript
 * decoder calls it through koffi; the index it reads was validated when the snapshot opened. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <isa-l/crc.h>
#include <lz4.h>

#include "codec.h"

long fl_decode_pages(const uint32_t *words, uint64_t first, uint64_t count, const uint8_t *src,
		     uint8_t *dst, uint32_t page_size, double *detail)
{
	const uint32_t *w = words + 4 * first;
	uint64_t base = w[0] | (uint64_t)(w[1] & 0xffff) << 32;

	for (uint64_t k = 0; k < count; k++, w += 4, dst += page_size) {
		uint32_t kind = (w[1] >> 16) & 0xff;
		if (kind == KIND_ZERO) {
			memset(dst, 0, page_size);
			continue;
		}
		const uint8_t *in = src + ((w[0] | (uint64_t)(w[1] & 0xffff) << 32) - base);
		uint32_t len = w[2];
		if (kind == KIND_LZ4) {
			int n = LZ4_decompress_safe((const char *)in, (char *)dst, (int)len, (int)page_size);
			if (n != (int)page_size) {
				/* liblz4 reports malformed input as -(position + 1). */
				detail[0] = n < 0 ? FAIL_LZ4_MALFORMED : FAIL_LZ4_SIZE;
				detail[1] = n < 0 ? -(n + 1) : n;
				return (long)(first + k);
			}
		} else {
			memcpy(dst, in, len);
		}
		uint32_t c = crc32_gzip_refl(0, dst, page_size);
		if (c != w[3]) {
			detail[0] = FAIL_CHECKSUM;
			detail[1] = c;
			return (long)(first + k);
		}
	}
	return -1;
}

/* The argument block both entry points take: doubles, so JavaScript fills it through a
 * Float64Array and no argument is boxed on the way in (addresses exceed V8's small ints).
 * The same slots, and the FAIL_ and FL_ codes, are in src/snapshot/native-codec.ts. */
enum {
	A_WORDS, A_SRC, A_DST, A_FIRST, A_COUNT, A_PAGE_SIZE, A_DETAIL0, A_DETAIL1,
	A_FD, A_FILE_OFFSET, A_LENGTH,
};
#define PTR(a, i) ((void *)(uintptr_t)(a)[i])

/* Decodes the run the block describes from memory at A_SRC; see fl_decode_pages. */
long fl_decode_run(double *a)
{
	return fl_decode_pages(PTR(a, A_WORDS), (uint64_t)a[A_FIRST], (uint64_t)a[A_COUNT], PTR(a, A_SRC),
			  PTR(a, A_DST), (uint32_t)a[A_PAGE_SIZE], a + A_DETAIL0);
}

/* Reads A_LENGTH stored bytes at A_FILE_OFFSET of A_FD into A_SRC, then decodes the run. Returns
 * as fl_decode_pages, or FL_READ_FAILED / FL_END_OF_FILE with the file offset where reading stopped
 * in A_DETAIL0 and the errno (0 at the end of the file) in A_DETAIL1. */
#define FL_READ_FAILED (-2)
#define FL_END_OF_FILE (-3)
long fl_read_decode_run(double *a)
{
	int fd = (int)a[A_FD];
	uint8_t *buf = PTR(a, A_SRC);
	uint64_t len = (uint64_t)a[A_LENGTH], off = (uint64_t)a[A_FILE_OFFSET], got = 0;
	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			a[A_DETAIL0] = (double)(off + got);
			a[A_DETAIL1] = errno;
			return FL_READ_FAILED;
		}
		if (n == 0) {
			a[A_DETAIL0] = (double)(off + got);
			a[A_DETAIL1] = 0;
			return FL_END_OF_FILE;
		}
		got += (uint64_t)n;
	}
	return fl_decode_run(a);
}
