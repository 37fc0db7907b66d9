/* The test guest: N MiB of "RAM" filled by a page server (uffd), a file mapping or an eager read,
 * touched by a workload, checked against the raw image; one JSON line out. Its CLI is a contract. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
#define CACHE_ALIGN (2u << 20) /* a cache-mapped region starts on a huge-page boundary */

enum source_kind { SOURCE_UFFD, SOURCE_MMAP, SOURCE_EAGER };
enum workload_kind { WORKLOAD_SEQUENTIAL, WORKLOAD_RANDOM, WORKLOAD_PAGES, WORKLOAD_NONE };

/* Pages [first, first+count) of the region, for the actions run after the workload. */
struct page_range {
	uint32_t first, count;
};

struct options {
	const char *socket_path;
	uint64_t mib;
	enum fl_handshake handshake;
	enum fl_map map;
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
	int same_pages;
	uint64_t pace_us;
	int verify_each;
	struct page_range write_pattern, discard, unmap, move; /* count 0: not asked for */
	int fork;
	/* Test abilities (see usage): */
	int no_watchdog;
	int no_remove_event;
	int hole_registered;
	uint32_t grow;
};

/* The guest's uffd (uffd source), kept for --hole-registered. */
static int guest_uffd = -1;

static const char usage[] =
	"usage: guest --socket PATH --mib N [--handshake faultline|firecracker] [--offset BYTES]\n"
	"             [--source uffd|mmap:RAW|eager:RAW] [--map anonymous|cache]\n"
	"             [--workload sequential|sequential:FRACTION|random:FRACTION|pages:FILE|none]\n"
	"             [--seed N] [--threads N] [--write] [--verify RAW] [--touched-out FILE]\n"
	"             [--hold-ms N] [--same-pages] [--pace-us N] [--verify-each]\n"
	"             [--write-pattern FIRST:COUNT] [--discard FIRST:COUNT] [--unmap FIRST:COUNT]\n"
	"             [--mremap FIRST:COUNT] [--fork] [--grow PAGES]\n"
	"             [--hole-registered] [--no-watchdog] [--no-remove-event]\n"
	"\n"
	"  --source      uffd (default): a page server fills the region on faults; mmap:RAW: MAP_PRIVATE\n"
	"                of RAW over it (kernel demand paging); eager:RAW: read() all of RAW first\n"
	"  --offset      byte offset of the region in RAW / the snapshot (multiple of 4096; K/M/G ok)\n"
	"  --map         with --source uffd and the faultline handshake: anonymous (default) or cache:\n"
	"                the region is 2 MiB-aligned and asks for the server's decoded cache, mapped\n"
	"                MAP_PRIVATE over it (\"map\" in the output says what the server granted)\n"
	"  --workload    each touch reads the page's first word (--write: atomic add of 0, a write\n"
	"                that keeps the bytes). sequential[:F]: the first round(F*pages) in order;\n"
	"                random:F: round(F*pages) distinct pages, partial Fisher-Yates with splitmix64\n"
	"                seeded by --seed (j = i + next() % (pages - i)); pages:FILE: one index a line,\n"
	"                '#' comments, repeats dropped; none\n"
	"  --threads     the list is dealt round-robin to N threads released together\n"
	"  --verify      compare touched pages with RAW at offset + page*4096 (zeros past its end)\n"
	"  --touched-out touched pages as little-endian u32, in first-touch order\n"
	"  --hold-ms     after printing the result, stay alive N ms (the watchdog still runs)\n"
	"  --same-pages  with --threads N, every thread touches every listed page (thread i starts\n"
	"                at i*count/N and wraps), so threads fault on the same pages at once\n"
	"  --pace-us N   sleep N us after each touch (a long, mostly idle workload)\n"
	"  --verify-each with --verify: check each page right after touching it; a mismatch exits 1\n"
	"                at once ('guest: verify: page N differs ...')\n"
	"\n"
	"Actions after the workload and its --verify, in this order (FIRST:COUNT are region pages):\n"
	"  --write-pattern  write every byte of the pages (byte i of page p: (p * 131 + i) & 255): they\n"
	"                must read as that from then on, privately (the image and others' pages keep\n"
	"                theirs)\n"
	"  --discard     MADV_DONTNEED the pages: they must read as zeros from then on (as the image's\n"
	"                pages where the region is a private file mapping: --source mmap, map cache)\n"
	"  --unmap       munmap the pages, then map fresh anonymous memory there (reads as zeros)\n"
	"  --mremap      move the pages to a new address (mremap MAYMOVE|FIXED): they must read as\n"
	"                the snapshot's pages of their original offsets there\n"
	"  --fork        fork: the child checks every page (below), exits, then the parent does\n"
	"  --grow PAGES  mremap the region PAGES pages larger (it may move): the new pages are\n"
	"                outside the snapshot's regions and must read as zeros\n"
	"With any action and --verify, every page of the region is then read where it now lives and\n"
	"compared with what it must hold (after_pages, after_mismatches; child_* for --fork).\n"
	"\n"
	"Test abilities, to check what the server does rather than what the kernel does anyway:\n"
	"  --hole-registered  with --unmap: register the fresh mapping in the hole with the guest's\n"
	"                uffd, so its faults reach the server, which must answer zeros (a snapshot\n"
	"                page there would mean it ignored UFFD_EVENT_UNMAP)\n"
	"  --no-watchdog don't watch the socket: a page the server neither serves nor poisons then\n"
	"                hangs its thread (the test's timeout says so) instead of exit 3\n"
	"  --no-remove-event  Firecracker form: enable no event on the uffd (not even EVENT_REMOVE),\n"
	"                so the server is not told of discarded pages\n"
	"\n"
	"Prints one JSON line (map: what backs the region, \"anonymous\" or \"cache\", null without a\n"
	"server; folio_bytes: the cache's fill unit, or null). Times are ns from time zero, taken\n"
	"after argument parsing and workload preparation (setup_ns) and just before the region is\n"
	"mapped (t0_ns: time zero on CLOCK_MONOTONIC, to line several guests up): resume_ns (region ready),\n"
	"first_access_ns (null if nothing touched), total_ns, workload_ns = total - resume; verify_ns\n"
	"apart; io_*, minflt, majflt, cpu_ns cover resume + workload. Exit: 0 ok, 1 verify mismatch,\n"
	"2 bad arguments or setup failure (incl. 'guest: server refused: ...'), 3 the page server\n"
	"went away (watchdog: 'guest: page server closed the connection; exiting', with the server's\n"
	"reason in parentheses when it gave one), 4 a page was poisoned (SIGBUS: 'guest: SIGBUS at\n"
	"page N ...'), 5 a forked child failed.\n";

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

