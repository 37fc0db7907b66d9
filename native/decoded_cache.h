/* The decoded cache of one snapshot for cache-mapped guests (/work/notes/cache-protocol.md): a
 * file holding decoded pages that guests map MAP_PRIVATE over their RAM, filled a whole folio
 * at a time (decode the folio into a buffer, one pwrite), so no guest ever maps a folio before
 * all of its pages hold their bytes. */
#ifndef FAULTLINE_DECODED_CACHE_H
#define FAULTLINE_DECODED_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

/* What the server knows of each folio of the cache. */
enum fl_folio_state {
	FOLIO_ABSENT,  /* a hole: guests fault to the server there */
	FOLIO_CACHED,  /* written by the server: every page decoded and checked */
	FOLIO_ZERO,    /* every page is a zero page: left a hole, guests get UFFDIO_ZEROPAGE */
	FOLIO_CORRUPT, /* a page fails its check: left a hole, guests are served page by page */
};

struct fl_decoded_cache {
	int fd;               /* read-write, the server's */
	int guest_fd;         /* O_RDONLY, what guests are sent */
	uint64_t folio_bytes; /* the fill unit: a multiple of every folio size the file can get */
	uint64_t size;        /* the image rounded up to folio_bytes */
	uint64_t folios;
	uint8_t *state;       /* per folio: enum fl_folio_state */
	uint8_t *stored;      /* folio_bytes: a folio's stored bytes */
	uint8_t *decoded;     /* folio_bytes: a folio decoded */
	char what[320];       /* what it is and why, for the start-up line */
};

/* Creates the cache for s: a file on a private tmpfs mounted huge=within_size (fsmount(2), never
 * attached anywhere, so no mount is ever visible or left behind) with folio_bytes the PMD size;
 * or, where that cannot be mounted, a memfd, whose fill unit is the PMD size too if the host's
 * shmem THP settings could give it huge folios, else 4096. Returns 0 or -1 with err set. */
int fl_cache_create(struct fl_decoded_cache *c, const struct fl_snapshot *s, char *err, size_t errcap);

enum fl_fill_result {
	FILL_CACHED,  /* the folio is in the cache */
	FILL_ZERO,    /* all its pages are zero pages: nothing written */
	FILL_CORRUPT, /* a page failed its check (or could not be read): nothing written, err says */
	FILL_FAILED,  /* decoded (in c->decoded) but the write failed: nothing cached, err says */
};

/* Fills folio k (absent): decodes every page of the snapshot it holds into c->decoded (zeros
 * past the image) and, unless all are zero pages, writes it with one pwrite; sets its state.
 * A failed or short write is undone (hole punched), so no partial folio is ever left. */
enum fl_fill_result fl_cache_fill(struct fl_decoded_cache *c, const struct fl_snapshot *s, uint64_t k,
				  uint64_t *bytes_read, char *err, size_t errcap);

/* Punches out every allocated folio the server did not write: a read fault on a hole by a
 * mapping not registered with userfaultfd (a forked child whose server did not take
 * EVENT_FORK, or any process mapping the file itself) allocates a zero folio in the cache,
 * which every guest would then read. Returns how many folios it removed. */
uint64_t fl_cache_scrub(struct fl_decoded_cache *c);

#endif
