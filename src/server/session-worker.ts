// Worker-thread entry: gets ready (snapshot open from the server's descriptor, policy loaded,
// fault path rehearsed), then waits for the server to hand it a guest whose first message the
// acceptor already read and checked (GuestHandoff). It checks the guest against its own
// address space, registers its memory, acknowledges, then runs its Session. One guest per
// worker: a guest's failure or exit cannot disturb another. A guest refused here costs no
// worker start: the worker waits for the next one.
import { readFileSync } from 'node:fs'
import { parentPort, workerData } from 'node:worker_threads'
import { createPolicy } from '../policy/registry.js'
import type { FaultPolicy } from '../policy/policy.js'
import type { PageSource } from '../snapshot/page-source.js'
import { SnapshotReader } from '../snapshot/reader.js'
import { RemotePageSource } from '../store/remote-page-source.js'
import * as uffd from '../uffd/index.js'
import { checkRegionsMapped, checkRegionsRegistered, HandshakeError, parseHandshake, type Handshake } from './handshake.js'
import { Session, type TraceSink } from './session.js'
import { SessionSlot } from './session-slot.js'
import { rehearseFaultPath } from './rehearsal.js'
import { TraceRecorder } from '../trace/recorder.js'
import { tracePathForSession } from '../trace/format.js'
import type { GuestHandoff, SessionWorkerData, ToSessionWorker, WorkerMessage } from './worker-protocol.js'
import { HEAP_PROFILE_PREFIX, startHeapSampling } from './heap-profile.js'
import { DecodedCache } from '../cache/decoded-cache.js'
import { FillNotifier } from '../cache/fill-notifier.js'
import { FillQueue } from '../cache/fill-queue.js'
import { handOverCache } from './cache-handshake.js'
import type { CacheAccess } from './fill-requests.js'
import { SESSION_METER_BYTES } from './session-meters.js'
import { UsageRecorder } from './usage-recorder.js'
import { killGuest } from './unservable.js'

/** Features asked for on a uffd faultline initialises (faultline handshake form). The events
 * keep the server's view of the guest's memory true (a discarded page reads as zeros, a moved
 * one follows its address, a forked child gets its own copy: without EVENT_REMAP or
 * EVENT_FORK the kernel unregisters moved or inherited memory, which then reads as zeros);
 * POISON lets a page that fails verification raise SIGBUS instead of being served. */
export const SESSION_FEATURES =
  uffd.UFFD_FEATURE_THREAD_ID |
  uffd.UFFD_FEATURE_EVENT_REMOVE |
  uffd.UFFD_FEATURE_EVENT_UNMAP |
  uffd.UFFD_FEATURE_EVENT_REMAP |
  uffd.UFFD_FEATURE_EVENT_FORK |
  uffd.UFFD_FEATURE_POISON

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
const slot = new SessionSlot(data.slot)

class Refusal extends HandshakeError {}

