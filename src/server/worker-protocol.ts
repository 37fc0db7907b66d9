// Messages between the page server (main thread) and its session workers.
import type { RemoteWorkerData } from '../store/chunk-store.js'
import type { StoreRequest } from '../store/remote-page-source.js'
import type { SessionStats } from './session.js'

export interface SessionWorkerData {
  listenFd: number
  /** eventfd the server signals (and never drains) to stop every worker. */
  stopFd: number
  /** eventfd signalled to stop workers that are still waiting for a guest. */
  stopAcceptFd: number
  snapshotPath: string
  policy: string
  cwd: string
  tracePath?: string
  traceModule?: string
  allowUids: number[]
  allowAnyUid: boolean
  handshakeTimeoutMs: number
  /** Int32 session counter shared by all workers. */
  sessionCounter: SharedArrayBuffer
  /** Set when the snapshot is in an object store (snapshotPath is its s3:// URL). */
  remote?: RemoteWorkerData
  /** Remote snapshots: this worker's eventfd, signalled by the chunk store when a chunk it
   * asked for arrives (the server owns it and closes it after the worker exits). */
  readyFd?: number
  /** Created in SCHED_IDLE (a replacement worker, started while guests are being served):
   * the worker returns to SCHED_OTHER once ready, before it may accept a guest. */
  startIdle?: boolean
}

export type WorkerMessage =
  | { type: 'idle' }
  | { type: 'accepted' }
  | { type: 'log'; line: string }
  | { type: 'rejected'; pid: number; error: string }
  | { type: 'session'; id: number; pid: number; form: string; regions: number; bytes: number }
  | { type: 'ended'; id: number; pid: number; stats?: SessionStats; error?: string }
  | { type: 'fatal'; error: string }
  | StoreRequest
