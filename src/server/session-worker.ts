// Worker-thread entry: waits (pre-warmed, snapshot open) for a guest to connect, reads and
// checks its handshake, registers its memory, acknowledges, then runs its Session. One
// guest per worker: a guest's failure or exit cannot disturb another.
import { readFileSync } from 'node:fs'
import { parentPort, workerData } from 'node:worker_threads'
import { createPolicy } from '../policy/registry.js'
import type { PageSource } from '../snapshot/page-source.js'
import { SnapshotReader } from '../snapshot/reader.js'
import { RemotePageSource } from '../store/remote-page-source.js'
import * as uffd from '../uffd/index.js'
import {
  cannotBecomeJson, checkRegionsMapped, checkRegionsRegistered, HandshakeError, MAX_HANDSHAKE_BYTES, parseHandshake,
  type Handshake,
} from './handshake.js'
import { Session, type TraceSink } from './session.js'
import { rehearseFaultPath } from './rehearsal.js'
import { TraceRecorder } from '../trace/recorder.js'
import { tracePathForSession } from '../trace/format.js'
import type { WorkerMessage, SessionWorkerData } from './worker-protocol.js'
import { HEAP_PROFILE_PREFIX, startHeapSampling } from './heap-profile.js'

/** Features asked for on a uffd faultline initialises (faultline handshake form). The events
 * keep the server's view of the guest's memory true (a discarded page reads as zeros, a moved
 * one follows its address, a forked child gets its own copy: without EVENT_REMAP or
 * EVENT_FORK the kernel unregisters moved or inherited memory, which then reads as zeros);
 * POISON lets a page that fails verification raise SIGBUS instead of being served. */
export const SESSION_FEATURES =
  uffd.UFFD_FEATURE_THREAD_ID | uffd.UFFD_FEATURE_EVENT_REMOVE | uffd.UFFD_FEATURE_EVENT_UNMAP |
  uffd.UFFD_FEATURE_EVENT_REMAP | uffd.UFFD_FEATURE_EVENT_FORK | uffd.UFFD_FEATURE_POISON

/** Events a guest's uffd needs for its memory to stay right when it changes its mappings. */
const EVENT_FEATURES: ReadonlyArray<readonly [number, string]> = [
  [uffd.UFFD_FEATURE_EVENT_REMOVE, 'EVENT_REMOVE (pages it discards before they were served would read as the snapshot, not zeros)'],
  [uffd.UFFD_FEATURE_EVENT_REMAP, 'EVENT_REMAP (pages it moves with mremap and that were not served yet would read as zeros)'],
  [uffd.UFFD_FEATURE_EVENT_FORK, 'EVENT_FORK (a child it forks would read zeros for pages not served yet)'],
]

/** How a session ended when the guest itself ended it; any other end is told to the guest. */
const GUEST_ENDS = new Set(['guest disconnected', 'guest exited'])

const data = workerData as SessionWorkerData
const post = (m: WorkerMessage) => parentPort!.postMessage(m)
const log = (line: string) => post({ type: 'log', line })

class Refusal extends HandshakeError {}

function reply(fd: number, obj: object): void {
  try { uffd.sendBytes(fd, Buffer.from(JSON.stringify(obj) + '\n')) } catch { /* peer gone */ }
}

/** UFFDIO_API with SESSION_FEATURES. EVENT_FORK needs CAP_SYS_PTRACE in the server: without
 * it the rest is enabled and the log says what a forking guest then gets. */
function negotiate(guestUffd: uffd.Userfaultfd): uffd.ApiResult {
  try {
    return guestUffd.api(SESSION_FEATURES)
  } catch (err) {
    if (!(err instanceof uffd.UffdError) || err.errno !== uffd.EPERM) throw err
    log('UFFDIO_API refused EVENT_FORK (the server lacks CAP_SYS_PTRACE): a child the guest forks will read zeros for pages not served yet')
    return guestUffd.api(SESSION_FEATURES & ~uffd.UFFD_FEATURE_EVENT_FORK)
  }
}

/** Reads the single handshake message (body + descriptors) within the deadline. Any
 * descriptor received is closed if it throws. */
function readHandshake(fd: number): { body: string; fds: number[]; truncated: boolean } {
  const fds: number[] = []
  try {
    return receiveHandshake(fd, fds)
  } catch (err) {
    for (const f of fds) uffd.closeFd(f)
    throw err
  }
}

