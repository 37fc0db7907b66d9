/* Server side of the wire protocol (see handshake_server.h), with a small JSON reader that knows
 * only what a handshake may contain: objects, arrays, strings, unsigned integers, literals. */
#include "handshake_server.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "fd_passing.h"
#include "json.h"
#include "timing.h"

#define MAX_DEPTH 16

struct cursor {
	const char *base, *p, *end;
	int truncated; /* ran out of input: the body may simply not have arrived yet */
	char *err;
	size_t errcap;
};

/* Input ran out: the caller may read more and parse again. */
static int ends_early(struct cursor *c)
{
	c->truncated = 1;
	snprintf(c->err, c->errcap, "handshake body ends early (%td bytes)", c->end - c->base);
	return -1;
}

__attribute__((format(printf, 2, 3))) static int fail(struct cursor *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, c->errcap, fmt, ap);
	va_end(ap);
	return -1;
}

static void skip_ws(struct cursor *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int expect(struct cursor *c, char ch)
{
	skip_ws(c);
	if (c->p >= c->end)
		return ends_early(c);
	if (*c->p != ch)
		return fail(c, "handshake body: expected '%c' at byte %td", ch, c->p - c->base);
	c->p++;
	return 0;
}

/* Strings are only keys we compare, so escapes are decoded just enough to compare them. */
static int parse_string(struct cursor *c, char *out, size_t cap)
{
	size_t n = 0;
	if (expect(c, '"') < 0)
		return -1;
	while (c->p < c->end && *c->p != '"') {
		char ch = *c->p++;
		if ((unsigned char)ch < 0x20)
			return fail(c, "handshake body: control character in a string");
		if (ch == '\\') {
			if (c->p >= c->end)
				return ends_early(c);
			ch = *c->p++;
			if (ch == 'u') {
				if (c->end - c->p < 4)
					return ends_early(c);
				c->p += 4;
				ch = '?';
			}
		}
		if (n + 1 < cap)
			out[n++] = ch;
	}
	if (c->p >= c->end)
		return ends_early(c);
	c->p++;
	out[n] = '\0';
	return 0;
}

static int parse_u64(struct cursor *c, const char *key, uint64_t *v)
{
	skip_ws(c);
	const char *start = c->p;
	*v = 0;
	while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
		unsigned d = (unsigned)(*c->p++ - '0');
		if (*v > (UINT64_MAX - d) / 10)
			return fail(c, "handshake body: \"%s\" is too large", key);
		*v = *v * 10 + d;
	}
	/* Digits up to the end of input may go on in the next read. */
	if (c->p >= c->end)
		return ends_early(c);
	if (c->p == start || *c->p == '.' || *c->p == 'e' || *c->p == 'E')
		return fail(c, "handshake body: \"%s\" must be a non-negative integer", key);
	return 0;
}

static int parse_literal(struct cursor *c, const char *word)
{
	size_t n = strlen(word);
	size_t have = (size_t)(c->end - c->p);
	if (memcmp(c->p, word, have < n ? have : n) != 0)
		return fail(c, "handshake body: unexpected '%c'", *c->p);
	if (have < n)
		return ends_early(c);
	c->p += n;
	return 0;
}

static int skip_number(struct cursor *c)
{
	const char *start = c->p;
	while (c->p < c->end && *c->p && strchr("0123456789+-.eE", *c->p))
		c->p++;
	if (c->p >= c->end)
		return ends_early(c);
	if (c->p == start)
		return fail(c, "handshake body: unexpected '%c' at byte %td", *c->p, c->p - c->base);
	return 0;
}

