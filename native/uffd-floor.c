/* The floor: the least a userfaultfd page server can do, in C, so the Node server's per-fault cost
 * has something to be held against: from a raw image (pread, UFFDIO_COPY), or doing faultline's
 * own work from a v1 snapshot (pread of the stored bytes, LZ4 decode, CRC-32 check, UFFDIO_COPY
 * or UFFDIO_ZEROPAGE, a page failing its check poisoned). No policy. With --map cache it is also
 * the C reference for cache-mapped guests (/work/notes/cache-protocol.md): a miss fills a whole
 * folio of the decoded cache and wakes the guest. */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "args.h"
#include "handshake_server.h"
#include "json.h"
#include "timing.h"
#include "uffd.h"
#ifdef FL_HAVE_PAGE_CODEC
#include "decoded_cache.h"
#include "snapshot.h"
#endif

#define PAGE FL_PAGE_SIZE
#define MAX_BATCH_PAGES 65536u

struct options {
	const char *socket_path;
	const char *raw_path;      /* --raw */
	const char *snapshot_path; /* --snapshot */
	uint64_t batch_pages;
	int once;
	int map_cache; /* --map cache: offer the decoded cache to guests that ask for it */
};

struct stats {
	uint64_t guests;
	uint64_t faults;
	struct uffd_install_counts copied, zeroed, poisoned;
	uint64_t bytes_read;
	/* Cache-mapped guests: guests given the cache, folios written, faults answered by a wake
	 * alone (their folio was cached already), folios found allocated by someone else. */
	uint64_t cache_guests, folio_fills, cache_wakes, foreign_folios;
	uint64_t children; /* forked children of cache-mapped guests, filled and let go */
	uint64_t *service_ns;  /* one entry a fault: read() of the message to the last install's return */
	uint64_t service_cap;
};

struct floor {
	struct options o;
	int raw_fd;
#ifdef FL_HAVE_PAGE_CODEC
	struct fl_snapshot snap;
	uint8_t *stored; /* batch_pages pages: a run's stored bytes */
	struct fl_decoded_cache cache;
#endif
	char *buf; /* batch_pages pages: what is copied */
	struct stats st;
	char failure[512]; /* why the session ended, for the guest's last line */
};

static volatile sig_atomic_t stopping;

static void on_stop(int sig)
{
	(void)sig;
	stopping = 1;
}

static const char usage[] =
	"usage: uffd-floor --socket PATH (--raw RAW | --snapshot SNAP [--map cache]) [--batch-pages N]\n"
	"                  [--once]\n"
	"\n"
	"Serves one guest at a time (both handshake forms). A fault installs the --batch-pages-aligned\n"
	"block (default 1 page) holding the faulting page, clipped to the region:\n"
	"  --raw RAW       pread of the raw image (zeros past its end), UFFDIO_COPY\n"
	"  --snapshot SNAP a faultline v1 snapshot (4096-byte pages), validated at start: one pread of\n"
	"                  the block's stored bytes, LZ4 decode and CRC-32 check of each page, then\n"
	"                  UFFDIO_COPY of its stored pages and UFFDIO_ZEROPAGE of its zero pages; a page\n"
	"                  failing its check is poisoned (UFFDIO_POISON: the guest gets SIGBUS there),\n"
	"                  never served. Regions must lie inside the snapshot's image.\n"
	"  --map cache     also offer guests that ask (\"map\":\"cache\") the decoded cache of the\n"
	"                  snapshot to map over their regions; a fault there fills the folio holding the\n"
	"                  page (decoded whole, one pwrite) and wakes the guest; a folio of zero pages\n"
	"                  is left a hole and ZEROPAGEd; one with a page failing its check is served\n"
	"                  page by page (COPY, or POISON for that page). --batch-pages applies to\n"
	"                  anonymous guests. Says what the cache is on stderr at start.\n"
	"Prints \"listening on PATH\" on stderr when ready; on exit (--once: after the first guest\n"
	"disconnects; or SIGINT/SIGTERM) one JSON line: source, guests, batch_pages, faults,\n"
	"pages_copied, pages_zeroed, pages_poisoned, bytes_read, eexist, eagain,\n"
	"service_{median,p99,max,mean}_ns (read() of the fault message to the last install's return,\n"
	"nearest rank; null without faults); with --map cache also cache_folio_bytes, cache_guests,\n"
	"folio_fills, cache_wakes, children (forks of cache-mapped guests, filled and let go) and\n"
	"foreign_folios (allocated in the cache by a mapping of it the server does not serve, found\n"
	"before and after each guest and punched out).\n";

