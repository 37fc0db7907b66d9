/* The test guest: N MiB of "RAM" filled by a page server (uffd), a file mapping or an eager read,
 * touched by a workload, checked against the raw image; one JSON line out. Its CLI is a contract. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "handshake.h"
#include "json.h"
#include "timing.h"
#include "uffd.h"

#define PAGE FL_PAGE_SIZE
#define MAX_MIB 16777215u /* keeps page indices in a u32, as --touched-out stores them */
#define MAX_THREADS 1024u
#define EAGER_BLOCK (8u << 20)
#define VERIFY_RUN_PAGES 256u
#define MISMATCHES_SHOWN 8

enum source_kind { SOURCE_UFFD, SOURCE_MMAP, SOURCE_EAGER };
enum workload_kind { WORKLOAD_SEQUENTIAL, WORKLOAD_RANDOM, WORKLOAD_PAGES, WORKLOAD_NONE };

struct options {
	const char *socket_path;
	uint64_t mib;
	enum fl_handshake handshake;
	uint64_t offset;
	enum source_kind source;
	const char *source_raw;
	const char *workload_text;
	enum workload_kind workload;
	double fraction;
	const char *pages_file;
	uint64_t seed;
	uint64_t threads;
	int write;
	const char *verify_raw;
	const char *touched_out;
	uint64_t hold_ms;
};

static const char usage[] =
	"usage: guest --socket PATH --mib N [--handshake faultline|firecracker] [--offset BYTES]\n"
	"             [--source uffd|mmap:RAW|eager:RAW]\n"
	"             [--workload sequential|sequential:FRACTION|random:FRACTION|pages:FILE|none]\n"
	"             [--seed N] [--threads N] [--write] [--verify RAW] [--touched-out FILE]\n"
	"             [--hold-ms N]\n"
	"\n"
	"  --source      uffd (default): a page server fills the region on faults; mmap:RAW: MAP_PRIVATE\n"
	"                of RAW over it (kernel demand paging); eager:RAW: read() all of RAW first\n"
	"  --offset      byte offset of the region in RAW / the snapshot (multiple of 4096; K/M/G ok)\n"
	"  --workload    each touch reads the page's first word (--write: atomic add of 0, a write\n"
	"                that keeps the bytes). sequential[:F]: the first round(F*pages) in order;\n"
	"                random:F: round(F*pages) distinct pages, partial Fisher-Yates with splitmix64\n"
	"                seeded by --seed (j = i + next() % (pages - i)); pages:FILE: one index a line,\n"
	"                '#' comments, repeats dropped; none\n"
	"  --threads     the list is dealt round-robin to N threads released together\n"
	"  --verify      compare touched pages with RAW at offset + page*4096 (zeros past its end)\n"
	"  --touched-out touched pages as little-endian u32, in first-touch order\n"
	"  --hold-ms     after printing the result, stay alive N ms (the watchdog still runs)\n"
	"\n"
	"Prints one JSON line. Times are ns from time zero, taken after argument parsing and workload\n"
	"preparation (setup_ns) and just before the region is mapped: resume_ns (region ready),\n"
	"first_access_ns (null if nothing touched), total_ns, workload_ns = total - resume; verify_ns\n"
	"apart; io_*, minflt, majflt, cpu_ns cover resume + workload. Exit: 0 ok, 1 verify mismatch,\n"
	"2 bad arguments or setup failure (incl. 'guest: server refused: ...'), 3 the page server\n"
	"went away (watchdog: 'guest: page server closed the connection; exiting').\n";

static void parse_source(struct options *o, const char *text)
{
	if (strcmp(text, "uffd") == 0) {
		o->source = SOURCE_UFFD;
	} else if (strncmp(text, "mmap:", 5) == 0 && text[5]) {
		o->source = SOURCE_MMAP;
		o->source_raw = text + 5;
	} else if (strncmp(text, "eager:", 6) == 0 && text[6]) {
		o->source = SOURCE_EAGER;
		o->source_raw = text + 6;
	} else {
		args_fail("--source: expected uffd, mmap:RAW or eager:RAW, got '%s'", text);
	}
}