static struct page_range parse_range(const char *opt, const char *text)
{
	const char *colon = strchr(text, ':');
	char first[32];
	if (!colon || (size_t)(colon - text) >= sizeof first)
		args_fail("%s: expected FIRST:COUNT (region pages), got '%s'", opt, text);
	memcpy(first, text, (size_t)(colon - text));
	first[colon - text] = '\0';
	struct page_range r;
	r.first = (uint32_t)args_u64(opt, first, 0, UINT32_MAX, 0);
	r.count = (uint32_t)args_u64(opt, colon + 1, 1, UINT32_MAX, 0);
	return r;
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
		} else if (args_is(&a, "--map")) {
			const char *v = args_value(&a);
			if (strcmp(v, "anonymous") == 0)
				o->map = FL_MAP_ANONYMOUS;
			else if (strcmp(v, "cache") == 0)
				o->map = FL_MAP_CACHE;
			else
				args_fail("--map: expected anonymous or cache, got '%s'", v);
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
		} else if (args_is(&a, "--same-pages")) {
			args_no_value(&a);
			o->same_pages = 1;
		} else if (args_is(&a, "--pace-us")) {
			o->pace_us = args_u64("--pace-us", args_value(&a), 0, 10000000, 0);
		} else if (args_is(&a, "--verify-each")) {
			args_no_value(&a);
			o->verify_each = 1;
		} else if (args_is(&a, "--write-pattern")) {
			o->write_pattern = parse_range("--write-pattern", args_value(&a));
		} else if (args_is(&a, "--discard")) {
			o->discard = parse_range("--discard", args_value(&a));
		} else if (args_is(&a, "--unmap")) {
			o->unmap = parse_range("--unmap", args_value(&a));
		} else if (args_is(&a, "--mremap")) {
			o->move = parse_range("--mremap", args_value(&a));
		} else if (args_is(&a, "--fork")) {
			args_no_value(&a);
			o->fork = 1;
		} else if (args_is(&a, "--grow")) {
			o->grow = (uint32_t)args_u64("--grow", args_value(&a), 1, MAX_MIB * (1u << 20) / PAGE, 0);
		} else if (args_is(&a, "--hole-registered")) {
			args_no_value(&a);
			o->hole_registered = 1;
		} else if (args_is(&a, "--no-watchdog")) {
			args_no_value(&a);
			o->no_watchdog = 1;
		} else if (args_is(&a, "--no-remove-event")) {
			args_no_value(&a);
			o->no_remove_event = 1;
		} else {
			args_fail("unknown option '%s' (see --help)", a.name);
		}
	}
	if (!o->mib)
		args_fail("--mib: required");
	if (o->source == SOURCE_UFFD && !o->socket_path)
		args_fail("--socket: required with --source uffd");
	if (o->verify_each && !o->verify_raw)
		args_fail("--verify-each: needs --verify RAW");
	if (o->hole_registered && (!o->unmap.count || o->source != SOURCE_UFFD))
		args_fail("--hole-registered: needs --unmap and the uffd source");
	if (o->no_remove_event && o->handshake != FL_HANDSHAKE_FIRECRACKER)
		args_fail("--no-remove-event: the Firecracker form only (in the faultline form the server picks the events)");
	if (o->grow && (o->unmap.count || o->move.count))
		args_fail("--grow: not with --unmap or --mremap (the region is grown whole)");
	if (o->map == FL_MAP_CACHE && (o->source != SOURCE_UFFD || o->handshake != FL_HANDSHAKE_FAULTLINE))
		args_fail("--map cache: needs --source uffd and --handshake faultline");
	uint64_t pages = (o->mib << 20) / PAGE;
	if (o->unmap.count && o->move.count && o->unmap.first < o->move.first + o->move.count &&
	    o->move.first < o->unmap.first + o->unmap.count)
		args_fail("--unmap and --mremap: the ranges overlap (the hole is another mapping then)");
	const struct page_range *ranges[] = { &o->write_pattern, &o->discard, &o->unmap, &o->move };
	const char *names[] = { "--write-pattern", "--discard", "--unmap", "--mremap" };
	for (int i = 0; i < 4; i++) {
		if (ranges[i]->count && (uint64_t)ranges[i]->first + ranges[i]->count > pages)
			args_fail("%s: pages %u..%llu are past the region's %llu pages", names[i], ranges[i]->first,
				  (unsigned long long)ranges[i]->first + ranges[i]->count - 1, (unsigned long long)pages);
	}
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