static void parse_options(struct options *o, int argc, char **argv)
{
	struct args a;
	memset(o, 0, sizeof *o);
	o->batch_pages = 1;
	args_init(&a, "uffd-floor", argc, argv);
	while (args_next(&a)) {
		if (args_is(&a, "--help")) {
			fputs(usage, stdout);
			exit(0);
		} else if (args_is(&a, "--socket")) {
			o->socket_path = args_value(&a);
		} else if (args_is(&a, "--raw")) {
			o->raw_path = args_value(&a);
		} else if (args_is(&a, "--snapshot")) {
			o->snapshot_path = args_value(&a);
		} else if (args_is(&a, "--batch-pages")) {
			o->batch_pages = args_u64("--batch-pages", args_value(&a), 1, MAX_BATCH_PAGES, 0);
		} else if (args_is(&a, "--map")) {
			const char *v = args_value(&a);
			if (strcmp(v, "cache") != 0)
				args_fail("--map: expected cache, got '%s'", v);
			o->map_cache = 1;
		} else if (args_is(&a, "--once")) {
			args_no_value(&a);
			o->once = 1;
		} else {
			args_fail("unknown option '%s' (see --help)", a.name);
		}
	}
	if (!o->socket_path)
		args_fail("--socket: required");
	if (!o->raw_path == !o->snapshot_path)
		args_fail("give one of --raw RAW or --snapshot SNAP");
	if (o->map_cache && !o->snapshot_path)
		args_fail("--map cache: needs --snapshot (the cache holds the snapshot's decoded pages)");
#ifndef FL_HAVE_PAGE_CODEC
	if (o->snapshot_path)
		args_fail("--snapshot: this uffd-floor was built without the page codec "
			  "(apt-get install liblz4-dev libisal-dev, then make -C native)");
#endif
}

static void record_service(struct stats *st, uint64_t ns)
{
	if (st->faults == st->service_cap) {
		st->service_cap = st->service_cap ? st->service_cap * 2 : 65536;
		st->service_ns = realloc(st->service_ns, st->service_cap * sizeof *st->service_ns);
		if (!st->service_ns)
			args_fail("out of memory recording fault times");
	}
	st->service_ns[st->faults++] = ns;
}

/* Fills buf with len bytes of the image at off; past its end, zeros. */
static void read_raw(struct floor *f, uint64_t off, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(f->raw_fd, f->buf + got, len - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			args_fail("reading '%s': %s", f->o.raw_path, strerror(errno));
		if (n == 0)
			break;
		got += (size_t)n;
	}
	f->st.bytes_read += got;
	memset(f->buf + got, 0, len - got);
}

/* Turns an install's failure into the session's end reason; the guest gone is not a failure. */
static enum uffd_install_result failed(struct floor *f, enum uffd_install_result res, const char *err)
{
	if (res == UFFD_INSTALL_FAILED) {
		snprintf(f->failure, sizeof f->failure, "%s", err);
		fprintf(stderr, "uffd-floor: %s\n", err);
	}
	return res;
}

static enum uffd_install_result serve_raw(struct floor *f, int uffd, uint64_t dst, uint64_t offset,
					  uint64_t pages)
{
	char err[256];
	read_raw(f, offset, pages * PAGE);
	return failed(f, uffd_copy(uffd, dst, f->buf, pages * PAGE, &f->st.copied, err, sizeof err), err);
}

