// Worker-thread entry: waits (pre-warmed, snapshot open) for a guest to connect, reads and
// checks its handshake, registers its memory, acknowledges, then runs its Session. One
// guest per worker: a guest's failure or exit cannot disturb another.
import { readFileSync } from 'node:fs'
import { parentPort, workerData } from 'node:worker_threads'
import { createPolicy } from '../policy/registry.js'
import { SnapshotReader } from '../snapshot/reader.js'
import * as uffd from '../uffd/index.js'
import { checkRegionsMapped, HandshakeError, MAX_HANDSHAKE_BYTES, parseHandshake, type Handshake } from './handshake.js'
import { Session, type TraceSink } from './session.js'
import type { WorkerMessage, SessionWorkerData } from './worker-protocol.js'

/** Features asked for on a uffd faultline initialises (faultline handshake form). */
export const SESSION_FEATURES =
  uffd.UFFD_FEATURE_THREAD_ID | uffd.UFFD_FEATURE_EVENT_REMOVE | uffd.UFFD_FEATURE_EVENT_UNMAP |
  uffd.UFFD_FEATURE_EVENT_REMAP | uffd.UFFD_FEATURE_POISON

const data = workerData as SessionWorkerData
const post = (m: WorkerMessage) => parentPort!.postMessage(m)
const log = (line: string) => post({ type: 'log', line })

class Refusal extends HandshakeError {}

function reply(fd: number, obj: object): void {
  try { uffd.sendBytes(fd, Buffer.from(JSON.stringify(obj) + '\n')) } catch { /* peer gone */ }
}

/** Reads the single handshake message (body + descriptors) within the deadline. */
function readHandshake(fd: number): { body: string; fds: number[]; truncated: boolean } {
  const buf = Buffer.alloc(MAX_HANDSHAKE_BYTES + 1)
  const receiver = new uffd.MessageReceiver()
  const poll = new uffd.PollSet(2)
  poll.set(0, fd, uffd.POLLIN)
  poll.set(1, data.stopFd, uffd.POLLIN)
  const deadline = Date.now() + data.handshakeTimeoutMs
  let length = 0
  const fds: number[] = []
  let truncated = false
  for (;;) {
    const left = deadline - Date.now()
    if (left <= 0) throw new Refusal(`no complete handshake within ${data.handshakeTimeoutMs} ms`, { cause: fds })
    poll.wait(left)
    if (poll.revents(1)) throw new Refusal('server stopping', { cause: fds })
    if (!poll.revents(0)) continue
    const m = receiver.receive(fd, buf, length)
    if (m.bytes < 0) continue
    fds.push(...m.fds)
    truncated ||= m.truncated
    if (m.bytes === 0) {
      if (length === 0) throw new Refusal('connection closed before a handshake', { cause: fds })
      return { body: buf.toString('utf8', 0, length), fds, truncated }
    }
    length += m.bytes
    if (length > MAX_HANDSHAKE_BYTES) throw new Refusal(`handshake larger than ${MAX_HANDSHAKE_BYTES} bytes`, { cause: fds })
    const body = buf.toString('utf8', 0, length)
    // Firecracker sends no terminator: the message is complete once it parses.
    try { JSON.parse(body); return { body, fds, truncated } } catch { /* wait for more */ }
  }
}

function openTrace(_sessionId: number): TraceSink | undefined {
  return undefined
}

async function main(): Promise<void> {
  const source = SnapshotReader.open(data.snapshotPath)
  const policy = await createPolicy(data.policy, data.cwd)
  post({ type: 'idle' })
  const poll = new uffd.PollSet(3)
  poll.set(0, data.listenFd, uffd.POLLIN)
  poll.set(1, data.stopFd, uffd.POLLIN)
  poll.set(2, data.stopAcceptFd, uffd.POLLIN)
  let conn = -1
  while (conn < 0) {
    poll.wait(-1)
    if (poll.revents(1) || poll.revents(2)) { source.close(); return }
    if (poll.revents(0)) conn = uffd.acceptConnection(data.listenFd)
  }
  post({ type: 'accepted' })
  let guestUffd: uffd.Userfaultfd | undefined
  let handshake: Handshake | undefined
  let pid = 0
  let canPoison = false
  try {
    const cred = uffd.peerCredentials(conn)
    pid = cred.pid
    if (!data.allowAnyUid && !data.allowUids.includes(cred.uid)) {
      throw new Refusal(`peer uid ${cred.uid} is not allowed (allowed: ${data.allowUids.join(', ')}; see --allow-uid)`)
    }
    let received: ReturnType<typeof readHandshake>
    try {
      received = readHandshake(conn)
    } catch (err) {
      for (const f of ((err as Error).cause as number[] | undefined) ?? []) uffd.closeFd(f)
      throw err
    }
    const { body, fds, truncated } = received
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
    handshake = parseHandshake(body, source)
    let maps: string
    try { maps = readFileSync(`/proc/${pid}/maps`, 'utf8') } catch { throw new Refusal(`cannot read /proc/${pid}/maps of the guest`) }
    checkRegionsMapped(handshake.regions, maps)
    if (handshake.register) {
      const api = guestUffd.api(SESSION_FEATURES)
      canPoison = (api.features & uffd.UFFD_FEATURE_POISON) !== 0
      for (const r of handshake.regions) guestUffd.register(r.start, r.lengthBytes)
    }
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    reply(conn, { ok: false, error: message })
    post({ type: 'rejected', pid, error: message })
    guestUffd?.close()
    uffd.closeFd(conn)
    source.close()
    return
  }
  const id = Atomics.add(new Int32Array(data.sessionCounter), 0, 1) + 1
  const session = new Session({
    uffd: guestUffd, connectionFd: conn, stopFd: data.stopFd, source, policy,
    regions: handshake.regions, trace: openTrace(id), canPoison,
    log: line => log(`session ${id}: ${line}`),
  })
  try {
    session.start()
    reply(conn, { ok: true, session: id, pageSize: source.pageSize })
    post({
      type: 'session', id, pid, form: handshake.form,
      regions: handshake.regions.length, bytes: handshake.regions.reduce((s, r) => s + r.lengthBytes, 0),
    })
    const stats = session.run()
    post({ type: 'ended', id, pid, stats })
  } catch (err) {
    post({ type: 'ended', id, pid, error: err instanceof Error ? err.message : String(err), stats: undefined })
  } finally {
    guestUffd.close()
    uffd.closeFd(conn)
    source.close()
  }
}

main().catch(err => {
  post({ type: 'fatal', error: err instanceof Error ? err.message : String(err) })
})