/* Connects to the page server; returns what the attach got (session, granted map). */
static struct fl_attach source_uffd(char *region, uint64_t len, const struct options *o)
{
	char err[512];
	int uffd = uffd_create(1, err, sizeof err);
	if (uffd < 0)
		args_fail("%s", err);
	/* As Firecracker does: EVENT_REMOVE (for its balloon), nothing else. */
	if (o->handshake == FL_HANDSHAKE_FIRECRACKER &&
	    (uffd_api(uffd, o->no_remove_event ? 0 : UFFD_FEATURE_EVENT_REMOVE, err, sizeof err) < 0 ||
	     uffd_register_missing(uffd, (uint64_t)(uintptr_t)region, len, err, sizeof err) < 0))
		args_fail("%s", err);
	struct fl_region r = {
		.addr = (uint64_t)(uintptr_t)region, .size = len, .offset = o->offset, .page_size = PAGE,
	};
	char body[1024];
	int body_len = fl_handshake_body(o->handshake, o->map, &r, 1, body, sizeof body);
	struct fl_attach a = { .map = o->map, .regions = &r, .count = 1 };
	int sock = fl_handshake_attach(o->socket_path, body, (size_t)body_len, uffd, &a, err, sizeof err);
	if (sock < 0) {
		if (a.refused)
			args_fail("server refused: %s", err);
		args_fail("%s", err);
	}
	/* uffd stays open on purpose: were it closed, a dead server's copy would be the last one,
	 * the kernel would drop the registration and faults would silently read zeros. */
	guest_uffd = uffd;
	if (!o->no_watchdog && fl_watchdog_start(sock, "guest", err, sizeof err) < 0)
		args_fail("%s", err);
	a.regions = NULL; /* r is gone with this frame */
	return a;
}

/* The region: anywhere for anonymous memory; for a cache-mapped one, on a 2 MiB boundary (a
 * reservation one huge page larger, trimmed), so huge folios of the cache can map whole. */