#ifdef FL_HAVE_PAGE_CODEC
/* Decodes snapshot pages [first, first+count) (all stored) and copies them to dst; a page
 * that fails its check, or cannot be read, is poisoned and the rest go on being served. */
static enum uffd_install_result copy_stored(struct floor *f, int uffd, uint64_t dst, uint64_t first,
					    uint64_t count)
{
	char err[512];
	while (count) {
		uint64_t bad = first + count;
		enum fl_read_result r = fl_snapshot_read_pages(&f->snap, first, count, f->stored,
							       (uint8_t *)f->buf, &bad, &f->st.bytes_read,
							       err, sizeof err);
		if (r == FL_READ_IO_ERROR)
			bad = first; /* nothing of the run can be trusted: poison all of it */
		uint64_t good = bad - first;
		enum uffd_install_result res = UFFD_INSTALL_OK;
		if (good)
			res = uffd_copy(uffd, dst, f->buf, good * PAGE, &f->st.copied, err, sizeof err);
		if (res != UFFD_INSTALL_OK || r == FL_READ_OK)
			return failed(f, res, err);
		uint64_t poison = r == FL_READ_IO_ERROR ? count : 1;
		fprintf(stderr, "uffd-floor: %s: poisoning %s\n", err, poison == 1 ? "the page" : "the run");
		res = uffd_poison(uffd, dst + good * PAGE, poison * PAGE, &f->st.poisoned, err, sizeof err);
		if (res != UFFD_INSTALL_OK)
			return failed(f, res, err);
		first += good + poison;
		dst += (good + poison) * PAGE;
		count -= good + poison;
	}
	return UFFD_INSTALL_OK;
}

/* Snapshot pages [first, first+count) to dst: runs of stored pages decoded and copied, runs of
 * zero pages ZEROPAGEd, as faultline's session installs them. */
static enum uffd_install_result serve_snapshot(struct floor *f, int uffd, uint64_t dst, uint64_t first,
					       uint64_t count)
{
	char err[256];
	for (uint64_t i = 0; i < count;) {
		int zero = fl_snapshot_kind(&f->snap, first + i) == KIND_ZERO;
		uint64_t j = i + 1;
		while (j < count && (fl_snapshot_kind(&f->snap, first + j) == KIND_ZERO) == zero)
			j++;
		enum uffd_install_result res =
			zero ? failed(f, uffd_zeropage(uffd, dst + i * PAGE, (j - i) * PAGE, &f->st.zeroed, err,
						       sizeof err), err)
			     : copy_stored(f, uffd, dst + i * PAGE, first + i, j - i);
		if (res != UFFD_INSTALL_OK)
			return res;
		i = j;
	}
	return UFFD_INSTALL_OK;
}

/* A fault in a cache-mapped guest's region r: fills the folio holding the page if it is absent,
 * then wakes the guest over the folio's part of r (its retried fault maps the cache). */