static void parse_workload(struct options *o, const char *text)
{
	o->workload_text = text;
	o->fraction = 1.0;
	if (strcmp(text, "sequential") == 0) {
		o->workload = WORKLOAD_SEQUENTIAL;
	} else if (strncmp(text, "sequential:", 11) == 0) {
		o->workload = WORKLOAD_SEQUENTIAL;
		o->fraction = args_fraction("--workload", text + 11, text);
	} else if (strncmp(text, "random:", 7) == 0) {
		o->workload = WORKLOAD_RANDOM;
		o->fraction = args_fraction("--workload", text + 7, text);
	} else if (strncmp(text, "pages:", 6) == 0 && text[6]) {
		o->workload = WORKLOAD_PAGES;
		o->pages_file = text + 6;
	} else if (strcmp(text, "none") == 0) {
		o->workload = WORKLOAD_NONE;
	} else {
		args_fail("--workload: expected sequential, sequential:FRACTION, random:FRACTION, "
			  "pages:FILE or none, got '%s'", text);
	}
}

static void parse_options(struct options *o, int argc, char **argv)
{
	struct args a;
	memset(o, 0, sizeof *o);
	o->handshake = FL_HANDSHAKE_FAULTLINE;
	o->source = SOURCE_UFFD;
	o->seed = 1;
	o->threads = 1;
	parse_workload(o, "sequential");
	args_init(&a, "guest", argc, argv);
	while (args_next(&a)) {
		if (args_is(&a, "--help")) {
			fputs(usage, stdout);
			exit(0);
		} else if (args_is(&a, "--socket")) {
			o->socket_path = args_value(&a);
		} else if (args_is(&a, "--mib")) {
			o->mib = args_u64("--mib", args_value(&a), 1, MAX_MIB, 0);
		} else if (args_is(&a, "--handshake")) {
			const char *v = args_value(&a);
			if (strcmp(v, "faultline") == 0)
				o->handshake = FL_HANDSHAKE_FAULTLINE;
			else if (strcmp(v, "firecracker") == 0)
				o->handshake = FL_HANDSHAKE_FIRECRACKER;
			else
				args_fail("--handshake: expected faultline or firecracker, got '%s'", v);
		} else if (args_is(&a, "--offset")) {
			const char *v = args_value(&a);
			o->offset = args_u64("--offset", v, 0, UINT64_MAX, 1);
			if (o->offset % PAGE)
				args_fail("--offset: expected a multiple of %u, got '%s'", PAGE, v);
		} else if (args_is(&a, "--source")) {
			parse_source(o, args_value(&a));
		} else if (args_is(&a, "--workload")) {
			parse_workload(o, args_value(&a));
		} else if (args_is(&a, "--seed")) {
			o->seed = args_u64("--seed", args_value(&a), 0, UINT64_MAX, 0);
		} else if (args_is(&a, "--threads")) {
			o->threads = args_u64("--threads", args_value(&a), 1, MAX_THREADS, 0);
		} else if (args_is(&a, "--write")) {
			args_no_value(&a);
			o->write = 1;
		} else if (args_is(&a, "--verify")) {
			o->verify_raw = args_value(&a);
		} else if (args_is(&a, "--touched-out")) {
			o->touched_out = args_value(&a);
		} else if (args_is(&a, "--hold-ms")) {
			o->hold_ms = args_u64("--hold-ms", args_value(&a), 0, 86400000, 0);
		} else {
			args_fail("unknown option '%s' (see --help)", a.name);
		}
	}
	if (!o->mib)
		args_fail("--mib: required");
	if (o->source == SOURCE_UFFD && !o->socket_path)
		args_fail("--socket: required with --source uffd");
}

/* splitmix64 (Steele, Lea, Flood 2014): state += 0x9e3779b97f4a7c15, then the finaliser. Chosen
 * because it is one line in any language, so a test can recompute the same page order. */