static char *map_region(uint64_t len, const struct options *o)
{
	if (o->map != FL_MAP_CACHE)
		return mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *reserved = mmap(NULL, len + CACHE_ALIGN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (reserved == MAP_FAILED)
		return MAP_FAILED;
	char *aligned = (char *)(((uintptr_t)reserved + CACHE_ALIGN - 1) & ~(uintptr_t)(CACHE_ALIGN - 1));
	if (aligned > reserved)
		munmap(reserved, (size_t)(aligned - reserved));
	munmap(aligned + len, (size_t)(reserved + len + CACHE_ALIGN - (aligned + len)));
	return mmap(aligned, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
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
	int same_pages;
	uint64_t pace_us;
	int check_fd;         /* --verify-each: the raw image, else -1 */
	const char *check_path;
	uint64_t offset;
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

static void sleep_us(uint64_t us);
static void read_expected(int fd, const char *path, uint64_t at, char *into, size_t len);

/* --verify-each: the page just touched must already be the image's page. */
static void check_now(const struct workload *w, uint32_t page)
{
	char expect[PAGE];
	read_expected(w->check_fd, w->check_path, w->offset + (uint64_t)page * PAGE, expect, PAGE);
	if (memcmp(w->region + (uint64_t)page * PAGE, expect, PAGE) != 0) {
		fprintf(stderr, "guest: verify: page %u differs from '%s' right after it was served\n", page,
			w->check_path);
		_exit(1);
	}
}

static void touch_one(struct workload *w, uint32_t page)
{
	touch(w->region, page, w->write);
	if (w->check_fd >= 0)
		check_now(w, page);
	if (w->pace_us)
		sleep_us(w->pace_us);
}

static void run_worker(struct worker *k)
{
	struct workload *w = k->w;
	uint32_t i = k->id;
	if (w->same_pages) {
		/* Every thread walks the whole list from its own starting point. */
		uint32_t start = (uint32_t)((uint64_t)k->id * w->count / w->threads);
		for (uint32_t n = 0; n < w->count; n++) {
			touch_one(w, w->list[(start + n) % w->count]);
			if (n == 0)
				k->first_ns = now_ns();
		}
		return;
	}
	if (i >= w->count)
		return;
	touch_one(w, w->list[i]);
	k->first_ns = now_ns();
	if (w->order)
		w->order[__atomic_fetch_add(&w->order_next, 1, __ATOMIC_RELAXED)] = w->list[i];
	for (i += w->threads; i < w->count; i += w->threads) {
		touch_one(w, w->list[i]);
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

/* The image's bytes at `at`, zeros past its end. */
static void read_expected(int fd, const char *path, uint64_t at, char *into, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, into + got, len - got, (off_t)(at + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			args_fail("--verify: reading '%s': %s", path, strerror(errno));
		if (n == 0)
			break;
		got += (size_t)n;
	}
	memset(into + got, 0, len - got);
}

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
		read_expected(raw_fd, raw_path, offset + (uint64_t)list[i] * PAGE, expect, (size_t)run * PAGE);
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

/* ---- actions after the workload, and the check of every page that follows them ---- */

enum expectation { EXPECT_IMAGE, EXPECT_ZERO, EXPECT_PATTERN };

/* --write-pattern's bytes for page p. */
static void fill_pattern(char *into, uint32_t page)
{
	for (uint32_t i = 0; i < PAGE; i++)
		into[i] = (char)((page * 131u + i) & 255u);
}

/* Where each region page lives now and what it must read as. */
struct layout {
	char *region;
	uint32_t pages;
	int file_backed; /* a private file mapping: a discarded page reads as the file's again */
	char *moved; /* new address of the --mremap pages, or NULL */
	struct page_range move;
	uint8_t *expect; /* per page: enum expectation */
};

static char *page_address(const struct layout *l, uint32_t page)
{
	if (l->moved && page >= l->move.first && page - l->move.first < l->move.count)
		return l->moved + (uint64_t)(page - l->move.first) * PAGE;
	return l->region + (uint64_t)page * PAGE;
}

static void run_actions(const struct options *o, struct layout *l)
{
	for (uint32_t i = 0; i < o->write_pattern.count; i++) {
		uint32_t p = o->write_pattern.first + i;
		fill_pattern(page_address(l, p), p);
		l->expect[p] = EXPECT_PATTERN;
	}
	if (o->discard.count) {
		char *at = page_address(l, o->discard.first);
		if (madvise(at, (size_t)o->discard.count * PAGE, MADV_DONTNEED) < 0)
			args_fail("--discard: madvise(MADV_DONTNEED): %s", strerror(errno));
		memset(l->expect + o->discard.first, l->file_backed ? EXPECT_IMAGE : EXPECT_ZERO, o->discard.count);
	}
	if (o->unmap.count) {
		char *at = page_address(l, o->unmap.first);
		size_t bytes = (size_t)o->unmap.count * PAGE;
		if (munmap(at, bytes) < 0)
			args_fail("--unmap: munmap: %s", strerror(errno));
		/* Fresh memory in the hole is not the snapshot's: it reads zeros. Registered with the
		 * uffd (--hole-registered), its faults go to the server, which must know the range
		 * left the snapshot's regions (UFFD_EVENT_UNMAP) and answer zeros too. */
		if (mmap(at, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			 -1, 0) != at)
			args_fail("--unmap: mapping the hole again: %s", strerror(errno));
		char err[256];
		if (o->hole_registered &&
		    uffd_register_missing(guest_uffd, (uint64_t)(uintptr_t)at, bytes, err, sizeof err) < 0)
			args_fail("--hole-registered: %s", err);
		memset(l->expect + o->unmap.first, EXPECT_ZERO, o->unmap.count);
	}
	if (o->move.count) {
		size_t bytes = (size_t)o->move.count * PAGE;
		/* A place of our choosing, so the move really changes the address. */
		char *to = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (to == MAP_FAILED)
			args_fail("--mremap: reserving %zu bytes: %s", bytes, strerror(errno));
		if (mremap(page_address(l, o->move.first), bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, to) != to)
			args_fail("--mremap: %s", strerror(errno));
		l->moved = to;
		l->move = o->move;
	}
	if (o->grow) {
		/* The grown tail is past every region the server was given: zeros, as anonymous
		 * memory reads (it stays registered: it extends the registered mapping). */
		size_t old_len = (size_t)l->pages * PAGE, new_len = old_len + (size_t)o->grow * PAGE;
		char *at = mremap(l->region, old_len, new_len, MREMAP_MAYMOVE);
		if (at == MAP_FAILED)
			args_fail("--grow: mremap: %s", strerror(errno));
		l->region = at;
		memset(l->expect + l->pages, EXPECT_ZERO, o->grow);
		l->pages += o->grow;
	}
}

/* Reads every page where it lives now and compares it with what it must hold; returns the
 * number that differ (first one in *first_bad). */
static uint64_t check_layout(const struct layout *l, int raw_fd, const char *raw_path, uint64_t offset,
			     uint32_t *first_bad)
{
	static char expect[PAGE];
	uint64_t bad = 0;
	for (uint32_t p = 0; p < l->pages; p++) {
		if (l->expect[p] == EXPECT_ZERO)
			memset(expect, 0, PAGE);
		else if (l->expect[p] == EXPECT_PATTERN)
			fill_pattern(expect, p);
		else
			read_expected(raw_fd, raw_path, offset + (uint64_t)p * PAGE, expect, PAGE);
		if (memcmp(page_address(l, p), expect, PAGE) != 0) {
			if (!bad)
				*first_bad = p;
			bad++;
		}
	}
	return bad;
}

struct child_result {
	int exit_code; /* -1 when killed by a signal */
	int signal;
	long long mismatches; /* -1 when the child did not say */
};

/* --fork: the child checks every page and reports through a pipe. */
static void fork_and_check(const struct layout *l, int raw_fd, const char *raw_path, uint64_t offset,
			   struct child_result *r)
{
	int fds[2];
	if (pipe(fds) < 0)
		args_fail("--fork: pipe: %s", strerror(errno));
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		args_fail("--fork: %s", strerror(errno));
	if (pid == 0) {
		close(fds[0]);
		uint32_t first_bad = 0;
		uint64_t bad = check_layout(l, raw_fd, raw_path, offset, &first_bad);
		if (bad)
			fprintf(stderr, "guest: fork child: %llu of %u pages differ (first: %u)\n",
				(unsigned long long)bad, l->pages, first_bad);
		ssize_t unused = write(fds[1], &bad, sizeof bad);
		(void)unused;
		_exit(bad ? 1 : 0);
	}
	close(fds[1]);
	uint64_t bad;
	ssize_t n;
	do
		n = read(fds[0], &bad, sizeof bad);
	while (n < 0 && errno == EINTR);
	close(fds[0]);
	r->mismatches = n == (ssize_t)sizeof bad ? (long long)bad : -1;
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	r->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	r->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

/* ---- poisoned pages ---- */

static char *sigbus_region;
static uint64_t sigbus_len;

static size_t put_text(char *at, const char *s)
{
	size_t n = strlen(s);
	memcpy(at, s, n);
	return n;
}

static size_t put_u64(char *at, uint64_t v, int base)
{
	char tmp[24];
	size_t n = 0;
	do
		tmp[n++] = "0123456789abcdef"[v % (uint64_t)base];
	while ((v /= (uint64_t)base) != 0);
	for (size_t i = 0; i < n; i++)
		at[i] = tmp[n - 1 - i];
	return n;
}

/* A page the server poisoned (it could not verify the snapshot's data for it) raises SIGBUS
 * on access: say which, in one line, with async-signal-safe calls only. */
static void on_sigbus(int sig, siginfo_t *si, void *unused)
{
	(void)sig;
	(void)unused;
	char msg[200];
	size_t n = put_text(msg, "guest: SIGBUS at ");
	uintptr_t a = (uintptr_t)si->si_addr, base = (uintptr_t)sigbus_region;
	if (a >= base && a - base < sigbus_len) {
		n += put_text(msg + n, "page ");
		n += put_u64(msg + n, (a - base) / PAGE, 10);
	} else {
		n += put_text(msg + n, "address 0x");
		n += put_u64(msg + n, a, 16);
	}
	n += put_text(msg + n, ": the page server poisoned it rather than serve a page it could not verify\n");
	ssize_t unused_n = write(STDERR_FILENO, msg, n);
	(void)unused_n;
	_exit(4);
}

static void catch_sigbus(char *region, uint64_t len)
{
	sigbus_region = region;
	sigbus_len = len;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
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

static void sleep_us(uint64_t us)
{
	struct timespec ts = { .tv_sec = (time_t)(us / 1000000), .tv_nsec = (long)(us % 1000000) * 1000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void sleep_ms(uint64_t ms)
{
	sleep_us(ms * 1000);
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
		.same_pages = o.same_pages && o.threads > 1, .pace_us = o.pace_us,
		.check_fd = o.verify_each ? verify_fd : -1, .check_path = o.verify_raw, .offset = o.offset,
	};
	struct worker *workers = calloc(o.threads, sizeof *workers);
	if (!workers)
		args_fail("out of memory");
	/* With --same-pages a page is touched by every thread: the list's order is reported. */
	if (o.touched_out && o.threads > 1 && !w.same_pages)
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
	char *region = map_region(len, &o);
	if (region == MAP_FAILED)
		args_fail("cannot map %llu MiB: %s", (unsigned long long)o.mib, strerror(errno));
	w.region = region;
	if (o.source == SOURCE_UFFD)
		catch_sigbus(region, len);
	struct fl_attach attach = { .session = -1 };
	switch (o.source) {
	case SOURCE_UFFD:
		attach = source_uffd(region, len, &o);
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
		if (vr.mismatches)
			report_mismatches(&vr, o.verify_raw);
	}
	if (o.touched_out)
		write_touched(o.touched_out, touched_fd, w.order ? w.order : list, count);

	int acted = o.write_pattern.count || o.discard.count || o.unmap.count || o.move.count || o.fork || o.grow;
	char after_json[256] = "";
	uint64_t after_bad = 0;
	struct child_result child = { 0, 0, 0 };
	if (acted) {
		struct layout l = {
			.region = region, .pages = pages, .expect = calloc((size_t)pages + o.grow, 1),
			.file_backed = o.source == SOURCE_MMAP || (o.source == SOURCE_UFFD && attach.granted == FL_MAP_CACHE),
		};
		if (!l.expect)
			args_fail("out of memory");
		run_actions(&o, &l);
		if (o.fork && o.verify_raw)
			fork_and_check(&l, verify_fd, o.verify_raw, o.offset, &child);
		uint32_t first_bad = 0;
		if (o.verify_raw) {
			after_bad = check_layout(&l, verify_fd, o.verify_raw, o.offset, &first_bad);
			if (after_bad)
				fprintf(stderr, "guest: after the actions: %llu of %u pages differ from what they must hold "
					"(first: %u)\n", (unsigned long long)after_bad, l.pages, first_bad);
		}
		char child_json[128] = "";
		if (o.fork && o.verify_raw)
			snprintf(child_json, sizeof child_json,
				 ",\"child_exit\":%d,\"child_signal\":%d,\"child_mismatches\":%lld",
				 child.exit_code, child.signal, child.mismatches);
		snprintf(after_json, sizeof after_json, o.verify_raw ? ",\"after_pages\":%u,\"after_mismatches\":%llu%s" : "",
			 l.pages, (unsigned long long)after_bad, child_json);
	}
	int child_failed = o.fork && o.verify_raw && (child.exit_code != 0 || child.signal != 0);
	if (verify_fd >= 0)
		close(verify_fd);

	static const char *source_names[] = { "uffd", "mmap", "eager" };
	char workload_json[512], first_json[32], verify_json[32], session_json[32], handshake_json[32];
	char map_json[32], folio_json[32];
	json_escape(workload_json, sizeof workload_json, o.workload_text);
	snprintf(first_json, sizeof first_json, first_ns ? "%llu" : "null",
		 (unsigned long long)(first_ns - t0));
	snprintf(verify_json, sizeof verify_json, o.verify_raw ? "%llu" : "null",
		 (unsigned long long)verify_ns);
	snprintf(session_json, sizeof session_json, attach.session >= 0 ? "%ld" : "null", attach.session);
	snprintf(map_json, sizeof map_json, o.source != SOURCE_UFFD ? "null"
			 : attach.granted == FL_MAP_CACHE ? "\"cache\"" : "\"anonymous\"");
	snprintf(folio_json, sizeof folio_json, attach.granted == FL_MAP_CACHE ? "%llu" : "null",
		 (unsigned long long)attach.folio_bytes);
	snprintf(handshake_json, sizeof handshake_json, o.source != SOURCE_UFFD ? "null"
			 : o.handshake == FL_HANDSHAKE_FAULTLINE ? "\"faultline\"" : "\"firecracker\"");
	printf("{\"ok\":%s,\"source\":\"%s\",\"handshake\":%s,\"session\":%s,\"map\":%s,\"folio_bytes\":%s,\"mib\":%llu,"
	       "\"pages\":%u,\"workload\":\"%s\",\"seed\":%llu,\"write\":%s,\"pages_touched\":%u,"
	       "\"threads\":%llu,\"t0_ns\":%llu,\"setup_ns\":%llu,\"resume_ns\":%llu,\"first_access_ns\":%s,"
	       "\"workload_ns\":%llu,\"total_ns\":%llu,\"verify_ns\":%s,\"verified_pages\":%llu,"
	       "\"mismatches\":%llu,\"io_read_bytes\":%llu,\"io_rchar\":%llu,\"minflt\":%llu,"
	       "\"majflt\":%llu,\"cpu_ns\":%llu,\"maxrss_kb\":%llu%s}\n",
	       vr.mismatches || after_bad || child_failed ? "false" : "true", source_names[o.source], handshake_json, session_json,
	       map_json, folio_json,
	       (unsigned long long)o.mib, pages, workload_json, (unsigned long long)o.seed,
	       o.write ? "true" : "false", count, (unsigned long long)o.threads, (unsigned long long)t0,
	       (unsigned long long)(t0 - main_ns), (unsigned long long)resume_ns, first_json,
	       (unsigned long long)(total_ns - resume_ns), (unsigned long long)total_ns, verify_json,
	       (unsigned long long)vr.pages, (unsigned long long)vr.mismatches,
	       (unsigned long long)(u1.read_bytes - u0.read_bytes),
	       (unsigned long long)(u1.rchar - u0.rchar), (unsigned long long)(u1.minflt - u0.minflt),
	       (unsigned long long)(u1.majflt - u0.majflt), (unsigned long long)(u1.cpu_ns - u0.cpu_ns),
	       (unsigned long long)u1.maxrss_kb, after_json);
	/* The line goes out before --hold-ms so a test can read the result, then kill the server. */
	fflush(stdout);
	if (o.hold_ms)
		sleep_ms(o.hold_ms);
	return vr.mismatches || after_bad ? 1 : child_failed ? 5 : 0;
}
