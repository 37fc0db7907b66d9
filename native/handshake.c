/* Guest side of the wire protocol (see handshake.h). Stack buffers only: the shim runs this
 * from inside mmap(), where malloc may not be safe to re-enter. */
#include "handshake.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fd_passing.h"
#include "json.h"
#include "timing.h"

static int append_regions(const struct fl_region *r, int count, char *buf, size_t cap, size_t *at)
{
	for (int i = 0; i < count; i++) {
		int n = snprintf(buf + *at, cap - *at,
				 "%s{\"base_host_virt_addr\":%llu,\"size\":%llu,\"offset\":%llu,\"page_size\":%llu}",
				 i ? "," : "", (unsigned long long)r[i].addr, (unsigned long long)r[i].size,
				 (unsigned long long)r[i].offset, (unsigned long long)r[i].page_size);
		if (n < 0 || (size_t)n >= cap - *at)
			return -1;
		*at += (size_t)n;
	}
	return 0;
}

static int append_text(const char *s, char *buf, size_t cap, size_t *at)
{
	size_t n = strlen(s);
	if (n >= cap - *at)
		return -1;
	memcpy(buf + *at, s, n + 1);
	*at += n;
	return 0;
}

int fl_handshake_body(enum fl_handshake form, enum fl_map map, const struct fl_region *regions,
		      int count, char *buf, size_t cap)
{
	size_t at = 0;
	const char *open = form == FL_HANDSHAKE_FIRECRACKER ? "["
			   : map == FL_MAP_CACHE ? "{\"version\":1,\"register\":true,\"map\":\"cache\",\"regions\":["
						 : "{\"version\":1,\"register\":true,\"regions\":[";
	const char *close = form == FL_HANDSHAKE_FAULTLINE ? "]}" : "]";
	if (cap == 0 || append_text(open, buf, cap, &at) < 0 ||
	    append_regions(regions, count, buf, cap, &at) < 0 || append_text(close, buf, cap, &at) < 0)
		return -1;
	return (int)at;
}

static int send_body_with_fd(int sock, const char *body, size_t len, int fd)
{
	ssize_t n = fl_send_with_fd(sock, body, len, fd);
	/* A short write would split the fd from the rest of the body; 64 KiB fits one skb. */
	if (n >= 0 && (size_t)n != len) {
		errno = EMSGSIZE;
		return -1;
	}
	return n < 0 ? -1 : 0;
}

/* Reads up to and including the first '\n' (or EOF) within the ack timeout; a descriptor that
 * comes with it (SCM_RIGHTS) lands in *fd (-1 if none; a second one is an error). */
static ssize_t read_reply_line(int sock, char *buf, size_t cap, int *fd, char *err, size_t errcap)
{
	size_t at = 0;
	int fds = 0;
	*fd = -1;
	uint64_t deadline = now_ns() + (uint64_t)FL_ACK_TIMEOUT_MS * 1000000u;
	while (at + 1 < cap) {
		uint64_t now = now_ns();
		if (now >= deadline) {
			snprintf(err, errcap, "no reply from the page server within %d s",
				 FL_ACK_TIMEOUT_MS / 1000);
			goto fail;
		}
		struct pollfd p = { .fd = sock, .events = POLLIN };
		int r = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errcap, "poll on the page server socket: %s", strerror(errno));
			goto fail;
		}
		if (r == 0)
			continue;
		ssize_t n = fl_recv_with_fds(sock, buf + at, cap - 1 - at, 0, fd, &fds);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			snprintf(err, errcap, "reading the page server's reply: %s", strerror(errno));
			goto fail;
		}
		if (fds > 1) {
			snprintf(err, errcap, "the page server's reply carried more than one file descriptor");
			goto fail;
		}
		if (n == 0)
			break;
		at += (size_t)n;
		buf[at] = '\0';
		if (memchr(buf, '\n', at))
			break;
	}
	buf[at] = '\0';
	char *nl = strchr(buf, '\n');
	if (nl)
		*nl = '\0';
	return (ssize_t)strlen(buf);
