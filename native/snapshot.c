/* A faultline v1 snapshot for a C page server (see snapshot.h). The checks, their order and
 * their messages follow src/snapshot/format.ts, snapshot-index.ts and reader.ts. */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <isa-l/crc.h>

#define HEADER_SIZE 4096u
#define INDEX_ENTRY_SIZE 16u
#define MIN_PAGE_SIZE 4096u
#define MAX_PAGE_SIZE 65536u
#define MAX_CHUNK_PAGES 65536u
#define MAX_STORED_OFFSET ((1ull << 48) - 1)
#define MAX_SAFE_INTEGER ((1ull << 53) - 1) /* the TypeScript reader's bound on 64-bit fields */
#define CRC_COVERED 124u
#define CHECKSUM_CRC32 1u
#define COMPRESSION_LZ4 1u

static const uint8_t magic[8] = { 'F', 'L', 'T', 'S', 'N', 'A', 'P', 0 };

__attribute__((format(printf, 4, 5))) static int fail(const struct fl_snapshot *s, char *err,
						       size_t errcap, const char *fmt, ...)
{
	char detail[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof detail, fmt, ap);
	va_end(ap);
	snprintf(err, errcap, "%s: %s", s->path, detail);
	return -1;
}

static uint32_t u32_at(const uint8_t *b, size_t off)
{
	return (uint32_t)b[off] | (uint32_t)b[off + 1] << 8 | (uint32_t)b[off + 2] << 16 |
	       (uint32_t)b[off + 3] << 24;
}

static uint64_t u64_at(const uint8_t *b, size_t off)
{
	return u32_at(b, off) | (uint64_t)u32_at(b, off + 4) << 32;
}

static int all_zero(const uint8_t *b, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (b[i])
			return 0;
	return 1;
}

static uint32_t crc32(const void *buf, uint64_t len)
{
	return crc32_gzip_refl(0, (const unsigned char *)buf, len);
}