static int skip_value(struct cursor *c, int depth)
{
	char scratch[8];
	if (depth > MAX_DEPTH)
		return fail(c, "handshake body: nested too deeply");
	skip_ws(c);
	if (c->p >= c->end)
		return ends_early(c);
	switch (*c->p) {
	case '"':
		return parse_string(c, scratch, sizeof scratch);
	case 't':
		return parse_literal(c, "true");
	case 'f':
		return parse_literal(c, "false");
	case 'n':
		return parse_literal(c, "null");
	case '{':
	case '[': {
		char close = *c->p == '{' ? '}' : ']';
		int object = close == '}';
		c->p++;
		skip_ws(c);
		if (c->p < c->end && *c->p == close) {
			c->p++;
			return 0;
		}
		for (;;) {
			if (object && (parse_string(c, scratch, sizeof scratch) < 0 || expect(c, ':') < 0))
				return -1;
			if (skip_value(c, depth + 1) < 0)
				return -1;
			skip_ws(c);
			if (c->p < c->end && *c->p == ',') {
				c->p++;
				continue;
			}
			return expect(c, close);
		}
	}
	default:
		return skip_number(c);
	}
}

/* Iterates an object's members: calls member(key) positioned at each value. */
typedef int (*member_fn)(struct cursor *c, const char *key, void *ctx);

static int parse_object(struct cursor *c, member_fn member, void *ctx)
{
	char key[64];
	if (expect(c, '{') < 0)
		return -1;
	skip_ws(c);
	if (c->p < c->end && *c->p == '}') {
		c->p++;
		return 0;
	}
	for (;;) {
		if (parse_string(c, key, sizeof key) < 0 || expect(c, ':') < 0 || member(c, key, ctx) < 0)
			return -1;
		skip_ws(c);
		if (c->p < c->end && *c->p == ',') {
			c->p++;
			continue;
		}
		return expect(c, '}');
	}
}

struct region_fields {
	struct fl_region r;
	int have_addr, have_size, have_offset, have_page;
};

static int region_member(struct cursor *c, const char *key, void *ctx)
{
	struct region_fields *f = ctx;
	if (strcmp(key, "base_host_virt_addr") == 0) {
		f->have_addr = 1;
		return parse_u64(c, key, &f->r.addr);
	}
	if (strcmp(key, "size") == 0) {
		f->have_size = 1;
		return parse_u64(c, key, &f->r.size);
	}
	if (strcmp(key, "offset") == 0) {
		f->have_offset = 1;
		return parse_u64(c, key, &f->r.offset);
	}
	/* Firecracker's deprecated page_size_kib holds bytes despite its name. */
	if (strcmp(key, "page_size") == 0 || strcmp(key, "page_size_kib") == 0) {
		f->have_page = 1;
		return parse_u64(c, key, &f->r.page_size);
	}
	return skip_value(c, 1);
}

static int parse_regions(struct cursor *c, struct fl_request *req)
{
	if (expect(c, '[') < 0)
		return -1;
	skip_ws(c);
	if (c->p < c->end && *c->p == ']')
		return fail(c, "handshake body: no regions");
	for (;;) {
		struct region_fields f = { 0 };
		if (req->count == FL_MAX_REGIONS)
			return fail(c, "handshake body: more than %d regions", FL_MAX_REGIONS);
		if (parse_object(c, region_member, &f) < 0)
			return -1;
		int i = req->count;
		const char *missing = !f.have_addr ? "base_host_virt_addr" : !f.have_size ? "size"
				      : !f.have_offset ? "offset" : !f.have_page ? "page_size" : NULL;
		if (missing)
			return fail(c, "handshake body: region %d has no \"%s\"", i, missing);
		uint64_t ps = f.r.page_size;
		if (ps < 4096 || (ps & (ps - 1)))
			return fail(c, "handshake body: region %d: page_size %llu is not a power of two >= 4096",
				    i, (unsigned long long)ps);
		if (!f.r.size || f.r.addr % ps || f.r.size % ps || f.r.offset % ps)
			return fail(c, "handshake body: region %d: address, size and offset must be multiples "
				    "of page_size, and size non-zero", i);
		req->regions[req->count++] = f.r;
		skip_ws(c);
		if (c->p < c->end && *c->p == ',') {
			c->p++;
			continue;
		}
		return expect(c, ']');
	}
}

struct top_fields {
	struct fl_request *req;
	int have_version, have_regions, register_false;
};