function receiveHandshake(fd: number, fds: number[]): { body: string; fds: number[]; truncated: boolean } {
  const buf = Buffer.alloc(MAX_HANDSHAKE_BYTES + 1)
  const receiver = new uffd.MessageReceiver()
  const poll = new uffd.PollSet(2)
  poll.set(0, fd, uffd.POLLIN)
  poll.set(1, data.stopFd, uffd.POLLIN)
  const deadline = Date.now() + data.handshakeTimeoutMs
  let length = 0
  let truncated = false
  for (;;) {
    const left = deadline - Date.now()
    if (left <= 0) throw new Refusal(`no complete handshake within ${data.handshakeTimeoutMs} ms`)
    poll.wait(left)
    if (poll.revents(1)) throw new Refusal('server stopping')
    if (!poll.revents(0)) continue
    const m = receiver.receive(fd, buf, length)
    if (m.bytes < 0) continue
    fds.push(...m.fds)
    truncated ||= m.truncated
    if (m.bytes === 0) {
      if (length === 0) throw new Refusal('connection closed before a handshake')
      return { body: buf.toString('utf8', 0, length), fds, truncated }
    }
    length += m.bytes
    if (length > MAX_HANDSHAKE_BYTES) throw new Refusal(`handshake larger than ${MAX_HANDSHAKE_BYTES} bytes`)
    const body = buf.toString('utf8', 0, length)
    // Firecracker sends no terminator: the message is complete once it parses. Garbage is
    // answered at once rather than at the deadline.
    try { JSON.parse(body); return { body, fds, truncated } } catch { /* wait for more */ }
    if (cannotBecomeJson(body)) return { body, fds, truncated }
  }
}

/** The session's recorder when serving with --trace: session 1 writes the path, N>1 path.N. */
function openTrace(sessionId: number, pid: number, source: PageSource, regions: Handshake['regions']): TraceSink | undefined {
  if (!data.tracePath) return undefined
  return new TraceRecorder({
    path: tracePathForSession(data.tracePath, sessionId), pageSize: source.pageSize, snapshotPages: source.pageCount,
    sessionId, pid, policy: data.policy,
    regions: regions.map(r => ({ address: r.start, firstPage: r.snapshotOffset / source.pageSize, pageCount: r.lengthBytes / source.pageSize })),
  })
}

interface Admitted { guestUffd: uffd.Userfaultfd; handshake: Handshake; pid: number; canPoison: boolean }

/** Checks a connected peer and its handshake and registers its memory. Throws to refuse it,
 * having closed whatever descriptor it sent; `peer.pid` is set as soon as it is known. */