/* Reads len bytes at off, or fails naming where the file ended or what went wrong. */
static int read_fully(const struct fl_snapshot *s, void *buf, uint64_t len, uint64_t off, char *err,
		      size_t errcap)
{
	uint64_t got = 0;
	while (got < len) {
		size_t want = len - got > (1u << 30) ? 1u << 30 : (size_t)(len - got);
		ssize_t n = pread(s->fd, (char *)buf + got, want, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail(s, err, errcap, "read at byte %llu: %s", (unsigned long long)(off + got),
				    strerror(errno));
		if (n == 0)
			return fail(s, err, errcap, "truncated: unexpected end of file at byte %llu",
				    (unsigned long long)(off + got));
		got += (uint64_t)n;
	}
	return 0;
}

static int check_header(struct fl_snapshot *s, const uint8_t *h, size_t have, char *err, size_t errcap)
{
	if (have < sizeof magic || memcmp(h, magic, sizeof magic) != 0) {
		char got[20] = "empty file";
		for (size_t i = 0; i < have && i < 8; i++)
			snprintf(got + 2 * i, sizeof got - 2 * i, "%02x", h[i]);
		return fail(s, err, errcap, "not a faultline snapshot (magic %s, expected 464c54534e415000)", got);
	}
	if (have < HEADER_SIZE)
		return fail(s, err, errcap, "truncated header: file is %zu bytes, the header alone is %u", have,
			    HEADER_SIZE);
	uint32_t version = u32_at(h, 8);
	if (version != 1)
		return fail(s, err, errcap,
			    "unsupported snapshot format version %u (this faultline reads version 1)", version);
	uint32_t stored_crc = u32_at(h, 124), crc = crc32(h, CRC_COVERED);
	if (stored_crc != crc)
		return fail(s, err, errcap, "header checksum mismatch (stored 0x%08x, computed 0x%08x)",
			    stored_crc, crc);
	static const struct { const char *name; size_t off; } wide[] = {
		{ "page count", 24 }, { "image size", 32 }, { "index offset", 40 }, { "data offset", 48 },
		{ "data size", 56 }, { "zero pages", 80 }, { "lz4 pages", 88 }, { "raw pages", 96 },
	};
	for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++) {
		uint64_t v = u64_at(h, wide[i].off);
		if (v > MAX_SAFE_INTEGER)
			return fail(s, err, errcap, "header field %s is too large (%llu)", wide[i].name,
				    (unsigned long long)v);
	}
	uint32_t header_size = u32_at(h, 12), page_size = u32_at(h, 16), chunk_pages = u32_at(h, 20);
	uint64_t page_count = u64_at(h, 24), image_size = u64_at(h, 32), index_offset = u64_at(h, 40);
	uint64_t data_offset = u64_at(h, 48), data_size = u64_at(h, 56);
	uint32_t algorithm = u32_at(h, 68), compression = u32_at(h, 72), flags = u32_at(h, 76);
	uint64_t zero = u64_at(h, 80), lz4 = u64_at(h, 88), raw = u64_at(h, 96);
	if (header_size != HEADER_SIZE)
		return fail(s, err, errcap, "header size is %u, expected %u", header_size, HEADER_SIZE);
	if (page_size < MIN_PAGE_SIZE || page_size > MAX_PAGE_SIZE || (page_size & (page_size - 1)))
		return fail(s, err, errcap, "page size %u is not a power of two from %u to %u", page_size,
			    MIN_PAGE_SIZE, MAX_PAGE_SIZE);
	if (chunk_pages < 1 || chunk_pages > MAX_CHUNK_PAGES)
		return fail(s, err, errcap, "chunk pages %u is not in 1..%u", chunk_pages, MAX_CHUNK_PAGES);
	if (image_size == 0 || page_count == 0)
		return fail(s, err, errcap, "snapshot has no pages (image size 0)");
	uint64_t pages = (image_size + page_size - 1) / page_size;
	if (page_count != pages)
		return fail(s, err, errcap, "page count %llu does not match image size %llu (%llu pages of %u)",
			    (unsigned long long)page_count, (unsigned long long)image_size,
			    (unsigned long long)pages, page_size);
	/* page_count <= 2^53 / 4096, so none of this overflows. */
	uint64_t want_data_offset = HEADER_SIZE + INDEX_ENTRY_SIZE * page_count;
	if (index_offset != HEADER_SIZE)
		return fail(s, err, errcap, "index offset %llu, expected %u", (unsigned long long)index_offset,
			    HEADER_SIZE);
	if (data_offset != want_data_offset)
		return fail(s, err, errcap, "data offset %llu, expected %llu", (unsigned long long)data_offset,
			    (unsigned long long)want_data_offset);
	if (data_size > page_count * page_size)
		return fail(s, err, errcap, "data size %llu exceeds %llu uncompressed pages",
			    (unsigned long long)data_size, (unsigned long long)page_count);
	if (data_size > MAX_STORED_OFFSET)
		return fail(s, err, errcap, "data size %llu exceeds the 48-bit offset range",
			    (unsigned long long)data_size);
	if (algorithm != CHECKSUM_CRC32)
		return fail(s, err, errcap, "unknown page checksum algorithm %u", algorithm);
	if (compression != COMPRESSION_LZ4)
		return fail(s, err, errcap, "unknown compression %u", compression);
	if (flags != 0)
		return fail(s, err, errcap, "unknown flags 0x%08x", flags);
	if (zero + lz4 + raw != page_count)
		return fail(s, err, errcap, "page kind counts %llu+%llu+%llu do not add up to %llu pages",
			    (unsigned long long)zero, (unsigned long long)lz4, (unsigned long long)raw,
			    (unsigned long long)page_count);
	if (!all_zero(h, 104, 124) || !all_zero(h, 128, HEADER_SIZE))
		return fail(s, err, errcap, "reserved header bytes are not zero");
	s->page_size = page_size;
	s->page_count = page_count;
	s->image_size = image_size;
	s->data_offset = data_offset;
	s->zero_pages = zero;
	s->lz4_pages = lz4;
	s->raw_pages = raw;
	return 0;
}