static int top_member(struct cursor *c, const char *key, void *ctx)
{
	struct top_fields *t = ctx;
	if (strcmp(key, "version") == 0) {
		uint64_t v;
		if (parse_u64(c, key, &v) < 0)
			return -1;
		if (v != 1)
			return fail(c, "handshake body: unsupported version %llu (this side speaks 1)",
				    (unsigned long long)v);
		t->have_version = 1;
		return 0;
	}
	if (strcmp(key, "register") == 0) {
		skip_ws(c);
		if (c->p >= c->end)
			return ends_early(c);
		if (*c->p == 't')
			return (t->req->server_registers = 1, parse_literal(c, "true"));
		if (*c->p == 'f')
			return (t->req->server_registers = 0, t->register_false = 1, parse_literal(c, "false"));
		return fail(c, "handshake body: \"register\" must be true or false");
	}
	if (strcmp(key, "regions") == 0) {
		t->have_regions = 1;
		return parse_regions(c, t->req);
	}
	if (strcmp(key, "map") == 0) {
		char map[16];
		skip_ws(c);
		if (c->p < c->end && *c->p != '"')
			return fail(c, "handshake \"map\" must be \"anonymous\" or \"cache\"");
		if (parse_string(c, map, sizeof map) < 0)
			return -1;
		if (strcmp(map, "anonymous") == 0)
			t->req->map = FL_MAP_ANONYMOUS;
		else if (strcmp(map, "cache") == 0)
			t->req->map = FL_MAP_CACHE;
		else
			return fail(c, "handshake \"map\" must be \"anonymous\" or \"cache\"");
		return 0;
	}
	return skip_value(c, 1);
}

int fl_server_parse(const char *body, size_t len, struct fl_request *req, char *err, size_t errcap)
{
	struct cursor c = { .base = body, .p = body, .end = body + len, .err = err, .errcap = errcap };
	memset(req, 0, sizeof *req);
	skip_ws(&c);
	int rc;
	if (c.p < c.end && *c.p == '[') {
		req->form = FL_HANDSHAKE_FIRECRACKER;
		rc = parse_regions(&c, req);
	} else {
		struct top_fields t = { .req = req };
		req->form = FL_HANDSHAKE_FAULTLINE;
		req->server_registers = 1;
		rc = parse_object(&c, top_member, &t);
		if (rc == 0 && !t.have_version)
			rc = fail(&c, "handshake body: no \"version\"");
		if (rc == 0 && !t.have_regions)
			rc = fail(&c, "handshake body: no \"regions\"");
		/* The server registers only once the guest has mapped the cache. */
		if (rc == 0 && req->map == FL_MAP_CACHE && t.register_false)
			rc = fail(&c, "handshake \"map\":\"cache\" needs \"register\": true");
	}
	if (rc < 0)
		return c.truncated ? 1 : -1;
	skip_ws(&c);
	if (c.p < c.end) {
		snprintf(err, errcap, "handshake body: unexpected data after the JSON value");
		return -1;
	}
	return 0;
}

