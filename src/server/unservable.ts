// A guest whose page cannot be served (it fails its CRC, the object store cannot deliver it)
// and cannot be poisoned (its uffd did not negotiate UFFD_FEATURE_POISON: Firecracker's form)
// would wait on that fault forever. `serve --on-unservable kill` (the default) ends it the way
// Firecracker's reference handlers do, through the pidfd taken when it connected; `close` only
// ends its session and tells it on its socket.
import * as uffd from '../uffd/index.js'

export type UnservableAction = 'kill' | 'close'
export const UNSERVABLE_ACTIONS: readonly UnservableAction[] = ['kill', 'close']

/** The pidfd of the process at the other end of connection `conn`: SO_PEERPIDFD (taken by
 * the kernel at connect(2)), else (kernels before 6.5) pidfd_open of SO_PEERCRED's pid,
 * opened at accept, before anything the guest sends is read. -1 when neither works (the
 * process is gone). */
export function openPeerPidfd(conn: number, pid: number): number {
  try {
    const fd = uffd.peerPidfd(conn)
    if (fd >= 0) return fd
  } catch {
    /* fall back */
  }
  try {
    return uffd.pidfdOpen(pid)
  } catch {
    return -1
  }
}

/** Pidfds of the children of `pid`, each checked after it was opened to be its child still (so
 * a pid reused since is never among them). */
function openChildren(pid: number): number[] {
  const fds: number[] = []
  for (const child of uffd.childPids(pid)) {
    let fd: number
    try {
      fd = uffd.pidfdOpen(child)
    } catch {
      continue
    }
    if (uffd.parentPid(child) === pid) fds.push(fd)
    else uffd.closeFd(fd)
  }
  return fds
}

/** Ends the guest behind `pidfd` (SIGKILL) and, with `children`, the processes it forked
 * (a forked child's fill failed: the fork event names its uffd, not its pid, so every child
 * of the guest goes). The children are opened while they are still its children, then the
 * guest is killed (before it could react to a child's death), then they are. Returns what was
 * done, for the log line. */
export function killGuest(pidfd: number, pid: number, children: boolean): string {
  if (pidfd < 0) return `could not kill pid ${pid}: no pidfd of it was opened at connect`
  const childFds = children ? openChildren(pid) : []
  let sent: boolean | string
  try {
    sent = uffd.pidfdSendSignal(pidfd, uffd.SIGKILL)
  } catch (err) {
    sent = (err as Error).message
  }
  let forked = 0
  for (const fd of childFds) {
    try {
      if (uffd.pidfdSendSignal(fd, uffd.SIGKILL)) forked++
    } catch {
      /* gone */
    }
    uffd.closeFd(fd)
  }
  const also = forked > 0 ? ` and ${forked} child(ren) it forked` : ''
  if (typeof sent === 'string') return `could not kill pid ${pid}: ${sent}${also ? `; killed${also.slice(4)}` : ''}`
  return sent ? `killed pid ${pid}${also} (SIGKILL)` : `pid ${pid} had exited already${also ? `; killed${also.slice(4)}` : ''}`
}