static enum uffd_install_result serve_cache_fault(struct floor *f, const struct fl_region *r, int uffd,
						  uint64_t addr)
{
	struct fl_decoded_cache *c = &f->cache;
	char err[512];
	uint64_t offset = r->offset + (addr - r->addr), k = offset / c->folio_bytes;
	uint64_t folio_start = k * c->folio_bytes, folio_end = folio_start + c->folio_bytes;
	uint64_t lo = r->addr + (folio_start > r->offset ? folio_start - r->offset : 0);
	uint64_t hi = r->addr + (folio_end - r->offset < r->size ? folio_end - r->offset : r->size);
	if (c->state[k] == FOLIO_ABSENT) {
		enum fl_fill_result fill = fl_cache_fill(c, &f->snap, k, &f->st.bytes_read, err, sizeof err);
		if (fill == FILL_CACHED)
			f->st.folio_fills++;
		else if (fill == FILL_CORRUPT)
			fprintf(stderr, "uffd-floor: %s: folio %llu stays out of the cache, served page by page\n", err,
				(unsigned long long)k);
		else if (fill == FILL_FAILED) {
			/* The folio decoded fine: this page goes to the guest alone, the folio stays absent. */
			fprintf(stderr, "uffd-floor: %s; serving the page into the guest's own memory\n", err);
			return failed(f, uffd_copy(uffd, addr, c->decoded + (offset - folio_start), PAGE, &f->st.copied,
						   err, sizeof err), err);
		}
	} else if (c->state[k] == FOLIO_CACHED) {
		f->st.cache_wakes++;
	}
	switch ((enum fl_folio_state)c->state[k]) {
	case FOLIO_CACHED:
		return uffd_wake(uffd, lo, hi - lo, err, sizeof err) < 0 ? failed(f, UFFD_INSTALL_FAILED, err)
									   : UFFD_INSTALL_OK;
	case FOLIO_ZERO:
		return failed(f, uffd_zeropage(uffd, lo, hi - lo, &f->st.zeroed, err, sizeof err), err);
	case FOLIO_CORRUPT:
		/* Its folio stays out of the cache: this page goes to the guest alone (COPY,
		 * ZEROPAGE, or POISON if it is the page failing its check). */
		return serve_snapshot(f, uffd, addr, offset / PAGE, 1);
	case FOLIO_ABSENT:
		break;
	}
	snprintf(f->failure, sizeof f->failure, "folio %llu of the decoded cache is in no known state",
		 (unsigned long long)k);
	return UFFD_INSTALL_FAILED;
}

/* A cache-mapped guest forked (UFFD_EVENT_FORK; ufd is the child's uffd, ours alone): every
 * folio of its regions goes into the cache (or, for zero and damaged folios, which stay holes,
 * into the child's own memory), then the child's uffd is closed, which unregisters it and wakes
 * it: from then on it reads the cache and never depends on the server again. */
static enum uffd_install_result serve_forked_child(struct floor *f, const struct fl_request *req, int ufd)
{
	struct fl_decoded_cache *c = &f->cache;
	char err[512];
	enum uffd_install_result res = UFFD_INSTALL_OK;
	for (int i = 0; i < req->count && res == UFFD_INSTALL_OK; i++) {
		const struct fl_region *r = &req->regions[i];
		for (uint64_t at = 0; at < r->size && res == UFFD_INSTALL_OK;) {
			uint64_t offset = r->offset + at, k = offset / c->folio_bytes;
			uint64_t len = (k + 1) * c->folio_bytes - offset;
			if (len > r->size - at)
				len = r->size - at;
			if (c->state[k] == FOLIO_ABSENT) {
				enum fl_fill_result fill = fl_cache_fill(c, &f->snap, k, &f->st.bytes_read, err, sizeof err);
				if (fill == FILL_CACHED)
					f->st.folio_fills++;
				else if (fill == FILL_FAILED)
					res = failed(f, uffd_copy(ufd, r->addr + at, c->decoded + (offset - k * c->folio_bytes), len,
								  &f->st.copied, err, sizeof err), err);
			}
			if (c->state[k] == FOLIO_ZERO)
				res = failed(f, uffd_zeropage(ufd, r->addr + at, len, &f->st.zeroed, err, sizeof err), err);
			else if (c->state[k] == FOLIO_CORRUPT)
				res = serve_snapshot(f, ufd, r->addr + at, offset / PAGE, len / PAGE);
			at += len;
		}
	}
	close(ufd);
	f->st.children++;
	/* The child being gone already is no failure of the parent's session. */
	return res == UFFD_INSTALL_GUEST_GONE ? UFFD_INSTALL_OK : res;
}
#endif

/* Serves one fault: the batch is the --batch-pages-aligned block (counted from the region's
 * start) that holds the faulting page, clipped to the region. */
