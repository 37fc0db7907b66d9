// Messages between the page server (main thread), its acceptor thread and its session workers.
import type { DecodedCacheInfo } from '../cache/decoded-cache.js'
import type { FillSessionData } from '../cache/fill-pool.js'
import type { RemoteWorkerData } from '../store/chunk-store.js'
import type { StoreRequest } from '../store/remote-page-source.js'
import type { FileIdentity } from '../util/output-file.js'
import type { SessionStats } from './session.js'
import type { UnservableAction } from './unservable.js'

/** What the acceptor thread needs: the listening socket, and enough of the snapshot to check a
 * handshake (parseHandshake is pure). */
export interface AcceptorData {
  listenFd: number
  /** eventfd the server signals to stop the acceptor. */
  stopFd: number
  pageSize: number
  pageCount: number
  allowUids: number[]
  allowAnyUid: boolean
  handshakeTimeoutMs: number
  /** Connections whose first message is still awaited, at most. */
  maxPending: number
  /** Int32 [pending handshakes]: kept current by the acceptor, read by the server. */
  pendingCounter: SharedArrayBuffer
  /** `--on-unservable kill`: a guest whose pidfd cannot be opened is refused (it could not be
   * failed closed). */
  needPidfd: boolean
}

/** A guest whose first message arrived and parsed: everything a session worker needs to go on.
 * The descriptors are numbers in the process's one table; whoever holds the message owns them
 * (closes them when done). This is the whole hand-off: a worker that speaks a longer
 * handshake (a second exchange after the first message) continues on `conn` from here. */
export interface GuestHandoff {
  type: 'guest'
  /** The guest's connection (non-blocking). */
  conn: number
  /** The one descriptor the first message carried (checked to be a userfaultfd). */
  uffd: number
  /** A pidfd of the guest process (unservable.ts openPeerPidfd), -1 where none could be
   * opened: what `--on-unservable kill` signals. */
  pidfd: number
  /** The first message, as received (it parses with parseHandshake). */
  body: string
  peer: { pid: number; uid: number; gid: number }
  /** When the connection was accepted (Date.now()): the handshake deadline counts from it. */
  acceptedAtMs: number
}

export type AcceptorMessage =
  | { type: 'listening' }
  | GuestHandoff
  | { type: 'rejected'; pid: number; error: string }
  | { type: 'log'; line: string }
  | { type: 'fatal'; error: string }

export interface SessionWorkerData {
  /** eventfd the server signals (and never drains) to stop every session. */
  stopFd: number
  snapshotPath: string
  /** The server's descriptor of a local snapshot, kept open for its lifetime (a file removed
   * meanwhile stays readable); -1 for an object-store snapshot. */
  snapshotFd: number
  policy: string
  cwd: string
  tracePath?: string
  /** Files a session's trace must never overwrite (the snapshot, the policy's inputs). */
  traceInputs: FileIdentity[]
  handshakeTimeoutMs: number
  /** Int32 session counter shared by all workers. */
  sessionCounter: SharedArrayBuffer
  /** This worker's slot (session-slot.ts): heartbeat, state and descriptors, shared with the
   * server's main thread. */
  slot: SharedArrayBuffer
  /** Set when the snapshot is in an object store (snapshotPath is its s3:// URL). */
  remote?: RemoteWorkerData
  /** Remote snapshots: this worker's eventfd, signalled by the chunk store when a chunk it
   * asked for arrives (the server owns it and closes it after the worker exits). */
  readyFd?: number
  /** Created in SCHED_IDLE (a replacement worker, started while guests are being served):
   * the worker returns to SCHED_OTHER once ready, before it may take a guest. */
  startIdle?: boolean
  /** The snapshot's decoded cache and its fill workers' queue, when the server has them. */
  cache?: DecodedCacheInfo
  fills?: FillSessionData
  /** serve --learn: sessions record the pages their guest used. */
  learn?: boolean
  /** What happens to a guest whose page can be neither served nor poisoned. */
  onUnservable: UnservableAction
}

/** Server -> session worker: a guest to serve, or stop (an idle worker released). */
export type ToSessionWorker = GuestHandoff | { type: 'exit' }

export type WorkerMessage =
  | { type: 'idle' }
  | { type: 'log'; line: string }
  | { type: 'rejected'; pid: number; error: string }
  | {
      type: 'session'
      id: number
      pid: number
      form: string
      regions: number
      bytes: number
      map: 'anonymous' | 'cache'
      /** Whether its uffd can poison a page (else a fault it cannot serve is failed closed by
       * ending the guest, --on-unservable kill). */
      canPoison: boolean
      /** The session's live counters (session-meters.ts COUNTER_SLOTS). */
      counters: SharedArrayBuffer
    }
  | {
      type: 'ended'
      id: number
      pid: number
      stats?: SessionStats
      error?: string
      /** What the worker held after its session, less before it, once collected (with gc exposed). */
      retainedBytes?: number
    }
  | { type: 'fatal'; error: string }
  | StoreRequest
