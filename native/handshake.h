/* Guest side of the wire protocol in README.md ("Wire protocol"): body + uffd in one sendmsg, the
 * ack line (for cache-mapped guests, /work/notes/cache-protocol.md, first the map stage: the
 * cache's fd, mapped over each region, then {"mapped":true}), then a watchdog on the socket.
 * Shared by the guest and the shim; never allocates. */
#ifndef FAULTLINE_HANDSHAKE_H
#define FAULTLINE_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

/* What backs a faultline-form guest's regions (/work/notes/cache-protocol.md): its own anonymous
 * memory, or the server's decoded cache of the snapshot mapped MAP_PRIVATE over them. */
enum fl_map {
	FL_MAP_ANONYMOUS,
	FL_MAP_CACHE,
};

#define FL_BODY_MAX (64 * 1024)
#define FL_ACK_TIMEOUT_MS 30000

/* Writes the body for form into buf (the faultline form with "map":"cache" when map asks for
 * the cache); returns its length, or -1 if cap is too small. */
int fl_handshake_body(enum fl_handshake form, enum fl_map map, const struct fl_region *regions,
		      int count, char *buf, size_t cap);

typedef void *(*fl_mmap_fn)(void *addr, size_t len, int prot, int flags, int fd, off_t offset);

/* One attach: what the guest asks for, and what it got. */
struct fl_attach {
	enum fl_map map;                 /* asked for */
	const struct fl_region *regions; /* the body's, in its order: where the cache is mapped */
	int count;
	fl_mmap_fn mmap;                 /* maps the cache (the shim passes the real mmap); NULL: libc's */
	long session;                    /* the server's session number, -1 if it gave none */
	int refused;                     /* the server answered ok:false: err is its own text */
	enum fl_map granted;             /* anonymous unless the map stage ran and the server acked it */
	uint64_t folio_bytes;            /* granted cache: the server's fill unit */
};

/* Connects to socket_path, sends body + uffd and waits for the reply line; if the server offers
 * its cache (stage "map"), maps it MAP_PRIVATE|MAP_FIXED over each region at its offset, closes
 * it, says {"mapped":true} and waits for the final ack. Returns the connected socket (CLOEXEC),
 * or -1 with err set. A region that cannot be mapped is reported to the server
 * ({"mapped":false,"error":"mmap region I: ..."}) and err is that text: the caller exits 2. */
int fl_handshake_attach(const char *socket_path, const char *body, size_t len, int uffd,
			struct fl_attach *a, char *err, size_t errcap);

/* Starts a detached thread that blocks in poll() on sock and, when the server side goes away,
 * prints "<who>: page server closed the connection; exiting" and _exit(3)s: a fault whose
 * server is gone would otherwise wait forever. When the server ended the session itself it
 * sent a last {"ok":false,"error":"..."} line first, and the message says it in parentheses:
 * "<who>: page server closed the connection (snapshot error: ...); exiting".
 * Returns 0 or -1 with err set. */
int fl_watchdog_start(int sock, const char *who, char *err, size_t errcap);

#endif