int fl_server_listen(const char *path, char *err, size_t errcap)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof addr.sun_path) {
		snprintf(err, errcap, "socket path too long (max %zu bytes): %s", sizeof addr.sun_path - 1,
			 path);
		return -1;
	}
	strcpy(addr.sun_path, path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errcap, "%s exists and is not a socket", path);
			return -1;
		}
		unlink(path);
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errcap, "socket: %s", strerror(errno));
		return -1;
	}
	/* umask around bind: the socket must never exist, even briefly, with wider permissions. */
	mode_t old = umask(0077);
	int rc = bind(fd, (struct sockaddr *)&addr, sizeof addr);
	int e = errno;
	umask(old);
	if (rc < 0 || listen(fd, 16) < 0) {
		snprintf(err, errcap, "cannot listen on %s: %s", path, strerror(rc < 0 ? e : errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Waits until conn is readable: 1, or 0 once deadline_ns has passed, or -1 with err set. */
static int wait_readable(int conn, uint64_t deadline_ns, char *err, size_t errcap)
{
	for (;;) {
		uint64_t now = now_ns();
		if (now >= deadline_ns)
			return 0;
		struct pollfd p = { .fd = conn, .events = POLLIN };
		int r = poll(&p, 1, (int)((deadline_ns - now) / 1000000u) + 1);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR) {
			snprintf(err, errcap, "poll: %s", strerror(errno));
			return -1;
		}
	}
}

int fl_server_receive(int conn, struct fl_request *req, char *err, size_t errcap)
{
	static char body[FL_BODY_MAX + 1];
	size_t len = 0;
	int fd = -1;
	uint64_t deadline = now_ns() + (uint64_t)FL_RECEIVE_TIMEOUT_MS * 1000000u;
	for (;;) {
		int r = wait_readable(conn, deadline, err, errcap);
		if (r == 0)
			snprintf(err, errcap, "no complete handshake within %d s", FL_RECEIVE_TIMEOUT_MS / 1000);
		if (r <= 0)
			goto fail;
		int fds = 0, had = fd >= 0;
		ssize_t n = fl_recv_with_fds(conn, body + len, FL_BODY_MAX - len, MSG_DONTWAIT, &fd, &fds);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			snprintf(err, errcap, "recvmsg: %s", strerror(errno));
			goto fail;
		}
		if (fds > 1 || (fds == 1 && (len > 0 || had))) {
			snprintf(err, errcap, "the handshake must carry exactly one file descriptor");
			goto fail;
		}
		if (n == 0) {
			snprintf(err, errcap, "connection closed before a complete handshake");
			goto fail;
		}
		len += (size_t)n;
		int rc = fl_server_parse(body, len, req, err, errcap);
		if (rc < 0)
			goto fail;
		if (rc == 0)
			break;
		if (len == FL_BODY_MAX) {
			snprintf(err, errcap, "handshake body larger than %d bytes", FL_BODY_MAX);
			goto fail;
		}
	}
	if (fd < 0) {
		snprintf(err, errcap, "the handshake must carry exactly one file descriptor (got none)");
		return -1;
	}
	struct ucred cred;
	socklen_t cred_len = sizeof cred;
	if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0) {
		snprintf(err, errcap, "SO_PEERCRED: %s", strerror(errno));
		goto fail;
	}
	req->pid = cred.pid;
	return fd;
fail:
	if (fd >= 0)
		close(fd);
	return -1;
}

