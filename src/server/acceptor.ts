// Acceptor thread: accepts every connection, checks the peer's uid, reads its first message
// (body and descriptors) within the handshake deadline and checks it (parseHandshake), so that
// a pending handshake costs a descriptor and a deadline here, never a session worker. A guest
// that passes is handed to the server (GuestHandoff); anything else is answered with a one-line
// refusal and closed. Pending handshakes are bounded: at the bound a new connection drops the
// oldest pending one (told the server is busy), so a flood of silent clients cannot keep a
// real guest, whose first message follows its connect at once, waiting in the backlog.
import { parentPort, workerData } from 'node:worker_threads'
import * as uffd from '../uffd/index.js'
import { cannotBecomeJson, HandshakeError, MAX_HANDSHAKE_BYTES, parseHandshake } from './handshake.js'
import { openPeerPidfd } from './unservable.js'
import type { AcceptorData, AcceptorMessage } from './worker-protocol.js'

const data = workerData as AcceptorData
const post = (m: AcceptorMessage) => parentPort!.postMessage(m)

/** After accept(2) fails for lack of descriptors or memory, the listening socket is left alone
 * this long (it stays readable: polling it at once would spin). */
const ACCEPT_PAUSE_MS = 100
/** Such failures are logged at most this often (with how many happened meanwhile). */
const ACCEPT_LOG_INTERVAL_MS = 5000
const EMFILE = 24,
  ENFILE = 23,
  ENOBUFS = 105,
  ENOMEM = 12
/** Pending handshakes dropped when accept(2) runs out of descriptors. */
const FDS_TO_FREE = 4
/** Connections accepted per turn of the loop, at most. */
const ACCEPT_BATCH = 64

interface Pending {
  fd: number
  pid: number
  uid: number
  gid: number
  acceptedAtMs: number
  deadlineMs: number
  /** Body bytes received so far (most first messages arrive whole, in one recvmsg). */
  body: Buffer
  fds: number[]
  truncated: boolean
}

function reply(fd: number, obj: object): void {
  try {
    uffd.sendBytes(fd, Buffer.from(JSON.stringify(obj) + '\n'))
  } catch {
    /* peer gone */
  }
}

class Acceptor {
  private readonly pending: Pending[] = []
  private readonly poll: uffd.PollSet
  private readonly scratch = Buffer.alloc(MAX_HANDSHAKE_BYTES + 1)
  private readonly receiver = new uffd.MessageReceiver()
  private readonly pendingCounter = new Int32Array(data.pendingCounter)
  private pausedUntilMs = 0
  private acceptFailures = 0
  private lastAcceptLogMs = -Infinity

  constructor() {
    this.poll = new uffd.PollSet(data.maxPending + 2)
  }

  run(): void {
    const poll = this.poll
    post({ type: 'listening' })
    for (;;) {
      const now = Date.now()
      const listening = now >= this.pausedUntilMs
      poll.size = 0
      poll.set(0, data.stopFd, uffd.POLLIN)
      poll.set(1, listening ? data.listenFd : -1, uffd.POLLIN)
      let wakeAt = listening ? Infinity : this.pausedUntilMs
      for (let i = 0; i < this.pending.length; i++) {
        poll.set(2 + i, this.pending[i].fd, uffd.POLLIN)
        wakeAt = Math.min(wakeAt, this.pending[i].deadlineMs)
      }
      const timeout = wakeAt === Infinity ? -1 : Math.max(0, Math.ceil(wakeAt - now))
      poll.wait(timeout)
      if (poll.revents(0)) {
        this.stop()
        return
      }
      // Connections first (their slots are numbered as polled), then new ones.
      for (let i = this.pending.length - 1; i >= 0; i--) {
        if (poll.revents(2 + i)) this.receive(i)
      }
      this.expire(Date.now())
      if (listening && poll.revents(1)) this.acceptAll()
      Atomics.store(this.pendingCounter, 0, this.pending.length)
    }
  }

  private acceptAll(): void {
    // A bounded batch: under a flood of connections, the pending ones are read in between.
    for (let n = 0; n < ACCEPT_BATCH; n++) {
      let fd: number
      try {
        fd = uffd.acceptConnection(data.listenFd)
      } catch (err) {
        if (this.acceptFailed(err)) continue
        return
      }
      if (fd < 0) return
      if (this.pending.length >= data.maxPending) this.dropOldest()
      this.admitPeer(fd)
    }
  }

  /** At the bound: the connection that has waited longest without a complete first message
   * makes room (pending is in accept order). */
  private dropOldest(): void {
    const age = Date.now() - this.pending[0].acceptedAtMs
    this.refuse(0, `server busy: ${data.maxPending} handshakes pending, this one the oldest (${age} ms without a complete handshake); try again`)
  }

  /** accept(2) failed. Out of descriptors with handshakes pending: the oldest make room (a few,
   * so the next guest also has descriptors for its uffd and its checks); otherwise the
   * listening socket is left alone for a moment. Either way, logged now and then. */
  private acceptFailed(err: unknown): boolean {
    const errno = err instanceof uffd.UffdError ? err.errno : 0
    if (errno !== EMFILE && errno !== ENFILE && errno !== ENOBUFS && errno !== ENOMEM) throw err
    const dropping = (errno === EMFILE || errno === ENFILE) && this.pending.length > 0
    for (let i = 0; dropping && i < FDS_TO_FREE && this.pending.length > 0; i++) {
      this.refuse(0, `server busy: out of file descriptors with ${this.pending.length} handshakes pending, this one the oldest; try again`)
    }
    if (!dropping) this.pausedUntilMs = Date.now() + ACCEPT_PAUSE_MS
    this.acceptFailures++
    const now = Date.now()
    if (now - this.lastAcceptLogMs >= ACCEPT_LOG_INTERVAL_MS) {
      const what =
        errno === EMFILE ? 'too many open files (the process limit, ulimit -n)' : errno === ENFILE ? 'too many open files in the system' : 'out of memory'
      post({
        type: 'log',
        line:
          `cannot accept connections: ${what}; ${this.acceptFailures} failed accept(s), ` +
          `${this.pending.length} handshake(s) pending; ${dropping ? 'the oldest pending ones are dropped to make room' : "new guests wait in the socket's backlog"}`,
      })
      this.lastAcceptLogMs = now
      this.acceptFailures = 0
    }
    return dropping
  }

