/* Server side of the wire protocol in README.md ("Wire protocol"): listen, receive the body and
 * its one fd, parse and validate both handshake forms, reply with the ack line. */
#ifndef FAULTLINE_HANDSHAKE_SERVER_H
#define FAULTLINE_HANDSHAKE_SERVER_H

#include <stddef.h>

#include "handshake.h"

#define FL_MAX_REGIONS 64
#define FL_RECEIVE_TIMEOUT_MS 5000

struct fl_request {
	enum fl_handshake form;
	int server_registers; /* faultline form with "register":true: the server runs API+REGISTER */
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

/* The ack lines: {"ok":true,"session":N,"pageSize":4096} or {"ok":false,"error":"..."}. */
int fl_server_reply_ok(int conn, long session, unsigned page_size);
int fl_server_reply_error(int conn, const char *error);

#endif