static enum uffd_install_result serve_fault(struct floor *f, const struct fl_request *req, int uffd,
					    int cache_mapped, const struct uffd_msg *m, uint64_t start_ns)
{
	uint64_t addr = m->arg.pagefault.address & ~(uint64_t)(PAGE - 1);
	for (int i = 0; i < req->count; i++) {
		const struct fl_region *r = &req->regions[i];
		if (addr < r->addr || addr - r->addr >= r->size)
			continue;
#ifdef FL_HAVE_PAGE_CODEC
		if (cache_mapped) {
			enum uffd_install_result res = serve_cache_fault(f, r, uffd, addr);
			record_service(&f->st, now_ns() - start_ns);
			return res;
		}
#else
		(void)cache_mapped;
#endif
		uint64_t page = (addr - r->addr) / PAGE;
		uint64_t first = page / f->o.batch_pages * f->o.batch_pages;
		uint64_t pages = r->size / PAGE - first;
		if (pages > f->o.batch_pages)
			pages = f->o.batch_pages;
		enum uffd_install_result res;
#ifdef FL_HAVE_PAGE_CODEC
		if (f->o.snapshot_path)
			res = serve_snapshot(f, uffd, r->addr + first * PAGE, r->offset / PAGE + first, pages);
		else
#endif
			res = serve_raw(f, uffd, r->addr + first * PAGE, r->offset + first * PAGE, pages);
		record_service(&f->st, now_ns() - start_ns);
		return res;
	}
	snprintf(f->failure, sizeof f->failure, "fault at 0x%llx is outside every region the guest declared",
		 (unsigned long long)addr);
	fprintf(stderr, "uffd-floor: %s\n", f->failure);
	return UFFD_INSTALL_FAILED;
}

/* Refuses regions this server cannot serve, and anything but a userfaultfd. */
static int check_request(const struct floor *f, int uffd, const struct fl_request *req, char *err,
			 size_t errcap)
{
	(void)f; /* without the page codec there is no snapshot to check against */
	for (int i = 0; i < req->count; i++) {
		const struct fl_region *r = &req->regions[i];
		if (r->page_size != PAGE) {
			snprintf(err, errcap, "region %d: page_size %llu: uffd-floor serves %u-byte pages only",
				 i, (unsigned long long)r->page_size, PAGE);
			return -1;
		}
#ifdef FL_HAVE_PAGE_CODEC
		uint64_t image = f->snap.page_count * PAGE;
		if (f->o.snapshot_path && (r->offset > image || r->size > image - r->offset)) {
			snprintf(err, errcap, "region %d: offset %llu + size %llu is past the snapshot's end (%llu bytes)",
				 i, (unsigned long long)r->offset, (unsigned long long)r->size,
				 (unsigned long long)image);
			return -1;
		}
#endif
	}
	for (int i = 0; i < req->count; i++) {
		for (int j = 0; j < i; j++) {
			const struct fl_region *a = &req->regions[i], *b = &req->regions[j];
			if (a->addr < b->addr + b->size && b->addr < a->addr + a->size) {
				snprintf(err, errcap, "regions %d and %d overlap", j, i);
				return -1;
			}
		}
	}
	if (!uffd_is_userfaultfd(uffd)) {
		snprintf(err, errcap, "the file descriptor sent is not a userfaultfd");
		return -1;
	}
	return 0;
}

static int register_missing(int uffd, const struct fl_request *req, char *err, size_t errcap)
{
	for (int i = 0; i < req->count; i++)
		if (uffd_register_missing(uffd, req->regions[i].addr, req->regions[i].size, err, errcap) < 0)
			return -1;
	return 0;
}

/* Registers the guest's ranges when the faultline form asks the server to (with POISON when
 * serving a snapshot, so a page failing its check is never served). */
static int register_regions(const struct floor *f, int uffd, const struct fl_request *req, char *err,
			    size_t errcap)
{
	if (req->form != FL_HANDSHAKE_FAULTLINE || !req->server_registers)
		return 0;
	if (uffd_api(uffd, f->o.snapshot_path ? UFFD_FEATURE_POISON : 0, err, errcap) < 0)
		return -1;
	return register_missing(uffd, req, err, errcap);
}