/* Every entry: a known kind, a length that fits it, zero pages carrying the zero-page CRC,
 * stored pages contiguous in page order and inside the data. */
static int check_index(struct fl_snapshot *s, uint64_t data_size, uint32_t index_crc, char *err,
		       size_t errcap)
{
	uint32_t crc = crc32(s->words, INDEX_ENTRY_SIZE * s->page_count);
	if (crc != index_crc)
		return fail(s, err, errcap, "index checksum mismatch (stored 0x%08x, computed 0x%08x)", index_crc,
			    crc);
	static uint8_t zeros[MAX_PAGE_SIZE];
	uint32_t ps = s->page_size, zero_crc = crc32(zeros, ps);
	uint64_t pos = 0, zero = 0, lz4 = 0, raw = 0;
	for (uint64_t p = 0; p < s->page_count; p++) {
		const uint32_t *w = s->words + 4 * p;
		uint64_t offset = fl_snapshot_stored_offset(s, p);
		uint32_t kind = (w[1] >> 16) & 0xff, length = w[2];
		unsigned long long pu = (unsigned long long)p;
		if (w[1] >> 24)
			return fail(s, err, errcap, "index entry %llu: reserved byte is %u, expected 0", pu, w[1] >> 24);
		if (kind == KIND_ZERO) {
			if (length != 0)
				return fail(s, err, errcap, "index entry %llu: zero page with stored length %u", pu, length);
			if (w[3] != zero_crc)
				return fail(s, err, errcap, "index entry %llu: zero page with checksum 0x%08x, expected 0x%08x",
					    pu, w[3], zero_crc);
			zero++;
		} else if (kind == KIND_LZ4) {
			if (length == 0 || length >= ps)
				return fail(s, err, errcap, "index entry %llu: LZ4 page with stored length %u (must be 1..%u)",
					    pu, length, ps - 1);
			lz4++;
		} else if (kind == KIND_RAW) {
			if (length != ps)
				return fail(s, err, errcap, "index entry %llu: raw page with stored length %u, expected %u",
					    pu, length, ps);
			raw++;
		} else {
			return fail(s, err, errcap, "index entry %llu: unknown page kind %u", pu, kind);
		}
		if (offset + length > data_size)
			return fail(s, err, errcap,
				    "index entry %llu points past end of data (offset %llu + length %u > data size %llu)",
				    pu, (unsigned long long)offset, length, (unsigned long long)data_size);
		if (offset != pos)
			return fail(s, err, errcap,
				    "index entry %llu: offset %llu, expected %llu (stored pages must be contiguous, in page order)",
				    pu, (unsigned long long)offset, (unsigned long long)pos);
		pos += length;
	}
	if (pos != data_size)
		return fail(s, err, errcap, "index covers %llu bytes of data, header says %llu",
			    (unsigned long long)pos, (unsigned long long)data_size);
	if (zero != s->zero_pages || lz4 != s->lz4_pages || raw != s->raw_pages)
		return fail(s, err, errcap, "index has %llu zero, %llu lz4, %llu raw pages; header says %llu, %llu, %llu",
			    (unsigned long long)zero, (unsigned long long)lz4, (unsigned long long)raw,
			    (unsigned long long)s->zero_pages, (unsigned long long)s->lz4_pages,
			    (unsigned long long)s->raw_pages);
	return 0;
}

