/* Sending and receiving file descriptors with a message over a Unix stream socket
 * (SCM_RIGHTS), for both sides of the handshake. Never allocates (the shim runs it inside
 * mmap()). */
#ifndef FAULTLINE_FD_PASSING_H
#define FAULTLINE_FD_PASSING_H

#include <stddef.h>
#include <sys/types.h>

/* One sendmsg of buf with fd in SCM_RIGHTS (MSG_NOSIGNAL, EINTR retried). Returns the bytes
 * sent (the fd went with the first of them), or -1 with errno set. */
ssize_t fl_send_with_fd(int sock, const void *buf, size_t len, int fd);

/* One recvmsg into buf (MSG_CMSG_CLOEXEC | flags). Every descriptor that came with it is kept
 * in *fd if *fd is -1 and it is the first, else closed; *fds counts them all (a truncated
 * control message counts as one more). Returns as recvmsg. */
ssize_t fl_recv_with_fds(int sock, void *buf, size_t cap, int flags, int *fd, int *fds);

#endif
