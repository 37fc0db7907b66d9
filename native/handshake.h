/* Guest side of the wire protocol in README.md ("Wire protocol"): body + uffd in one sendmsg, the
 * ack line, then a watchdog on the socket. Shared by the guest and the shim; never allocates. */
#ifndef FAULTLINE_HANDSHAKE_H
#define FAULTLINE_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

struct fl_region {
	uint64_t addr;      /* base_host_virt_addr */
	uint64_t size;      /* bytes */
	uint64_t offset;    /* byte offset of the region's first byte in the memory image */
	uint64_t page_size; /* bytes */
};

enum fl_handshake {
	FL_HANDSHAKE_FAULTLINE,   /* {"version":1,"register":true,"regions":[...]}: server registers */
	FL_HANDSHAKE_FIRECRACKER, /* [...]: the guest already did UFFDIO_API and UFFDIO_REGISTER */
};

#define FL_BODY_MAX (64 * 1024)
#define FL_ACK_TIMEOUT_MS 30000

/* Writes the body for form into buf; returns its length, or -1 if cap is too small. */
int fl_handshake_body(enum fl_handshake form, const struct fl_region *regions, int count,
		      char *buf, size_t cap);

/* Connects to socket_path, sends body + uffd, waits for the reply line. Returns the connected
 * socket (CLOEXEC) and the server's session number, or -1 with err set; *refused is 1 when the
 * server answered ok:false, and err is then the server's own error text. */
int fl_handshake_attach(const char *socket_path, const char *body, size_t len, int uffd,
			long *session, int *refused, char *err, size_t errcap);

/* Starts a detached thread that blocks in poll() on sock and, when the server side goes away,
 * prints "<who>: page server closed the connection; exiting" and _exit(3)s: a fault whose
 * server is gone would otherwise wait forever. When the server ended the session itself it
 * sent a last {"ok":false,"error":"..."} line first, and the message says it in parentheses:
 * "<who>: page server closed the connection (snapshot error: ...); exiting".
 * Returns 0 or -1 with err set. */
int fl_watchdog_start(int sock, const char *who, char *err, size_t errcap);

#endif
