// What the fill pool gives its workers and what they say back.
import type { DecodedCacheInfo } from './decoded-cache.js'
import type { FillNotifierBuffers } from './fill-notifier.js'
import type { FillQueueBuffers } from './fill-queue.js'
import type { RemoteWorkerData } from '../store/chunk-store.js'
import type { StoreRequest } from '../store/remote-page-source.js'

export interface FillWorkerData {
  index: number
  snapshotPath: string
  /** The server's descriptor of the snapshot (-1: open snapshotPath). */
  snapshotFd: number
  cache: DecodedCacheInfo
  queue: FillQueueBuffers
  notifier: FillNotifierBuffers
  /** Float64 rows of FILL_STAT_FIELDS, one a worker. */
  stats: SharedArrayBuffer
  /** An object-store snapshot: read through the chunk store (chunks asked for by message), and
   * this worker's eventfd, signalled when a chunk it asked for is in. */
  remote?: RemoteWorkerData
  readyFd?: number
}

export type FillWorkerMessage =
  | StoreRequest
  | { type: 'unservable'; folio: number; error: string }
  | { type: 'done' }
  | { type: 'ready' }
  | { type: 'fatal'; error: string }

/** Per worker row: folios filled, by priority (fault, prefetch, background), stored bytes read,
 * ms spent filling. */
export const S_FOLIOS = 0,
  S_FOLIOS_BY_PRIORITY = 1,
  S_BYTES_READ = 4,
  S_BUSY_MS = 5
export const FILL_STAT_FIELDS = 6