/* The map stage of a guest that asked for the cache: offer it, wait until the guest says it
 * mapped it, check it did, register. Returns 0, or -1 with err set (reply: whether the guest
 * still waits for an answer). */
static int map_cache(struct floor *f, int conn, int uffd, const struct fl_request *req, long session,
		     int *reply, char *err, size_t errcap)
{
#ifdef FL_HAVE_PAGE_CODEC
	*reply = 0;
	/* UFFDIO_API was done: EVENT_FORK is part of serving a cache-mapped guest. */
	if (fl_server_offer_cache(conn, session, PAGE, f->cache.folio_bytes, f->cache.guest_fd) < 0) {
		snprintf(err, errcap, "sending the cache: %s", strerror(errno));
		return -1;
	}
	/* Steps 3-4 have the handshake's deadline, counted from the offer. */
	if (fl_server_receive_mapped(conn, now_ns() + (uint64_t)FL_RECEIVE_TIMEOUT_MS * 1000000u, err, errcap) < 0)
		return -1;
	*reply = 1;
	return fl_server_check_cache_mapped(req, f->cache.fd, err, errcap) < 0 ||
			       register_missing(uffd, req, err, errcap) < 0
		       ? -1
		       : 0;
#else
	(void)f, (void)conn, (void)uffd, (void)req, (void)session, (void)errcap;
	*reply = 1;
	snprintf(err, errcap, "no decoded cache");
	return -1;
#endif
}

/* Before and after each guest: folios of the cache the server did not write are someone
 * else's zeros (see fl_cache_scrub); none may be read as the snapshot's. */
static void scrub_cache(struct floor *f)
{
#ifdef FL_HAVE_PAGE_CODEC
	if (!f->o.map_cache)
		return;
	uint64_t foreign = fl_cache_scrub(&f->cache);
	if (foreign)
		fprintf(stderr, "uffd-floor: %llu folios of the decoded cache were allocated by a process the server "
			"does not serve (a mapping of the cache not registered with it): punched out\n",
			(unsigned long long)foreign);
	f->st.foreign_folios += foreign;
#else
	(void)f;
#endif
}

