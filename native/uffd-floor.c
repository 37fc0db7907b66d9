/* The floor: the least a userfaultfd page server can do, in C, so the Node server's per-fault cost
 * has something to be held against: from a raw image (pread, UFFDIO_COPY), or doing faultline's
 * own work from a v1 snapshot (pread of the stored bytes, LZ4 decode, CRC-32 check, UFFDIO_COPY
 * or UFFDIO_ZEROPAGE, a page failing its check poisoned). No policy. */
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
};

struct stats {
	uint64_t guests;
	uint64_t faults;
	struct uffd_install_counts copied, zeroed, poisoned;
	uint64_t bytes_read;
	uint64_t *service_ns;  /* one entry a fault: read() of the message to the last install's return */
	uint64_t service_cap;
};

struct floor {
	struct options o;
	int raw_fd;
#ifdef FL_HAVE_PAGE_CODEC
	struct fl_snapshot snap;
	uint8_t *stored; /* batch_pages pages: a run's stored bytes */
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
	"usage: uffd-floor --socket PATH (--raw RAW | --snapshot SNAP) [--batch-pages N] [--once]\n"
	"\n"
	"Serves one guest at a time (both handshake forms). A fault installs the --batch-pages-aligned\n"
	"block (default 1 page) holding the faulting page, clipped to the region:\n"
	"  --raw RAW       pread of the raw image (zeros past its end), UFFDIO_COPY\n"
	"  --snapshot SNAP a faultline v1 snapshot (4096-byte pages), validated at start: one pread of\n"
	"                  the block's stored bytes, LZ4 decode and CRC-32 check of each page, then\n"
	"                  UFFDIO_COPY of its stored pages and UFFDIO_ZEROPAGE of its zero pages; a page\n"
	"                  failing its check is poisoned (UFFDIO_POISON: the guest gets SIGBUS there),\n"
	"                  never served. Regions must lie inside the snapshot's image.\n"
	"Prints \"listening on PATH\" on stderr when ready; on exit (--once: after the first guest\n"
	"disconnects; or SIGINT/SIGTERM) one JSON line: source, guests, batch_pages, faults,\n"
	"pages_copied, pages_zeroed, pages_poisoned, bytes_read, eexist, eagain,\n"
	"service_{median,p99,max,mean}_ns (read() of the fault message to the last install's return,\n"
	"nearest rank; null without faults).\n";

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
#ifndef FL_HAVE_PAGE_CODEC
	if (o->snapshot_path)
		args_fail("--snapshot: this uffd-floor was built without liblz4 and ISA-L "
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
#endif

/* Serves one fault: the batch is the --batch-pages-aligned block (counted from the region's
 * start) that holds the faulting page, clipped to the region. */
static enum uffd_install_result serve_fault(struct floor *f, const struct fl_request *req, int uffd,
					    const struct uffd_msg *m, uint64_t start_ns)
{
	uint64_t addr = m->arg.pagefault.address & ~(uint64_t)(PAGE - 1);
	for (int i = 0; i < req->count; i++) {
		const struct fl_region *r = &req->regions[i];
		if (addr < r->addr || addr - r->addr >= r->size)
			continue;
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

/* Checks the regions and registers the guest's ranges when the faultline form asks the server
 * to (with POISON, when serving a snapshot, so a page failing its check is never served). */
static int setup_uffd(const struct floor *f, int uffd, const struct fl_request *req, char *err,
		      size_t errcap)
{
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
	if (req->form != FL_HANDSHAKE_FAULTLINE || !req->server_registers)
		return 0;
	if (uffd_api(uffd, f->o.snapshot_path ? UFFD_FEATURE_POISON : 0, err, errcap) < 0)
		return -1;
	for (int i = 0; i < req->count; i++)
		if (uffd_register_missing(uffd, req->regions[i].addr, req->regions[i].size, err, errcap) < 0)
			return -1;
	return 0;
}

/* One guest, from handshake to disconnect. */
static void serve_guest(struct floor *f, int conn)
{
	static struct fl_request req;
	char err[512];
	int uffd = fl_server_receive(conn, &req, err, sizeof err);
	if (uffd < 0 || setup_uffd(f, uffd, &req, err, sizeof err) < 0) {
		fprintf(stderr, "uffd-floor: refused a guest: %s\n", err);
		fl_server_reply_error(conn, err);
		if (uffd >= 0)
			close(uffd);
		return;
	}
	f->st.guests++;
	if (fl_server_reply_ok(conn, (long)f->st.guests, PAGE) < 0) {
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
				res = serve_fault(f, &req, uffd, &m, start_ns);
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

static void print_stats(struct stats *st, const struct options *o)
{
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
	       "\"service_max_ns\":%s,\"service_mean_ns\":%s}\n",
	       o->snapshot_path ? "snapshot" : "raw", (unsigned long long)st->guests,
	       (unsigned long long)o->batch_pages, (unsigned long long)st->faults,
	       (unsigned long long)st->copied.pages, (unsigned long long)st->zeroed.pages,
	       (unsigned long long)st->poisoned.pages, (unsigned long long)st->bytes_read,
	       (unsigned long long)(st->copied.eexist + st->zeroed.eexist + st->poisoned.eexist),
	       (unsigned long long)(st->copied.eagain + st->zeroed.eagain + st->poisoned.eagain), median,
	       p99, max, mean);
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
	print_stats(&f.st, &f.o);
	return 0;
}
