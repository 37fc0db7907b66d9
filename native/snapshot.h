/* A faultline v1 snapshot (README "Snapshot format") opened for a C page server: the header
 * and index validated by the same rules, and the same messages, as src/snapshot/; the index
 * kept in memory; runs of pages read with one pread and decoded with the page codec. */
#ifndef FAULTLINE_SNAPSHOT_H
#define FAULTLINE_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

struct fl_snapshot {
	const char *path;
	int fd;
	uint32_t page_size;
	uint64_t page_count;
	uint64_t image_size;
	uint64_t data_offset;
	uint64_t zero_pages, lz4_pages, raw_pages;
	uint32_t *words; /* the index as stored: four little-endian words a page (see codec.h) */
};

/* Opens and validates path. Returns 0, or -1 with err "PATH: what is wrong". */
int fl_snapshot_open(struct fl_snapshot *s, const char *path, char *err, size_t errcap);

static inline unsigned fl_snapshot_kind(const struct fl_snapshot *s, uint64_t page)
{
	return (s->words[4 * page + 1] >> 16) & 0xff;
}

/* Where page's stored bytes begin, relative to the data offset (for a zero page: where the
 * next stored page begins, so pages a..b are [stored_offset(a), stored_end(b))). */
static inline uint64_t fl_snapshot_stored_offset(const struct fl_snapshot *s, uint64_t page)
{
	const uint32_t *w = s->words + 4 * page;
	return w[0] | (uint64_t)(w[1] & 0xffff) << 32;
}

static inline uint64_t fl_snapshot_stored_end(const struct fl_snapshot *s, uint64_t page)
{
	return fl_snapshot_stored_offset(s, page) + s->words[4 * page + 2];
}

enum fl_read_result {
	FL_READ_OK,
	FL_READ_CORRUPT,     /* *bad_page does not decode to what its index entry promises */
	FL_READ_IO_ERROR,    /* the stored bytes could not be read */
};

/* Reads pages [first, first+count) (inside the snapshot) into dst, decoded and checked, with
 * one pread of their stored bytes into src (room for count pages). On FL_READ_CORRUPT, pages
 * before *bad_page are decoded in dst; err names the page and why. *bytes_read counts what
 * was read. Never allocates. */
enum fl_read_result fl_snapshot_read_pages(const struct fl_snapshot *s, uint64_t first,
					   uint64_t count, uint8_t *src, uint8_t *dst,
					   uint64_t *bad_page, uint64_t *bytes_read, char *err,
					   size_t errcap);

#endif