static int send_line(int conn, const char *line, size_t len)
{
	while (len) {
		ssize_t n = send(conn, line, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		line += n;
		len -= (size_t)n;
	}
	return 0;
}

int fl_server_reply_ok(int conn, long session, unsigned page_size, const struct fl_request *req,
		       uint64_t cache_folio_bytes)
{
	char line[160], map[64] = "";
	if (req->form == FL_HANDSHAKE_FAULTLINE && cache_folio_bytes)
		snprintf(map, sizeof map, ",\"map\":\"cache\",\"folioBytes\":%llu",
			 (unsigned long long)cache_folio_bytes);
	else if (req->form == FL_HANDSHAKE_FAULTLINE)
		snprintf(map, sizeof map, ",\"map\":\"anonymous\"");
	int n = snprintf(line, sizeof line, "{\"ok\":true,\"session\":%ld,\"pageSize\":%u%s}\n", session,
			 page_size, map);
	return send_line(conn, line, (size_t)n);
}

int fl_server_offer_cache(int conn, long session, unsigned page_size, uint64_t folio_bytes, int cache_fd)
{
	char line[160];
	int n = snprintf(line, sizeof line,
			 "{\"ok\":true,\"stage\":\"map\",\"session\":%ld,\"pageSize\":%u,\"map\":\"cache\","
			 "\"folioBytes\":%llu}\n", session, page_size, (unsigned long long)folio_bytes);
	ssize_t sent = fl_send_with_fd(conn, line, (size_t)n, cache_fd);
	if (sent < 0)
		return -1;
	/* The fd went with the first byte; the rest, if the socket took less, goes plainly. */
	return send_line(conn, line + sent, (size_t)(n - sent));
}

int fl_server_receive_mapped(int conn, uint64_t deadline_ns, char *err, size_t errcap)
{
	char line[1024];
	size_t at = 0;
	for (;;) {
		int r = wait_readable(conn, deadline_ns, err, errcap);
		if (r == 0)
			snprintf(err, errcap, "the guest did not say it mapped the cache within %d s",
				 FL_RECEIVE_TIMEOUT_MS / 1000);
		if (r <= 0)
			return -1;
		int fd = -1, fds = 0;
		ssize_t n = fl_recv_with_fds(conn, line + at, sizeof line - 1 - at, MSG_DONTWAIT, &fd, &fds);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (fd >= 0)
			close(fd);
		if (n < 0) {
			snprintf(err, errcap, "reading the guest's map answer: %s", strerror(errno));
			return -1;
		}
		if (n == 0) {
			snprintf(err, errcap, "the guest closed the connection before saying it mapped the cache");
			return -1;
		}
		if (fds) {
			snprintf(err, errcap, "the guest's map answer must carry no file descriptor");
			return -1;
		}
		at += (size_t)n;
		line[at] = '\0';
		char *nl = strchr(line, '\n');
		if (!nl && at == sizeof line - 1) {
			snprintf(err, errcap, "the guest's map answer is longer than %zu bytes", sizeof line - 1);
			return -1;
		}
		if (!nl)
			continue;
		*nl = '\0';
		const char *mapped = json_find_value(line, "mapped");
		if (mapped && strncmp(mapped, "true", 4) == 0)
			return 0;
		const char *e = json_find_value(line, "error");
		if (mapped && strncmp(mapped, "false", 5) == 0 && e && *e == '"') {
			char why[512];
			json_copy_string(e, why, sizeof why);
			snprintf(err, errcap, "the guest could not map the cache: %s", why);
			return -1;
		}
		snprintf(err, errcap, "the guest's map answer must be {\"mapped\":true} or {\"mapped\":false,\"error\":...}");
		return -1;
	}
}

int fl_server_check_cache_mapped(const struct fl_request *req, int cache_fd, char *err, size_t errcap)
{
	struct stat st;
	if (fstat(cache_fd, &st) < 0) {
		snprintf(err, errcap, "fstat of the cache: %s", strerror(errno));
		return -1;
	}
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/maps", (int)req->pid);
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errcap, "reading %s: %s", path, strerror(errno));
		return -1;
	}
	/* covered[i]: how far from its start region i is checked so far (maps are in address order). */
	uint64_t covered[FL_MAX_REGIONS] = { 0 };
	int bad = -1;
	char line[4096];
	while (bad < 0 && fgets(line, sizeof line, f)) {
		unsigned long long start, end, offset, inode;
		unsigned dev_major, dev_minor;
		char perms[8];
		if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu", &start, &end, perms, &offset, &dev_major,
			   &dev_minor, &inode) != 7)
			continue;
		for (int i = 0; i < req->count; i++) {
			const struct fl_region *r = &req->regions[i];
			if (end <= r->addr || start >= r->addr + r->size)
				continue;
			uint64_t from = start > r->addr ? start : r->addr;
			int is_cache = perms[3] == 'p' && dev_major == major(st.st_dev) &&
				       dev_minor == minor(st.st_dev) && inode == (unsigned long long)st.st_ino &&
				       offset + (from - start) == r->offset + (from - r->addr);
			if (!is_cache || from - r->addr != covered[i]) {
				bad = i;
				break;
			}
			uint64_t to = end < r->addr + r->size ? end : r->addr + r->size;
			covered[i] = to - r->addr;
		}
	}
	fclose(f);
	for (int i = 0; bad < 0 && i < req->count; i++)
		if (covered[i] != req->regions[i].size)
			bad = i;
	if (bad >= 0) {
		const struct fl_region *r = &req->regions[bad];
		snprintf(err, errcap, "region %d: 0x%llx+%llu is not a private mapping of the cache at offset %llu",
			 bad, (unsigned long long)r->addr, (unsigned long long)r->size, (unsigned long long)r->offset);
		return -1;
	}
	return 0;
}

int fl_server_reply_error(int conn, const char *error)
{
	char escaped[1024], line[1100];
	json_escape(escaped, sizeof escaped, error);
	int n = snprintf(line, sizeof line, "{\"ok\":false,\"error\":\"%s\"}\n", escaped);
	return send_line(conn, line, (size_t)n);
}