  /** A new connection: its uid is checked before anything it sends is read. */
  private admitPeer(fd: number): void {
    let cred: uffd.PeerCredentials
    try {
      cred = uffd.peerCredentials(fd)
    } catch (err) {
      uffd.closeFd(fd)
      post({ type: 'rejected', pid: 0, error: `cannot read the peer's credentials: ${(err as Error).message}` })
      return
    }
    if (!data.allowAnyUid && !data.allowUids.includes(cred.uid)) {
      this.refuseFd(fd, cred.pid, `peer uid ${cred.uid} is not allowed (allowed: ${data.allowUids.join(', ')}; see --allow-uid)`)
      return
    }
    const now = Date.now()
    this.pending.push({
      fd,
      pid: cred.pid,
      uid: cred.uid,
      gid: cred.gid,
      acceptedAtMs: now,
      deadlineMs: now + data.handshakeTimeoutMs,
      body: Buffer.alloc(0),
      fds: [],
      truncated: false,
    })
  }

  private receive(i: number): void {
    const p = this.pending[i]
    let m: uffd.ReceivedMessage
    try {
      m = this.receiver.receive(p.fd, this.scratch, 0)
    } catch (err) {
      this.refuse(i, `reading the handshake failed: ${(err as Error).message}`)
      return
    }
    if (m.bytes < 0) return
    p.fds.push(...m.fds)
    p.truncated ||= m.truncated
    if (m.bytes === 0) {
      if (p.body.length === 0) this.refuse(i, 'connection closed before a handshake')
      else this.complete(i, p.body.toString('utf8'))
      return
    }
    p.body = p.body.length === 0 ? Buffer.from(this.scratch.subarray(0, m.bytes)) : Buffer.concat([p.body, this.scratch.subarray(0, m.bytes)])
    if (p.body.length > MAX_HANDSHAKE_BYTES) {
      this.refuse(i, `handshake larger than ${MAX_HANDSHAKE_BYTES} bytes`)
      return
    }
    const body = p.body.toString('utf8')
    // Firecracker sends no terminator: the message is complete once it parses. Garbage is
    // answered at once rather than at the deadline.
    let parses = false
    try {
      JSON.parse(body)
      parses = true
    } catch {
      /* wait for more */
    }
    if (parses || cannotBecomeJson(body)) this.complete(i, body)
  }

  /** The first message is all here: check its descriptors and its body, then hand it over. */
  private complete(i: number, body: string): void {
    const p = this.pending[i]
    if (p.fds.length !== 1 || p.truncated) {
      this.refuse(
        i,
        p.fds.length === 0 && !p.truncated
          ? 'handshake carried no file descriptor (send the userfaultfd with SCM_RIGHTS)'
          : p.truncated
            ? 'handshake carried too many file descriptors (or the server ran out of descriptors receiving them); exactly one (the userfaultfd) is expected'
            : `handshake carried ${p.fds.length} file descriptors; exactly one (the userfaultfd) is expected`,
      )
      return
    }
    if (!uffd.isUserfaultfd(p.fds[0])) {
      this.refuse(i, 'the file descriptor sent is not a userfaultfd')
      return
    }
    try {
      parseHandshake(body, data)
    } catch (err) {
      if (!(err instanceof HandshakeError)) throw err
      this.refuse(i, err.message)
      return
    }
    // Taken now, from the connection (SO_PEERPIDFD names the process that connected, whatever
    // happened to its pid since); a pending handshake costs no more descriptors for it.
    const pidfd = openPeerPidfd(p.fd, p.pid)
    if (pidfd < 0 && data.needPidfd) {
      this.refuse(i, `cannot open a pidfd of the guest (pid ${p.pid}): it exited, or the server is out of descriptors; --on-unservable kill needs one`)
      return
    }
    this.pending.splice(i, 1)
    post({ type: 'guest', conn: p.fd, uffd: p.fds[0], pidfd, body, peer: { pid: p.pid, uid: p.uid, gid: p.gid }, acceptedAtMs: p.acceptedAtMs })
  }

  private expire(now: number): void {
    for (let i = this.pending.length - 1; i >= 0; i--) {
      if (now >= this.pending[i].deadlineMs) this.refuse(i, `no complete handshake within ${data.handshakeTimeoutMs} ms`)
    }
  }

  private refuse(i: number, error: string): void {
    const p = this.pending[i]
    this.pending.splice(i, 1)
    for (const f of p.fds) uffd.closeFd(f)
    this.refuseFd(p.fd, p.pid, error)
  }

  private refuseFd(fd: number, pid: number, error: string): void {
    reply(fd, { ok: false, error })
    uffd.closeFd(fd)
    post({ type: 'rejected', pid, error })
  }

  private stop(): void {
    while (this.pending.length > 0) this.refuse(this.pending.length - 1, 'server stopping')
    Atomics.store(this.pendingCounter, 0, 0)
  }
}

try {
  new Acceptor().run()
} catch (err) {
  post({ type: 'fatal', error: err instanceof Error ? err.message : String(err) })
}