/* One guest, from handshake to disconnect. */
static void serve_guest(struct floor *f, int conn)
{
	static struct fl_request req;
	char err[512];
	int uffd = fl_server_receive(conn, &req, err, sizeof err);
	int reply = 1;
	long session = (long)f->st.guests + 1;
	int ok = uffd >= 0 && check_request(f, uffd, &req, err, sizeof err) == 0;
	int cache_mapped = ok && req.form == FL_HANDSHAKE_FAULTLINE && req.map == FL_MAP_CACHE && f->o.map_cache;
	if (cache_mapped && uffd_api(uffd, UFFD_FEATURE_POISON | UFFD_FEATURE_EVENT_FORK, err, sizeof err) < 0) {
		/* A child the server is not told of would read the cache's holes unregistered,
		 * allocating zero folios every guest then reads: no cache without EVENT_FORK. The
		 * failed UFFDIO_API left the uffd fresh for the anonymous path's. */
		fprintf(stderr, "uffd-floor: serving a guest anonymous memory instead of the cache: %s with "
			"EVENT_FORK (which needs CAP_SYS_PTRACE)\n", err);
		cache_mapped = 0;
	}
	if (cache_mapped)
		scrub_cache(f);
	if (!ok || (cache_mapped ? map_cache(f, conn, uffd, &req, session, &reply, err, sizeof err)
				 : register_regions(f, uffd, &req, err, sizeof err)) < 0) {
		fprintf(stderr, "uffd-floor: refused a guest: %s\n", err);
		if (reply)
			fl_server_reply_error(conn, err);
		if (uffd >= 0)
			close(uffd);
		return;
	}
	f->st.guests++;
	uint64_t folio_bytes = 0;
#ifdef FL_HAVE_PAGE_CODEC
	if (cache_mapped) {
		f->st.cache_guests++;
		folio_bytes = f->cache.folio_bytes;
	}
#endif
	if (fl_server_reply_ok(conn, session, PAGE, &req, folio_bytes) < 0) {
		close(uffd);
		return;
	}
	/* The guest's uffd was created O_NONBLOCK: read until EAGAIN, then poll. */
	while (!stopping) {
		struct pollfd p[2] = {
			{ .fd = uffd, .events = POLLIN },
			{ .fd = conn, .events = POLLIN | POLLRDHUP },
		};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "uffd-floor: poll: %s\n", strerror(errno));
			break;
		}
		if (p[1].revents & (POLLHUP | POLLRDHUP | POLLERR))
			break;
		if (p[1].revents & POLLIN) {
			char sink[256];
			if (recv(conn, sink, sizeof sink, MSG_DONTWAIT) == 0)
				break;
		}
		enum uffd_install_result res = UFFD_INSTALL_OK;
		while (res == UFFD_INSTALL_OK && (p[0].revents & POLLIN)) {
			struct uffd_msg m;
			uint64_t start_ns = now_ns();
			ssize_t n = read(uffd, &m, sizeof m);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN)
				break;
			if (n != (ssize_t)sizeof m) {
				snprintf(f->failure, sizeof f->failure, "reading the uffd: %s",
					 n < 0 ? strerror(errno) : "short read");
				fprintf(stderr, "uffd-floor: %s\n", f->failure);
				res = UFFD_INSTALL_FAILED;
				break;
			}
			if (m.event == UFFD_EVENT_PAGEFAULT)
				res = serve_fault(f, &req, uffd, cache_mapped, &m, start_ns);
#ifdef FL_HAVE_PAGE_CODEC
			else if (m.event == UFFD_EVENT_FORK)
				res = serve_forked_child(f, &req, (int)m.arg.fork.ufd);
#endif
		}
		if (res == UFFD_INSTALL_FAILED) {
			/* Fail closed: the guest's watchdog prints this and stops it. */
			fl_server_reply_error(conn, f->failure);
			break;
		}
		if (res != UFFD_INSTALL_OK)
			break;
	}
	close(uffd);
	scrub_cache(f);
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of the sorted samples. */
static uint64_t percentile(const uint64_t *sorted, uint64_t n, double q)
{
	uint64_t rank = (uint64_t)(q * (double)n + 0.999999);
	return sorted[rank ? rank - 1 : 0];
}