static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t *alloc_pages_list(size_t count)
{
	uint32_t *list = malloc((count ? count : 1) * sizeof *list);
	if (!list)
		args_fail("cannot allocate a list of %zu pages", count);
	return list;
}

/* random:F is a partial Fisher-Yates shuffle of 0..pages-1 seeded with --seed:
 * for i < count: j = i + splitmix64() % (pages - i); swap(list[i], list[j]). */
static uint32_t *random_pages(uint32_t pages, uint32_t count, uint64_t seed)
{
	uint32_t *list = alloc_pages_list(pages);
	uint64_t state = seed;
	for (uint32_t i = 0; i < pages; i++)
		list[i] = i;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t j = i + (uint32_t)(splitmix64(&state) % (uint64_t)(pages - i));
		uint32_t t = list[i];
		list[i] = list[j];
		list[j] = t;
	}
	return list;
}

/* pages:FILE: one decimal index a line, '#' comments and blank lines allowed; a repeated index
 * is dropped (it would not fault again), so the list is the pages in first-touch order. */
static uint32_t *file_pages(const char *path, uint32_t pages, uint32_t *count)
{
	FILE *f = fopen(path, "r");
	if (!f)
		args_fail("--workload: cannot open pages file '%s': %s", path, strerror(errno));
	uint8_t *seen = calloc(pages / 8 + 1, 1);
	size_t cap = 1024, n = 0;
	uint32_t *list = malloc(cap * sizeof *list);
	if (!seen || !list)
		args_fail("out of memory reading '%s'", path);
	char *line = NULL;
	size_t line_cap = 0;
	unsigned long line_no = 0;
	while (getline(&line, &line_cap, f) >= 0) {
		line_no++;
		char *p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0')
			continue;
		char *end = p;
		uint64_t v = 0;
		int overflow = 0;
		while (*end >= '0' && *end <= '9') {
			v = v * 10 + (uint64_t)(*end++ - '0');
			overflow |= v > UINT32_MAX;
		}
		char *rest = end;
		while (*rest == ' ' || *rest == '\t' || *rest == '\r' || *rest == '\n')
			rest++;
		if (end == p || (*rest && *rest != '#')) {
			p[strcspn(p, "\r\n")] = '\0';
			args_fail("%s:%lu: expected a page index, got '%s'", path, line_no, p);
		}
		if (overflow || v >= pages)
			args_fail("%s:%lu: page %.*s is out of range (the region has %u pages)", path,
				  line_no, (int)(end - p), p, pages);
		if (seen[v / 8] & (1u << (v % 8)))
			continue;
		seen[v / 8] |= (uint8_t)(1u << (v % 8));
		if (n == cap) {
			cap *= 2;
			list = realloc(list, cap * sizeof *list);
			if (!list)
				args_fail("out of memory reading '%s'", path);
		}
		list[n++] = (uint32_t)v;
	}
	if (ferror(f))
		args_fail("--workload: reading '%s': %s", path, strerror(errno));
	free(line);
	free(seen);
	fclose(f);
	*count = (uint32_t)n;
	return list;
}

static uint32_t *build_pages_list(const struct options *o, uint32_t pages, uint32_t *count)
{
	uint32_t n = (uint32_t)llround(o->fraction * (double)pages);
	uint32_t *list;
	switch (o->workload) {
	case WORKLOAD_SEQUENTIAL:
		list = alloc_pages_list(n);
		for (uint32_t i = 0; i < n; i++)
			list[i] = i;
		*count = n;
		return list;
	case WORKLOAD_RANDOM:
		*count = n;
		return random_pages(pages, n, o->seed);
	case WORKLOAD_PAGES:
		return file_pages(o->pages_file, pages, count);
	case WORKLOAD_NONE:
		break;
	}
	*count = 0;
	return alloc_pages_list(0);
}

/* ---- sources: each leaves [region, region+len) ready to run ---- */