int fl_snapshot_open(struct fl_snapshot *s, const char *path, char *err, size_t errcap)
{
	memset(s, 0, sizeof *s);
	s->path = path;
	s->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->fd < 0)
		return fail(s, err, errcap, "cannot open: %s", strerror(errno));
	struct stat st;
	static uint8_t head[HEADER_SIZE];
	if (fstat(s->fd, &st) < 0) {
		fail(s, err, errcap, "cannot stat: %s", strerror(errno));
		goto bad;
	}
	if (!S_ISREG(st.st_mode)) {
		fail(s, err, errcap, "not a regular file");
		goto bad;
	}
	size_t have = (uint64_t)st.st_size < HEADER_SIZE ? (size_t)st.st_size : HEADER_SIZE;
	if (read_fully(s, head, have, 0, err, errcap) < 0 || check_header(s, head, have, err, errcap) < 0)
		goto bad;
	uint64_t data_size = u64_at(head, 56), end = s->data_offset + data_size;
	if ((uint64_t)st.st_size < end) {
		fail(s, err, errcap, "truncated: file is %llu bytes, the snapshot it describes is %llu",
		     (unsigned long long)st.st_size, (unsigned long long)end);
		goto bad;
	}
	if ((uint64_t)st.st_size > end) {
		fail(s, err, errcap, "%llu unexpected bytes after the end of data (file is %llu bytes, snapshot %llu)",
		     (unsigned long long)st.st_size - end, (unsigned long long)st.st_size, (unsigned long long)end);
		goto bad;
	}
	/* Bounded by the file's size, which was just checked. */
	s->words = malloc(INDEX_ENTRY_SIZE * s->page_count);
	if (!s->words) {
		fail(s, err, errcap, "cannot allocate its %llu-byte index", (unsigned long long)(INDEX_ENTRY_SIZE * s->page_count));
		goto bad;
	}
	if (read_fully(s, s->words, INDEX_ENTRY_SIZE * s->page_count, HEADER_SIZE, err, errcap) < 0 ||
	    check_index(s, data_size, u32_at(head, 64), err, errcap) < 0)
		goto bad;
	return 0;
bad:
	free(s->words);
	s->words = NULL;
	close(s->fd);
	s->fd = -1;
	return -1;
}

/* The same wording as src/snapshot/decoder.ts. */
static const char *failure_text(const struct fl_snapshot *s, uint64_t page, const double *detail,
				char *buf, size_t cap)
{
	if (detail[0] == FAIL_LZ4_MALFORMED)
		snprintf(buf, cap, "LZ4 data malformed at byte %.0f", detail[1]);
	else if (detail[0] == FAIL_LZ4_SIZE)
		snprintf(buf, cap, "decodes to %.0f bytes, expected %u", detail[1], s->page_size);
	else
		snprintf(buf, cap, "checksum mismatch (stored 0x%08x, computed 0x%08x)", s->words[4 * page + 3],
			 (uint32_t)detail[1]);
	return buf;
}

enum fl_read_result fl_snapshot_read_pages(const struct fl_snapshot *s, uint64_t first,
					   uint64_t count, uint8_t *src, uint8_t *dst,
					   uint64_t *bad_page, uint64_t *bytes_read, char *err,
					   size_t errcap)
{
	uint64_t start = fl_snapshot_stored_offset(s, first);
	uint64_t len = fl_snapshot_stored_end(s, first + count - 1) - start;
	uint64_t got = 0;
	while (got < len) {
		ssize_t n = pread(s->fd, src + got, len - got, (off_t)(s->data_offset + start + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			unsigned long long at = (unsigned long long)(s->data_offset + start + got);
			if (n == 0)
				snprintf(err, errcap, "%s: truncated: unexpected end of file at byte %llu", s->path, at);
			else
				snprintf(err, errcap, "%s: read at byte %llu: %s", s->path, at, strerror(errno));
			*bytes_read += got;
			return FL_READ_IO_ERROR;
		}
		got += (uint64_t)n;
	}
	*bytes_read += len;
	double detail[2];
	long bad = fl_decode_pages(s->words, first, count, src, dst, s->page_size, detail);
	if (bad < 0)
		return FL_READ_OK;
	char why[128];
	*bad_page = (uint64_t)bad;
	snprintf(err, errcap, "%s: page %ld is corrupt: %s", s->path, bad,
		 failure_text(s, (uint64_t)bad, detail, why, sizeof why));
	return FL_READ_CORRUPT;
}