fail:
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
	return -1;
}

/* Whether the string value of key is exactly text. */
static int value_is(const char *json, const char *key, const char *text)
{
	const char *v = json_find_value(json, key);
	size_t n = strlen(text);
	return v && *v == '"' && strncmp(v + 1, text, n) == 0 && v[1 + n] == '"';
}

static uint64_t number_value(const char *json, const char *key)
{
	const char *v = json_find_value(json, key);
	uint64_t n = 0;
	while (v && *v >= '0' && *v <= '9')
		n = n * 10 + (uint64_t)(*v++ - '0');
	return n;
}

static int is_ok(const char *line)
{
	const char *ok = json_find_value(line, "ok");
	return ok && strncmp(ok, "true", 4) == 0;
}

/* ok:false: the server's own error text in err. */
static void refusal(const char *line, struct fl_attach *a, char *err, size_t errcap)
{
	const char *e = json_find_value(line, "error");
	if (e)
		json_copy_string(e, err, errcap);
	else
		snprintf(err, errcap, "%s", line);
	a->refused = 1;
}

static int send_text(int sock, const char *text)
{
	size_t len = strlen(text);
	while (len) {
		ssize_t n = send(sock, text, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		text += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Step 3 of the map stage: the cache over each region, in handshake order, then the answer. */
static int map_cache(int sock, int cache_fd, struct fl_attach *a, char *err, size_t errcap)
{
	fl_mmap_fn map = a->mmap ? a->mmap : mmap;
	for (int i = 0; i < a->count; i++) {
		const struct fl_region *r = &a->regions[i];
		void *want = (void *)(uintptr_t)r->addr;
		void *got = map(want, r->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, cache_fd, (off_t)r->offset);
		if (got != want) {
			char escaped[256], line[400];
			snprintf(err, errcap, "mmap region %d: %s", i, got == MAP_FAILED ? strerror(errno) : "mapped elsewhere");
			json_escape(escaped, sizeof escaped, err);
			snprintf(line, sizeof line, "{\"mapped\":false,\"error\":\"%s\"}\n", escaped);
			close(cache_fd);
			send_text(sock, line);
			return -1;
		}
	}
	close(cache_fd);
	if (send_text(sock, "{\"mapped\":true}\n") < 0) {
		snprintf(err, errcap, "telling the page server the cache is mapped: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int fl_handshake_attach(const char *socket_path, const char *body, size_t len, int uffd,
			struct fl_attach *a, char *err, size_t errcap)
{
	a->refused = 0;
	a->session = -1;
	a->granted = FL_MAP_ANONYMOUS;
	a->folio_bytes = 0;
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(socket_path) >= sizeof addr.sun_path) {
		snprintf(err, errcap, "socket path too long (max %zu bytes): %s",
			 sizeof addr.sun_path - 1, socket_path);
		return -1;
	}
	strcpy(addr.sun_path, socket_path);
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0) {
		snprintf(err, errcap, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
		int e = errno;
		snprintf(err, errcap, "cannot connect to %s: %s%s", socket_path, strerror(e),
			 e == ENOENT || e == ECONNREFUSED ? " (is the page server running?)" : "");
		goto fail;
	}
	if (send_body_with_fd(sock, body, len, uffd) < 0) {
		snprintf(err, errcap, "sending the handshake to %s: %s", socket_path, strerror(errno));
		goto fail;
	}
	char line[4096];
	int fd;
	ssize_t n = read_reply_line(sock, line, sizeof line, &fd, err, errcap);
	if (n < 0)
		goto fail;
	if (n == 0 || !is_ok(line)) {
		if (fd >= 0)
			close(fd);
		if (n == 0)
			snprintf(err, errcap, "the page server closed the connection without a reply");
		else
			refusal(line, a, err, errcap);
		goto fail;
	}
	if (value_is(line, "stage", "map")) {
		if (a->map != FL_MAP_CACHE || fd < 0 || !value_is(line, "map", "cache")) {
			snprintf(err, errcap, "%s", a->map != FL_MAP_CACHE ? "the page server offered a cache the guest did not ask for"
						  : fd < 0 ? "the page server offered its cache without a file descriptor"
							   : "the page server offered a map other than \"cache\"");
			if (fd >= 0)
				close(fd);
			goto fail;
		}
		if (map_cache(sock, fd, a, err, errcap) < 0)
			goto fail;
		n = read_reply_line(sock, line, sizeof line, &fd, err, errcap);
		if (n < 0)
			goto fail;
		if (fd >= 0) {
			close(fd);
			snprintf(err, errcap, "the page server's final ack carried a file descriptor");
			goto fail;
		}
		if (n == 0 || !is_ok(line)) {
			if (n == 0)
				snprintf(err, errcap, "the page server closed the connection after its cache was mapped");
			else
				refusal(line, a, err, errcap);
			goto fail;
		}
		if (!value_is(line, "map", "cache")) {
			snprintf(err, errcap, "the page server's final ack after its cache was mapped does not say \"map\":\"cache\"");
			goto fail;
		}
		a->granted = FL_MAP_CACHE;
		a->folio_bytes = number_value(line, "folioBytes");
	} else {
		if (fd >= 0) {
			close(fd);
			snprintf(err, errcap, "the page server's reply carried a file descriptor it did not offer");
			goto fail;
		}
		if (value_is(line, "map", "cache")) {
			snprintf(err, errcap, "the page server acked \"map\":\"cache\" without offering its cache");
			goto fail;
		}
	}
	const char *s = json_find_value(line, "session");
	if (s && *s >= '0' && *s <= '9')
		a->session = (long)number_value(line, "session");
	return sock;
fail:
	close(sock);
	return -1;
}

static int watchdog_sock = -1;
static char watchdog_who[64];

static void *watchdog_main(void *unused)
{
	(void)unused;
	/* After the ack the server says nothing, except one last line when it ends the session
	 * itself ({"ok":false,"error":"..."}): kept, to say why. */
	char said[1024];
	size_t said_len = 0;
	for (;;) {
		struct pollfd p = { .fd = watchdog_sock, .events = POLLIN | POLLRDHUP };
		int r = poll(&p, 1, -1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || (p.revents & (POLLERR | POLLNVAL)))
			break;
		if (p.revents & (POLLIN | POLLHUP | POLLRDHUP)) {
			char sink[256];
			ssize_t n = recv(watchdog_sock, sink, sizeof sink, MSG_DONTWAIT);
			if (n > 0) {
				size_t keep = (size_t)n < sizeof said - 1 - said_len ? (size_t)n : sizeof said - 1 - said_len;
				memcpy(said + said_len, sink, keep);
				said_len += keep;
				continue;
			}
			if (n == 0 || (errno != EAGAIN && errno != EINTR))
				break;
		}
	}
	said[said_len] = '\0';
	char why[512] = "";
	const char *e = json_find_value(said, "error");
	if (e)
		json_copy_string(e, why, sizeof why);
	char line[700];
	int len = snprintf(line, sizeof line, "%s: page server closed the connection%s%s%s; exiting\n",
			   watchdog_who, why[0] ? " (" : "", why, why[0] ? ")" : "");
	ssize_t unused_n = write(STDERR_FILENO, line, len < 0 ? 0 : (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
	(void)unused_n;
	_exit(3);
}

int fl_watchdog_start(int sock, const char *who, char *err, size_t errcap)
{
	watchdog_sock = sock;
	snprintf(watchdog_who, sizeof watchdog_who, "%s", who);
	/* Signals stay with the program's own threads: the watchdog must only ever poll. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t t;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	int rc = pthread_create(&t, &attr, watchdog_main, NULL);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		snprintf(err, errcap, "cannot start the watchdog thread: %s", strerror(rc));
		return -1;
	}
	return 0;
}