static int open_raw(const char *opt, const char *path, uint64_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0)
		args_fail("%s: cannot open '%s': %s", opt, path, strerror(errno));
	if (fstat(fd, &st) < 0)
		args_fail("%s: cannot stat '%s': %s", opt, path, strerror(errno));
	*size = (uint64_t)st.st_size;
	return fd;
}

/* Bytes of the region that come from the file; the rest stays anonymous zero, which is what a
 * page past the image's end must read as. */
static uint64_t bytes_from_raw(uint64_t raw_size, uint64_t offset, uint64_t len)
{
	if (offset >= raw_size)
		return 0;
	return raw_size - offset < len ? raw_size - offset : len;
}

static void source_mmap(char *region, uint64_t len, const struct options *o)
{
	uint64_t raw_size;
	int fd = open_raw("--source", o->source_raw, &raw_size);
	uint64_t n = bytes_from_raw(raw_size, o->offset, len);
	/* The file's last partial page reads as zeros past EOF; whole pages past it would SIGBUS. */
	n = (n + PAGE - 1) / PAGE * PAGE;
	if (n && mmap(region, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd,
		      (off_t)o->offset) == MAP_FAILED)
		args_fail("--source: cannot map '%s': %s", o->source_raw, strerror(errno));
	close(fd);
}

static void source_eager(char *region, uint64_t len, const struct options *o)
{
	uint64_t raw_size;
	int fd = open_raw("--source", o->source_raw, &raw_size);
	uint64_t n = bytes_from_raw(raw_size, o->offset, len);
	if (lseek(fd, (off_t)o->offset, SEEK_SET) < 0)
		args_fail("--source: cannot seek in '%s': %s", o->source_raw, strerror(errno));
	for (uint64_t at = 0; at < n;) {
		size_t want = n - at < EAGER_BLOCK ? (size_t)(n - at) : EAGER_BLOCK;
		ssize_t got = read(fd, region + at, want);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			args_fail("--source: reading '%s': %s", o->source_raw, strerror(errno));
		if (got == 0)
			break; /* truncated under us: the rest stays zero, and --verify will say so */
		at += (uint64_t)got;
	}
	close(fd);
}

/* Returns the server's session number. */
static long source_uffd(char *region, uint64_t len, const struct options *o)
{
	char err[512];
	int uffd = uffd_create(1, err, sizeof err);
	if (uffd < 0)
		args_fail("%s", err);
	if (o->handshake == FL_HANDSHAKE_FIRECRACKER &&
	    (uffd_api(uffd, 0, err, sizeof err) < 0 ||
	     uffd_register_missing(uffd, (uint64_t)(uintptr_t)region, len, err, sizeof err) < 0))
		args_fail("%s", err);
	struct fl_region r = {
		.addr = (uint64_t)(uintptr_t)region, .size = len, .offset = o->offset, .page_size = PAGE,
	};
	char body[1024];
	int body_len = fl_handshake_body(o->handshake, &r, 1, body, sizeof body);
	long session;
	int refused;
	int sock = fl_handshake_attach(o->socket_path, body, (size_t)body_len, uffd, &session,
				       &refused, err, sizeof err);
	if (sock < 0) {
		if (refused)
			args_fail("server refused: %s", err);
		args_fail("%s", err);
	}
	/* uffd stays open on purpose: were it closed, a dead server's copy would be the last one,
	 * the kernel would drop the registration and faults would silently read zeros. */
	if (fl_watchdog_start(sock, "guest", err, sizeof err) < 0)
		args_fail("%s", err);
	return session;
}

/* ---- workload ---- */

struct workload {
	char *region;
	const uint32_t *list;
	uint32_t count;
	uint32_t threads;
	int write;
	uint32_t *order;      /* actual first-touch order, kept only with several threads */
	uint32_t order_next;  /* atomic cursor into order */
	pthread_barrier_t start;
};

struct worker {
	struct workload *w;
	uint32_t id;
	uint64_t first_ns; /* 0 until this worker's first touch returned */
	pthread_t thread;
};

/* A read loads the page's first word; a write is an atomic add of 0 to it: a write access (the
 * fault reports WRITE) that leaves the snapshot's bytes in place, so --verify still means something. */
