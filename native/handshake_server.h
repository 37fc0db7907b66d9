/* Server side of the wire protocol in README.md ("Wire protocol"): listen, receive the body and
 * its one fd, parse and validate both handshake forms, reply with the ack line; for cache-mapped
 * guests (/work/notes/cache-protocol.md) the map stage: the cache's fd, the guest's answer, and
 * the check that it mapped the cache where it said. */
#ifndef FAULTLINE_HANDSHAKE_SERVER_H
#define FAULTLINE_HANDSHAKE_SERVER_H

#include <stddef.h>
#include <sys/types.h>

#include "handshake.h"

#define FL_MAX_REGIONS 64
#define FL_RECEIVE_TIMEOUT_MS 5000

struct fl_request {
	enum fl_handshake form;
	int server_registers; /* faultline form with "register":true: the server runs API+REGISTER */
	enum fl_map map;      /* faultline form: "map" (anonymous when absent) */
	pid_t pid;            /* the guest's, from SO_PEERCRED */
	int count;
	struct fl_region regions[FL_MAX_REGIONS];
};

/* Binds a mode-0600 Unix stream socket at path (replacing a stale socket, never another kind
 * of file) and listens. Returns the fd, or -1 with err set. */
int fl_server_listen(const char *path, char *err, size_t errcap);

/* Receives one handshake within FL_RECEIVE_TIMEOUT_MS: the body into req, the fd as the return
 * value; -1 with err set (the caller replies err and closes). */
int fl_server_receive(int conn, struct fl_request *req, char *err, size_t errcap);

/* Parses a body; returns 0, or -1 with err set, or 1 if body is a valid prefix (more to read). */
int fl_server_parse(const char *body, size_t len, struct fl_request *req, char *err, size_t errcap);

/* The ack lines: {"ok":true,"session":N,"pageSize":4096} or {"ok":false,"error":"..."}. A
 * faultline-form guest's ack also says the map it got: "map":"anonymous", or (cache_folio_bytes
 * non-zero) "map":"cache" and "folioBytes". */
int fl_server_reply_ok(int conn, long session, unsigned page_size, const struct fl_request *req,
		       uint64_t cache_folio_bytes);
int fl_server_reply_error(int conn, const char *error);

/* Map stage, step 2: {"ok":true,"stage":"map",...,"map":"cache","folioBytes":F} with the cache
 * (opened O_RDONLY) as the one fd in SCM_RIGHTS. */
int fl_server_offer_cache(int conn, long session, unsigned page_size, uint64_t folio_bytes, int cache_fd);

/* Map stage, step 3: waits until deadline_ns for the guest's {"mapped":true} line. Returns 0, or
 * -1 with err set (the guest's own error for {"mapped":false,"error":...}). */
int fl_server_receive_mapped(int conn, uint64_t deadline_ns, char *err, size_t errcap);

/* Map stage, step 4: each region must now be a private mapping of cache_fd's file (same device
 * and inode) at its offset, in /proc/PID/maps. Returns 0, or -1 with err naming the region. */
int fl_server_check_cache_mapped(const struct fl_request *req, int cache_fd, char *err, size_t errcap);

#endif