static void print_stats(const struct floor *f)
{
	const struct stats *st = &f->st;
	const struct options *o = &f->o;
	char cache[256] = "";
#ifdef FL_HAVE_PAGE_CODEC
	if (o->map_cache)
		snprintf(cache, sizeof cache,
			 ",\"cache_folio_bytes\":%llu,\"cache_guests\":%llu,\"folio_fills\":%llu,\"cache_wakes\":%llu,"
			 "\"foreign_folios\":%llu,\"children\":%llu",
			 (unsigned long long)f->cache.folio_bytes, (unsigned long long)st->cache_guests,
			 (unsigned long long)st->folio_fills, (unsigned long long)st->cache_wakes,
			 (unsigned long long)st->foreign_folios, (unsigned long long)st->children);
#endif
	char median[32] = "null", p99[32] = "null", max[32] = "null", mean[32] = "null";
	if (st->faults) {
		uint64_t sum = 0;
		qsort(st->service_ns, st->faults, sizeof *st->service_ns, compare_u64);
		for (uint64_t i = 0; i < st->faults; i++)
			sum += st->service_ns[i];
		snprintf(median, sizeof median, "%llu",
			 (unsigned long long)percentile(st->service_ns, st->faults, 0.5));
		snprintf(p99, sizeof p99, "%llu",
			 (unsigned long long)percentile(st->service_ns, st->faults, 0.99));
		snprintf(max, sizeof max, "%llu", (unsigned long long)st->service_ns[st->faults - 1]);
		snprintf(mean, sizeof mean, "%llu", (unsigned long long)(sum / st->faults));
	}
	printf("{\"ok\":true,\"source\":\"%s\",\"guests\":%llu,\"batch_pages\":%llu,\"faults\":%llu,"
	       "\"pages_copied\":%llu,\"pages_zeroed\":%llu,\"pages_poisoned\":%llu,\"bytes_read\":%llu,"
	       "\"eexist\":%llu,\"eagain\":%llu,\"service_median_ns\":%s,\"service_p99_ns\":%s,"
	       "\"service_max_ns\":%s,\"service_mean_ns\":%s%s}\n",
	       o->snapshot_path ? "snapshot" : "raw", (unsigned long long)st->guests,
	       (unsigned long long)o->batch_pages, (unsigned long long)st->faults,
	       (unsigned long long)st->copied.pages, (unsigned long long)st->zeroed.pages,
	       (unsigned long long)st->poisoned.pages, (unsigned long long)st->bytes_read,
	       (unsigned long long)(st->copied.eexist + st->zeroed.eexist + st->poisoned.eexist),
	       (unsigned long long)(st->copied.eagain + st->zeroed.eagain + st->poisoned.eagain), median,
	       p99, max, mean, cache);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static struct floor f;
	char err[512];
	parse_options(&f.o, argc, argv);
	if (f.o.raw_path) {
		f.raw_fd = open(f.o.raw_path, O_RDONLY | O_CLOEXEC);
		if (f.raw_fd < 0)
			args_fail("--raw: cannot open '%s': %s", f.o.raw_path, strerror(errno));
	}
#ifdef FL_HAVE_PAGE_CODEC
	if (f.o.snapshot_path) {
		if (fl_snapshot_open(&f.snap, f.o.snapshot_path, err, sizeof err) < 0)
			args_fail("--snapshot: %s", err);
		if (f.snap.page_size != PAGE)
			args_fail("--snapshot: %s: page size %u: uffd-floor serves %u-byte pages only",
				  f.o.snapshot_path, f.snap.page_size, PAGE);
		if (posix_memalign((void **)&f.stored, PAGE, f.o.batch_pages * PAGE) != 0)
			args_fail("cannot allocate a %llu-page buffer", (unsigned long long)f.o.batch_pages);
		memset(f.stored, 0, f.o.batch_pages * PAGE);
		if (f.o.map_cache) {
			if (fl_cache_create(&f.cache, &f.snap, err, sizeof err) < 0)
				args_fail("--map cache: %s", err);
			fprintf(stderr, "uffd-floor: decoded cache: %s\n", f.cache.what);
		}
	}
#endif
	if (posix_memalign((void **)&f.buf, PAGE, f.o.batch_pages * PAGE) != 0)
		args_fail("cannot allocate a %llu-page buffer", (unsigned long long)f.o.batch_pages);
	/* Touch the buffers now so their own page faults don't land in the first fault's time. */
	memset(f.buf, 0, f.o.batch_pages * PAGE);

	/* No SA_RESTART: a signal must break poll()/accept() so the stats still get printed. */
	struct sigaction sa = { .sa_handler = on_stop };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	int listen_fd = fl_server_listen(f.o.socket_path, err, sizeof err);
	if (listen_fd < 0)
		args_fail("%s", err);
	fprintf(stderr, "uffd-floor: listening on %s\n", f.o.socket_path);

	while (!stopping) {
		int conn = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			fprintf(stderr, "uffd-floor: accept: %s\n", strerror(errno));
			break;
		}
		serve_guest(&f, conn);
		close(conn);
		if (f.o.once)
			break;
	}
	close(listen_fd);
	unlink(f.o.socket_path);
	print_stats(&f);
	return 0;
}
