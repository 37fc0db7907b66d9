/* The floor: the least a userfaultfd page server can do (pread the raw image, UFFDIO_COPY, no
 * snapshot, no policy), in C, so the Node server's per-fault cost has something to be held against. */
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

#define PAGE FL_PAGE_SIZE
#define MAX_BATCH_PAGES 65536u

struct options {
	const char *socket_path;
	const char *raw_path;
	uint64_t batch_pages;
	int once;
};

struct stats {
	uint64_t guests;
	uint64_t faults;
	uint64_t pages_copied;
	uint64_t bytes_read;
	uint64_t eexist;       /* pages already present when we tried to copy them */
	uint64_t eagain;       /* retried copies */
	uint64_t *service_ns;  /* one entry a fault: read() of the message to UFFDIO_COPY's return */
	uint64_t service_cap;
};

struct floor {
	struct options o;
	int raw_fd;
	char *buf; /* batch_pages pages */
	struct stats st;
};

static volatile sig_atomic_t stopping;

static void on_stop(int sig)
{
	(void)sig;
	stopping = 1;
}

static const char usage[] =
	"usage: uffd-floor --socket PATH --raw RAW [--batch-pages N] [--once]\n"
	"\n"
	"Serves one guest at a time (both handshake forms) from RAW, zeros past its end. A fault\n"
	"installs the --batch-pages-aligned block (default 1 page) holding the faulting page, clipped\n"
	"to the region. Prints \"listening on PATH\" on stderr when ready; on exit (--once: after the\n"
	"first guest disconnects; or SIGINT/SIGTERM) one JSON line: guests, batch_pages, faults,\n"
	"pages_copied, bytes_read, eexist, eagain, service_{median,p99,max,mean}_ns (read() of the\n"
	"fault message to UFFDIO_COPY's return, nearest rank; null without faults).\n";

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
	if (!o->raw_path)
		args_fail("--raw: required");
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

enum copy_result { COPY_OK, COPY_GUEST_GONE, COPY_FAILED };

/* Copies [dst, dst+len) from buf. EEXIST is success (someone, us earlier, installed that page:
 * skip it and go on); EAGAIN (partial copy, or the guest's mm changing) is retried. */
static enum copy_result copy_range(struct floor *f, int uffd, uint64_t dst, uint64_t len)
{
	uint64_t done = 0;
	while (done < len) {
		struct uffdio_copy c = {
			.dst = dst + done, .src = (uint64_t)(uintptr_t)(f->buf + done), .len = len - done,
		};
		if (ioctl(uffd, UFFDIO_COPY, &c) == 0) {
			f->st.pages_copied += (len - done) / PAGE;
			return COPY_OK;
		}
		int e = errno;
		if (c.copy > 0) {
			f->st.pages_copied += (uint64_t)c.copy / PAGE;
			done += (uint64_t)c.copy;
		}
		if (e == EAGAIN) {
			f->st.eagain++;
		} else if (e == EEXIST) {
			f->st.eexist++;
			done += PAGE;
		} else if (e == ESRCH) {
			return COPY_GUEST_GONE;
		} else {
			fprintf(stderr, "uffd-floor: UFFDIO_COPY 0x%llx+%llu: %s\n",
				(unsigned long long)(dst + done), (unsigned long long)(len - done), strerror(e));
			return COPY_FAILED;
		}
	}
	return COPY_OK;
}

/* Serves one fault: the batch is the --batch-pages-aligned block (counted from the region's
 * start) that holds the faulting page, clipped to the region. */
static enum copy_result serve_fault(struct floor *f, const struct fl_request *req, int uffd,
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
		read_raw(f, r->offset + first * PAGE, pages * PAGE);
		enum copy_result res = copy_range(f, uffd, r->addr + first * PAGE, pages * PAGE);
		record_service(&f->st, now_ns() - start_ns);
		return res;
	}
	fprintf(stderr, "uffd-floor: fault at 0x%llx is outside every region the guest declared\n",
		(unsigned long long)addr);
	return COPY_FAILED;
}

/* Registers the guest's ranges when the faultline form asks the server to. */
static int setup_uffd(int uffd, const struct fl_request *req, char *err, size_t errcap)
{
	for (int i = 0; i < req->count; i++) {
		if (req->regions[i].page_size != PAGE) {
			snprintf(err, errcap, "region %d: page_size %llu: uffd-floor serves %u-byte pages only",
				 i, (unsigned long long)req->regions[i].page_size, PAGE);
			return -1;
		}
	}
	if (!uffd_is_userfaultfd(uffd)) {
		snprintf(err, errcap, "the file descriptor sent is not a userfaultfd");
		return -1;
	}
	if (req->form != FL_HANDSHAKE_FAULTLINE || !req->server_registers)
		return 0;
	if (uffd_api(uffd, 0, err, errcap) < 0)
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
	if (uffd < 0 || setup_uffd(uffd, &req, err, sizeof err) < 0) {
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
		enum copy_result res = COPY_OK;
		while (res == COPY_OK && (p[0].revents & POLLIN)) {
			struct uffd_msg m;
			uint64_t start_ns = now_ns();
			ssize_t n = read(uffd, &m, sizeof m);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN)
				break;
			if (n != (ssize_t)sizeof m) {
				fprintf(stderr, "uffd-floor: reading the uffd: %s\n",
					n < 0 ? strerror(errno) : "short read");
				res = COPY_FAILED;
				break;
			}
			if (m.event == UFFD_EVENT_PAGEFAULT)
				res = serve_fault(f, &req, uffd, &m, start_ns);
		}
		if (res != COPY_OK)
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

static void print_stats(struct stats *st, uint64_t batch_pages)
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
	printf("{\"ok\":true,\"guests\":%llu,\"batch_pages\":%llu,\"faults\":%llu,\"pages_copied\":%llu,"
	       "\"bytes_read\":%llu,\"eexist\":%llu,\"eagain\":%llu,\"service_median_ns\":%s,"
	       "\"service_p99_ns\":%s,\"service_max_ns\":%s,\"service_mean_ns\":%s}\n",
	       (unsigned long long)st->guests, (unsigned long long)batch_pages,
	       (unsigned long long)st->faults, (unsigned long long)st->pages_copied,
	       (unsigned long long)st->bytes_read, (unsigned long long)st->eexist,
	       (unsigned long long)st->eagain, median, p99, max, mean);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static struct floor f;
	char err[512];
	parse_options(&f.o, argc, argv);
	f.raw_fd = open(f.o.raw_path, O_RDONLY | O_CLOEXEC);
	if (f.raw_fd < 0)
		args_fail("--raw: cannot open '%s': %s", f.o.raw_path, strerror(errno));
	if (posix_memalign((void **)&f.buf, PAGE, f.o.batch_pages * PAGE) != 0)
		args_fail("cannot allocate a %llu-page buffer", (unsigned long long)f.o.batch_pages);
	/* Touch the buffer now so its own page faults don't land in the first fault's time. */
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
	print_stats(&f.st, f.o.batch_pages);
	return 0;
}