function admit(conn: number, source: PageSource, peer: { pid: number }): Admitted {
  let guestUffd: uffd.Userfaultfd | undefined
  let canPoison = false
  try {
    const cred = uffd.peerCredentials(conn)
    const pid = peer.pid = cred.pid
    if (!data.allowAnyUid && !data.allowUids.includes(cred.uid)) {
      throw new Refusal(`peer uid ${cred.uid} is not allowed (allowed: ${data.allowUids.join(', ')}; see --allow-uid)`)
    }
    const { body, fds, truncated } = readHandshake(conn)
    if (fds.length !== 1 || truncated) {
      for (const f of fds) uffd.closeFd(f)
      throw new Refusal(fds.length === 0 && !truncated
        ? 'handshake carried no file descriptor (send the userfaultfd with SCM_RIGHTS)'
        : `handshake carried ${truncated ? 'too many' : fds.length} file descriptors; exactly one (the userfaultfd) is expected`)
    }
    if (!uffd.isUserfaultfd(fds[0])) {
      uffd.closeFd(fds[0])
      throw new Refusal('the file descriptor sent is not a userfaultfd')
    }
    guestUffd = new uffd.Userfaultfd(fds[0])
    const handshake = parseHandshake(body, source)
    let maps: string
    try { maps = readFileSync(`/proc/${pid}/maps`, 'utf8') } catch { throw new Refusal(`cannot read /proc/${pid}/maps of the guest`) }
    checkRegionsMapped(handshake.regions, maps)
    const fdinfo = uffd.parseUffdFdinfo(readFileSync(`/proc/self/fdinfo/${guestUffd.fd}`, 'utf8'))
    if (handshake.register) {
      if (fdinfo?.initialized) {
        throw new Refusal('the userfaultfd sent is already initialised (UFFDIO_API); the faultline form ("register": true) wants a fresh one, ' +
          'the Firecracker form (a JSON array) a registered one')
      }
      canPoison = (negotiate(guestUffd).features & uffd.UFFD_FEATURE_POISON) !== 0
      for (const r of handshake.regions) guestUffd.register(r.start, r.lengthBytes)
    } else {
      // The guest chose its uffd's features: poison only if it enabled it, and say which
      // events it lacks (the kernel, not faultline, then decides what its memory reads).
      let smaps: string
      try { smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8') } catch { throw new Refusal(`cannot read /proc/${pid}/smaps of the guest`) }
      checkRegionsRegistered(handshake.regions, smaps)
      const features = fdinfo?.features ?? 0
      canPoison = (features & uffd.UFFD_FEATURE_POISON) !== 0
      const lacking = EVENT_FEATURES.filter(([bit]) => (features & bit) === 0).map(([, what]) => what)
      if (lacking.length) log(`pid ${pid}: the guest's uffd lacks ${lacking.join('; ')}`)
    }
    return { guestUffd, handshake, pid, canPoison }
  } catch (err) {
    guestUffd?.close()
    throw err
  }
}

async function main(): Promise<void> {
  // A replacement worker gets ready in SCHED_IDLE (the server created it so): its start-up
  // must not slow the guests being served. It is raised before it may accept a guest.
  const startIdle = data.startIdle === true
  // A remote snapshot is read through the server's chunk store (its disk cache, and
  // requests for what is not there yet); a local one straight from the file.
  const source: PageSource = data.remote !== undefined
    ? new RemotePageSource(data.remote, data.readyFd!, m => parentPort!.postMessage(m))
    : SnapshotReader.open(data.snapshotPath)
  const policy = await createPolicy(data.policy, data.cwd)
  rehearseFaultPath(source)
  if (startIdle) uffd.setThreadIdle(0, false)
  const poll = new uffd.PollSet(3)
  poll.set(0, data.listenFd, uffd.POLLIN)
  poll.set(1, data.stopFd, uffd.POLLIN)
  poll.set(2, data.stopAcceptFd, uffd.POLLIN)
  let conn = -1
  let admitted: Admitted | undefined
  const peer = { pid: 0 }
  while (admitted === undefined) {
    post({ type: 'idle' })
    conn = -1
    while (conn < 0) {
      poll.wait(-1)
      if (poll.revents(1) || poll.revents(2)) { source.close(); return }
      if (poll.revents(0)) conn = uffd.acceptConnection(data.listenFd)
    }
    post({ type: 'accepted' })
    peer.pid = 0
    try {
      admitted = admit(conn, source, peer)
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err)
      reply(conn, { ok: false, error: message })
      post({ type: 'rejected', pid: peer.pid, error: message })
      uffd.closeFd(conn)
      // A refused client costs no worker start: this one waits for the next connection.
    }
  }
  const { guestUffd, handshake, pid, canPoison } = admitted
  const id = Atomics.add(new Int32Array(data.sessionCounter), 0, 1) + 1
  let trace: TraceSink | undefined
  try {
    trace = openTrace(id, pid, source, handshake.regions)
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    reply(conn, { ok: false, error: message })
    post({ type: 'rejected', pid, error: message })
    guestUffd.close()
    uffd.closeFd(conn)
    source.close()
    return
  }
  const session = new Session({
    uffd: guestUffd, connectionFd: conn, stopFd: data.stopFd, source, policy,
    regions: handshake.regions, trace, canPoison,
    log: line => log(`session ${id}: ${line}`),
  })
  try {
    session.start()
    reply(conn, { ok: true, session: id, pageSize: source.pageSize })
    post({
      type: 'session', id, pid, form: handshake.form,
      regions: handshake.regions.length, bytes: handshake.regions.reduce((s, r) => s + r.lengthBytes, 0),
    })
    const sampling = HEAP_PROFILE_PREFIX !== undefined ? await startHeapSampling() : undefined
    const stats = session.run()
    await sampling?.stop(`${HEAP_PROFILE_PREFIX}.${id}.heapprofile`)
    // A session the server ended (snapshot error, server stopping...) says why on the
    // connection before closing it: the guest's watchdog prints it.
    if (!GUEST_ENDS.has(stats.endReason)) reply(conn, { ok: false, error: stats.endReason })
    post({ type: 'ended', id, pid, stats })
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    reply(conn, { ok: false, error: message })
    post({ type: 'ended', id, pid, error: message, stats: undefined })
  } finally {
    try { trace?.close() } catch (err) { log(`session ${id}: ${(err as Error).message}`) }
    guestUffd.close()
    uffd.closeFd(conn)
    source.close()
  }
}

main().catch(err => {
  post({ type: 'fatal', error: err instanceof Error ? err.message : String(err) })
})