function reply(fd: number, obj: object): void {
  try {
    uffd.sendBytes(fd, Buffer.from(JSON.stringify(obj) + '\n'))
  } catch {
    /* peer gone */
  }
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

/** The session's recorder when serving with --trace: session 1 writes the path, N>1 path.N. */
function openTrace(sessionId: number, pid: number, source: PageSource, regions: Handshake['regions']): TraceRecorder | undefined {
  if (!data.tracePath) return undefined
  return new TraceRecorder({
    path: tracePathForSession(data.tracePath, sessionId),
    pageSize: source.pageSize,
    snapshotPages: source.pageCount,
    sessionId,
    pid,
    policy: data.policy,
    inputs: data.traceInputs,
    regions: regions.map(r => ({ address: r.start, firstPage: r.snapshotOffset / source.pageSize, pageCount: r.lengthBytes / source.pageSize })),
  })
}

interface Admitted {
  handshake: Handshake
  canPoison: boolean
  id: number
  cacheMapped: boolean
}

/** The fill notifier, with the slot a session takes (and its eventfd) kept in this worker's
 * SessionSlot: a worker the server terminates (a stalled session) cannot release it itself, and
 * a fill worker would go on signalling a descriptor number that is not the session's any more. */
class TrackedNotifier extends FillNotifier {
  override acquire(eventFd: number): number {
    const s = super.acquire(eventFd)
    slot.holdFillSlot(eventFd, s) // -1 (no slot free): the eventfd alone is left to close
    return s
  }

  override release(s: number): void {
    super.release(s)
    slot.holdFillSlot(-1, -1)
  }
}

/** The snapshot's decoded cache, as this worker reaches it (undefined without one). */
const cacheAccess: CacheAccess | undefined =
  data.cache !== undefined && data.fills !== undefined
    ? { cache: DecodedCache.attach(data.cache), queue: new FillQueue(data.fills.queue), notifier: new TrackedNotifier(data.fills.notifier) }
    : undefined

function nextSessionId(): number {
  return Atomics.add(new Int32Array(data.sessionCounter), 0, 1) + 1
}

/** A faultline-form guest asking for the cache gets it when the server has one and can follow
 * its forks: a child the kernel left unregistered (no EVENT_FORK) would read the cache's holes
 * through its own mapping, which puts zero folios into the cache every guest reads. */
function cacheRefusal(features: number): string | undefined {
  if (cacheAccess === undefined) return 'the server has no decoded cache (--cache-memory 0, or an object-store snapshot)'
  if ((features & uffd.UFFD_FEATURE_EVENT_FORK) === 0) return "the server cannot follow the guest's forks (no EVENT_FORK without CAP_SYS_PTRACE)"
  return undefined
}

/** Checks a handed-over guest against its own address space and registers its memory. Throws
 * (a HandshakeError) to refuse it; the caller closes its descriptors. */
function admit(guest: GuestHandoff, guestUffd: uffd.Userfaultfd, source: PageSource): Admitted {
  const pid = guest.peer.pid
  const handshake = parseHandshake(guest.body, source)
  let maps: string
  try {
    maps = readFileSync(`/proc/${pid}/maps`, 'utf8')
  } catch {
    throw new Refusal(`cannot read /proc/${pid}/maps of the guest`)
  }
  checkRegionsMapped(handshake.regions, maps)
  const fdinfo = uffd.parseUffdFdinfo(readFileSync(`/proc/self/fdinfo/${guestUffd.fd}`, 'utf8'))
  let canPoison: boolean
  if (handshake.register) {
    if (fdinfo?.initialized) {
      throw new Refusal(
        'the userfaultfd sent is already initialised (UFFDIO_API); the faultline form ("register": true) wants a fresh one, ' +
          'the Firecracker form (a JSON array) a registered one',
      )
    }
    const features = negotiate(guestUffd).features
    canPoison = (features & uffd.UFFD_FEATURE_POISON) !== 0
    let id = 0
    let cacheMapped = false
    if (handshake.map === 'cache') {
      const refusal = cacheRefusal(features)
      if (refusal === undefined) {
        // The guest maps the cache over its regions; they are registered once it has.
        id = nextSessionId()
        handOverCache(guest.conn, pid, handshake.regions, cacheAccess!.cache.info, id, guest.acceptedAtMs + data.handshakeTimeoutMs, data.stopFd)
        cacheMapped = true
      } else {
        log(`pid ${pid}: serving anonymous memory instead of the decoded cache: ${refusal}`)
      }
    }
    for (const r of handshake.regions) guestUffd.register(r.start, r.lengthBytes)
    return { handshake, canPoison, id, cacheMapped }
  } else {
    // The guest chose its uffd's features: poison only if it enabled it, and say which
    // events it lacks (the kernel, not faultline, then decides what its memory reads).
    let smaps: string
    try {
      smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8')
    } catch {
      throw new Refusal(`cannot read /proc/${pid}/smaps of the guest`)
    }
    checkRegionsRegistered(handshake.regions, smaps)
    const features = fdinfo?.features ?? 0
    canPoison = (features & uffd.UFFD_FEATURE_POISON) !== 0
    const lacking = EVENT_FEATURES.filter(([bit]) => (features & bit) === 0).map(([, what]) => what)
    if (lacking.length) log(`pid ${pid}: the guest's uffd lacks ${lacking.join('; ')}`)
  }
  return { handshake, canPoison, id: 0, cacheMapped: false }
}

/** Serves one handed-over guest. Returns false when it was refused (this worker may take the
 * next one), true once its session has run (this worker then exits). */
async function serveGuest(guest: GuestHandoff, source: PageSource, policy: FaultPolicy): Promise<boolean> {
  const {
    conn,
    pidfd,
    peer: { pid },
  } = guest
  slot.hold(conn, guest.uffd, pidfd)
  const guestUffd = new uffd.Userfaultfd(guest.uffd)
  const closeAll = (trace?: TraceSink) => {
    try {
      trace?.close()
    } catch (err) {
      log(`${(err as Error).message}`)
    }
    guestUffd.close()
    uffd.closeFd(conn)
    uffd.closeFd(pidfd)
    slot.release()
  }
  let admitted: Admitted
  try {
    admitted = admit(guest, guestUffd, source)
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    reply(conn, { ok: false, error: message })
    closeAll()
    slot.idle()
    post({ type: 'rejected', pid, error: message })
    return false
  }
  const { handshake, canPoison, cacheMapped } = admitted
  const id = admitted.id || nextSessionId()
  let trace: TraceRecorder | undefined
  try {
    trace = openTrace(id, pid, source, handshake.regions)
    if (trace) slot.holdTrace(trace.fd)
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    reply(conn, { ok: false, error: message })
    closeAll()
    post({ type: 'rejected', pid, error: message })
    return true
  }
  const counters = new SharedArrayBuffer(SESSION_METER_BYTES)
  // A page neither served nor poisoned: the guest's fault would wait forever (unservable.ts).
  // Done before its uffd is let go: a forked child's before the server releases the child's
  // uffd (whose waiting faults would then read zeros).
  let killed = false
  const failClosed = (forkedChild: boolean, why: string) => {
    if (data.onUnservable !== 'kill' || killed) return
    killed = true
    log(`session ${id}: ${why}; the guest's uffd cannot poison it: ${killGuest(pidfd, pid, forkedChild)} (--on-unservable kill)`)
  }
  const session = new Session({
    uffd: guestUffd,
    connectionFd: conn,
    stopFd: data.stopFd,
    source,
    policy,
    regions: handshake.regions,
    trace,
    canPoison,
    heartbeat: slot.words,
    cacheAccess,
    cacheMapped,
    counters,
    usage: data.learn ? new UsageRecorder(source.pageCount, source.pageSize, cacheMapped ? pid : 0) : undefined,
    log: line => log(`session ${id}: ${line}`),
    failClosed,
  })
  try {
    session.start()
    const map = cacheMapped ? 'cache' : 'anonymous'
    reply(
      conn,
      handshake.form === 'faultline'
        ? { ok: true, session: id, pageSize: source.pageSize, map, ...(cacheMapped ? { folioBytes: cacheAccess!.cache.folioBytes } : {}) }
        : { ok: true, session: id, pageSize: source.pageSize },
    )
    post({
      type: 'session',
      id,
      pid,
      form: handshake.form,
      map,
      canPoison,
      counters,
      regions: handshake.regions.length,
      bytes: handshake.regions.reduce((s, r) => s + r.lengthBytes, 0),
    })
    const sampling = HEAP_PROFILE_PREFIX !== undefined ? await startHeapSampling() : undefined
    const retainedBefore = retainedBytes()
    slot.serving()
    const stats = session.run()
    slot.doneServing()
    if (session.unservable) failClosed(false, stats.endReason)
    const retained = retainedBefore === undefined ? undefined : retainedBytes()! - retainedBefore
    await sampling?.stop(`${HEAP_PROFILE_PREFIX}.${id}.heapprofile`)
    // A session the server ended (snapshot error, server stopping...) says why on the
    // connection before closing it: the guest's watchdog prints it.
    if (!GUEST_ENDS.has(stats.endReason)) reply(conn, { ok: false, error: stats.endReason })
    closeAll(trace)
    post({ type: 'ended', id, pid, stats, retainedBytes: retained })
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    reply(conn, { ok: false, error: message })
    closeAll(trace)
    post({ type: 'ended', id, pid, error: message, stats: undefined })
  }
  return true
}

/** What this worker's isolate holds once collected (heap objects and ArrayBuffers, Buffers
 * included): only where the process exposes gc (tests set --expose-gc), else undefined. */
function retainedBytes(): number | undefined {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) return undefined
  gc()
  const m = process.memoryUsage()
  return m.heapUsed + m.arrayBuffers
}

function nextMessage(): Promise<ToSessionWorker> {
  return new Promise(resolve => parentPort!.once('message', resolve))
}

async function main(): Promise<void> {
  // A replacement worker gets ready in SCHED_IDLE (the server created it so): its start-up
  // must not slow the guests being served. It is raised before it may take a guest.
  const startIdle = data.startIdle === true
  // A remote snapshot is read through the server's chunk store (its disk cache, and
  // requests for what is not there yet); a local one through the server's own descriptor.
  const source: PageSource =
    data.remote !== undefined
      ? new RemotePageSource(data.remote, data.readyFd!, m => parentPort!.postMessage(m))
      : SnapshotReader.fromDescriptor(data.snapshotFd, data.snapshotPath)
  try {
    const policy = await createPolicy(data.policy, data.cwd, source)
    rehearseFaultPath(source)
    if (startIdle) uffd.setThreadIdle(0, false)
    for (;;) {
      post({ type: 'idle' })
      const m = await nextMessage()
      if (m.type === 'exit') return
      if (await serveGuest(m, source, policy)) return
    }
  } finally {
    source.close()
  }
}

main().catch(err => {
  post({ type: 'fatal', error: err instanceof Error ? err.message : String(err) })
})