static inline void touch(char *region, uint32_t page, int write)
{
	uint64_t *word = (uint64_t *)(region + (uint64_t)page * PAGE);
	if (write)
		__atomic_fetch_add(word, 0, __ATOMIC_RELAXED);
	else
		(void)*(volatile uint64_t *)word;
}

static void run_worker(struct worker *k)
{
	struct workload *w = k->w;
	uint32_t i = k->id;
	if (i >= w->count)
		return;
	touch(w->region, w->list[i], w->write);
	k->first_ns = now_ns();
	if (w->order)
		w->order[__atomic_fetch_add(&w->order_next, 1, __ATOMIC_RELAXED)] = w->list[i];
	for (i += w->threads; i < w->count; i += w->threads) {
		touch(w->region, w->list[i], w->write);
		if (w->order)
			w->order[__atomic_fetch_add(&w->order_next, 1, __ATOMIC_RELAXED)] = w->list[i];
	}
}

static void *worker_main(void *arg)
{
	struct worker *k = arg;
	pthread_barrier_wait(&k->w->start);
	run_worker(k);
	return NULL;
}

/* ---- verification ---- */

struct verify_result {
	uint64_t pages;
	uint64_t mismatches;
	uint32_t shown[MISMATCHES_SHOWN];
};

/* Compares each touched page with the raw image at offset + page*4096 (zeros past its end),
 * reading consecutive pages with one pread. */
static void verify(const char *region, const uint32_t *list, uint32_t count, const char *raw_path,
		   int raw_fd, uint64_t offset, struct verify_result *r)
{
	static char expect[VERIFY_RUN_PAGES * PAGE];
	memset(r, 0, sizeof *r);
	for (uint32_t i = 0; i < count;) {
		uint32_t run = 1;
		while (i + run < count && run < VERIFY_RUN_PAGES && list[i + run] == list[i] + run)
			run++;
		size_t want = (size_t)run * PAGE;
		size_t got = 0;
		while (got < want) {
			ssize_t n = pread(raw_fd, expect + got, want - got,
					  (off_t)(offset + (uint64_t)list[i] * PAGE + got));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				args_fail("--verify: reading '%s': %s", raw_path, strerror(errno));
			if (n == 0)
				break;
			got += (size_t)n;
		}
		memset(expect + got, 0, want - got);
		for (uint32_t k = 0; k < run; k++) {
			uint32_t page = list[i + k];
			if (memcmp(region + (uint64_t)page * PAGE, expect + (size_t)k * PAGE, PAGE) != 0) {
				if (r->mismatches < MISMATCHES_SHOWN)
					r->shown[r->mismatches] = page;
				r->mismatches++;
			}
		}
		r->pages += run;
		i += run;
	}
}

static void report_mismatches(const struct verify_result *r, const char *raw_path)
{
	char pages[MISMATCHES_SHOWN * 12 + 8] = "";
	size_t at = 0;
	for (uint64_t i = 0; i < r->mismatches && i < MISMATCHES_SHOWN; i++)
		at += (size_t)snprintf(pages + at, sizeof pages - at, "%s%u", i ? ", " : "", r->shown[i]);
	fprintf(stderr, "guest: verify: %llu of %llu touched pages differ from '%s' (first: %s%s)\n",
		(unsigned long long)r->mismatches, (unsigned long long)r->pages, raw_path, pages,
		r->mismatches > MISMATCHES_SHOWN ? ", ..." : "");
}

static void write_touched(const char *path, int fd, const uint32_t *list, uint32_t count)
{
	static uint8_t buf[64 * 1024];
	size_t at = 0;
	for (uint32_t i = 0; i <= count; i++) {
		if (at == sizeof buf || (i == count && at)) {
			for (size_t done = 0; done < at;) {
				ssize_t n = write(fd, buf + done, at - done);
				if (n < 0 && errno == EINTR)
					continue;
				if (n < 0)
					args_fail("--touched-out: writing '%s': %s", path, strerror(errno));
				done += (size_t)n;
			}
			at = 0;
		}
		if (i == count)
			break;
		uint32_t v = list[i];
		buf[at++] = (uint8_t)v;
		buf[at++] = (uint8_t)(v >> 8);
		buf[at++] = (uint8_t)(v >> 16);
		buf[at++] = (uint8_t)(v >> 24);
	}
	if (close(fd) < 0)
		args_fail("--touched-out: writing '%s': %s", path, strerror(errno));
}

/* ---- own costs, so a benchmark can account for every process involved ---- */

struct usage {
	uint64_t read_bytes; /* /proc/self/io: bytes this process made storage read */
	uint64_t rchar;      /* /proc/self/io: bytes passed through read-like calls */
	uint64_t minflt, majflt, cpu_ns, maxrss_kb;
};

static void sample_usage(struct usage *u)
{
	struct rusage ru;
	char line[128];
	memset(u, 0, sizeof *u);
	FILE *f = fopen("/proc/self/io", "r");
	if (f) {
		while (fgets(line, sizeof line, f)) {
			unsigned long long v;
			if (sscanf(line, "read_bytes: %llu", &v) == 1)
				u->read_bytes = v;
			else if (sscanf(line, "rchar: %llu", &v) == 1)
				u->rchar = v;
		}
		fclose(f);
	}
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		u->minflt = (uint64_t)ru.ru_minflt;
		u->majflt = (uint64_t)ru.ru_majflt;
		u->cpu_ns = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
			    (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
		u->maxrss_kb = (uint64_t)ru.ru_maxrss;
	}
}

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int main(int argc, char **argv)
{
	uint64_t main_ns = now_ns();
	struct options o;
	parse_options(&o, argc, argv);

	uint64_t len = o.mib << 20;
	uint32_t pages = (uint32_t)(len / PAGE);
	uint32_t count;
	uint32_t *list = build_pages_list(&o, pages, &count);

	/* Open outputs and the reference now, so a typo fails before any work is timed. */
	int verify_fd = -1, touched_fd = -1;
	if (o.verify_raw) {
		verify_fd = open(o.verify_raw, O_RDONLY | O_CLOEXEC);
		if (verify_fd < 0)
			args_fail("--verify: cannot open '%s': %s", o.verify_raw, strerror(errno));
	}
	if (o.touched_out) {
		touched_fd = open(o.touched_out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (touched_fd < 0)
			args_fail("--touched-out: cannot create '%s': %s", o.touched_out, strerror(errno));
	}

	struct workload w = {
		.list = list, .count = count, .threads = (uint32_t)o.threads, .write = o.write,
	};
	struct worker *workers = calloc(o.threads, sizeof *workers);
	if (!workers)
		args_fail("out of memory");
	if (o.touched_out && o.threads > 1)
		w.order = alloc_pages_list(count);
	/* Worker threads exist before the clock starts and wait on a barrier, so neither resume
	 * nor the workload pays for creating them. */
	if (o.threads > 1) {
		pthread_barrier_init(&w.start, NULL, (unsigned)o.threads + 1);
		for (uint32_t i = 0; i < o.threads; i++) {
			workers[i].w = &w;
			workers[i].id = i;
			int rc = pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
			if (rc)
				args_fail("cannot start thread %u: %s", i, strerror(rc));
		}
	} else {
		workers[0].w = &w;
	}

	/* Time zero: everything above is preparation, reported apart as setup_ns. */
	struct usage u0, u1;
	sample_usage(&u0);
	uint64_t t0 = now_ns();
	char *region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		args_fail("cannot map %llu MiB: %s", (unsigned long long)o.mib, strerror(errno));
	w.region = region;
	long session = -1;
	switch (o.source) {
	case SOURCE_UFFD:
		session = source_uffd(region, len, &o);
		break;
	case SOURCE_MMAP:
		source_mmap(region, len, &o);
		break;
	case SOURCE_EAGER:
		source_eager(region, len, &o);
		break;
	}
	uint64_t resume_ns = now_ns() - t0;

	if (o.threads > 1) {
		pthread_barrier_wait(&w.start);
		for (uint32_t i = 0; i < o.threads; i++)
			pthread_join(workers[i].thread, NULL);
	} else {
		run_worker(&workers[0]);
	}
	uint64_t total_ns = now_ns() - t0;
	/* Before --verify, whose own reads of the image must not count. */
	sample_usage(&u1);

	uint64_t first_ns = 0;
	for (uint32_t i = 0; i < o.threads; i++) {
		if (workers[i].first_ns && (!first_ns || workers[i].first_ns < first_ns))
			first_ns = workers[i].first_ns;
	}

	struct verify_result vr = { 0 };
	uint64_t verify_ns = 0;
	if (o.verify_raw) {
		uint64_t v0 = now_ns();
		verify(region, list, count, o.verify_raw, verify_fd, o.offset, &vr);
		verify_ns = now_ns() - v0;
		close(verify_fd);
		if (vr.mismatches)
			report_mismatches(&vr, o.verify_raw);
	}
	if (o.touched_out)
		write_touched(o.touched_out, touched_fd, w.order ? w.order : list, count);

	static const char *source_names[] = { "uffd", "mmap", "eager" };
	char workload_json[512], first_json[32], verify_json[32], session_json[32], handshake_json[32];
	json_escape(workload_json, sizeof workload_json, o.workload_text);
	snprintf(first_json, sizeof first_json, first_ns ? "%llu" : "null",
		 (unsigned long long)(first_ns - t0));
	snprintf(verify_json, sizeof verify_json, o.verify_raw ? "%llu" : "null",
		 (unsigned long long)verify_ns);
	snprintf(session_json, sizeof session_json, session >= 0 ? "%ld" : "null", session);
	snprintf(handshake_json, sizeof handshake_json, o.source != SOURCE_UFFD ? "null"
			 : o.handshake == FL_HANDSHAKE_FAULTLINE ? "\"faultline\"" : "\"firecracker\"");
	printf("{\"ok\":%s,\"source\":\"%s\",\"handshake\":%s,\"session\":%s,\"mib\":%llu,"
	       "\"pages\":%u,\"workload\":\"%s\",\"seed\":%llu,\"write\":%s,\"pages_touched\":%u,"
	       "\"threads\":%llu,\"setup_ns\":%llu,\"resume_ns\":%llu,\"first_access_ns\":%s,"
	       "\"workload_ns\":%llu,\"total_ns\":%llu,\"verify_ns\":%s,\"verified_pages\":%llu,"
	       "\"mismatches\":%llu,\"io_read_bytes\":%llu,\"io_rchar\":%llu,\"minflt\":%llu,"
	       "\"majflt\":%llu,\"cpu_ns\":%llu,\"maxrss_kb\":%llu}\n",
	       vr.mismatches ? "false" : "true", source_names[o.source], handshake_json, session_json,
	       (unsigned long long)o.mib, pages, workload_json, (unsigned long long)o.seed,
	       o.write ? "true" : "false", count, (unsigned long long)o.threads,
	       (unsigned long long)(t0 - main_ns), (unsigned long long)resume_ns, first_json,
	       (unsigned long long)(total_ns - resume_ns), (unsigned long long)total_ns, verify_json,
	       (unsigned long long)vr.pages, (unsigned long long)vr.mismatches,
	       (unsigned long long)(u1.read_bytes - u0.read_bytes),
	       (unsigned long long)(u1.rchar - u0.rchar), (unsigned long long)(u1.minflt - u0.minflt),
	       (unsigned long long)(u1.majflt - u0.majflt), (unsigned long long)(u1.cpu_ns - u0.cpu_ns),
	       (unsigned long long)u1.maxrss_kb);
	/* The line goes out before --hold-ms so a test can read the result, then kill the server. */
	fflush(stdout);
	if (o.hold_ms)
		sleep_ms(o.hold_ms);
	return vr.mismatches ? 1 : 0;
}
