// Fill worker entry: takes folio requests from the shared queue, highest priority first,
// decodes each whole folio from the snapshot and writes it into the decoded cache, then tells
// waiting sessions. Several run per snapshot, so decoding uses every core and reads go to
// storage several at a time; the threads serving faults never wait for one. From an object
// store, a folio whose chunks are not local yet is asked for and set aside while the worker
// goes on, so several GETs are in flight per worker.
import { parentPort, workerData } from 'node:worker_threads'
import type { PageSource } from '../snapshot/page-source.js'
import { SnapshotReader } from '../snapshot/reader.js'
import { RemotePageSource } from '../store/remote-page-source.js'
import * as uffd from '../uffd/index.js'
import { DecodedCache } from './decoded-cache.js'
import { FillNotifier } from './fill-notifier.js'
import { FillQueue } from './fill-queue.js'
import { FILL_STAT_FIELDS, S_BUSY_MS, S_BYTES_READ, S_FOLIOS, S_FOLIOS_BY_PRIORITY, type FillWorkerData, type FillWorkerMessage } from './fill-protocol.js'

const data = workerData as FillWorkerData
const post = (m: FillWorkerMessage) => parentPort!.postMessage(m)

/** How long an idle worker sleeps before looking at the queue again without a push. */
const IDLE_WAIT_MS = 1000
/** Folios one worker keeps waiting for their chunks at once, and how often it looks at them
 * when nothing else wakes it. */
const MAX_PARKED = 16
const PARKED_POLL_MS = 5

function openSource(): PageSource {
  if (data.remote !== undefined) return new RemotePageSource(data.remote, data.readyFd!, m => post(m))
  return data.snapshotFd >= 0 ? SnapshotReader.fromDescriptor(data.snapshotFd, data.snapshotPath) : SnapshotReader.open(data.snapshotPath)
}

function main(): void {
  const cache = DecodedCache.attach(data.cache)
  const queue = new FillQueue(data.queue)
  const notifier = new FillNotifier(data.notifier)
  const stats = new Float64Array(data.stats)
  const row = data.index * FILL_STAT_FIELDS
  const source = openSource()
  const remote = source instanceof RemotePageSource ? source : undefined
  const staging = Buffer.allocUnsafeSlow(cache.folioBytes)
  const priority = new Int32Array(1)
  /** Claimed folios waiting for chunks, and the priority each was asked at. */
  const parked: number[] = []
  const parkedPriority: number[] = []
  const poll = new uffd.PollSet(1)
  if (remote !== undefined) poll.set(0, remote.readyFd, uffd.POLLIN)

  const fill = (folio: number, p: number): boolean => {
    const t0 = performance.now()
    const read0 = source.bytesRead ?? 0
    const outcome = cache.fillClaimed(folio, source, staging)
    if (outcome === 'not-local') return false
    if (outcome === 'filled') {
      stats[row + S_FOLIOS]++
      stats[row + S_FOLIOS_BY_PRIORITY + p]++
      stats[row + S_BYTES_READ] += (source.bytesRead ?? 0) - read0
      stats[row + S_BUSY_MS] += performance.now() - t0
    } else if (outcome === 'unservable') {
      post({ type: 'unservable', folio, error: cache.lastError?.message ?? 'unknown error' })
    }
    notifier.notifyArmed()
    return true
  }

  /** Fills the parked folios whose chunks came; gives back those that cannot be had. */
  const retryParked = (): void => {
    remote!.drainReady()
    for (let k = parked.length - 1; k >= 0; k--) {
      const folio = parked[k]
      const first = cache.firstPageOf(folio),
        count = cache.pagesIn(folio)
      let done = remote!.failure(first, count) !== undefined
      if (done)
        cache.release(folio) // a session faulting there gets the store's error itself
      else if (remote!.availablePages(first, count) === count) done = fill(folio, parkedPriority[k])
      else remote!.request(first, count, parkedPriority[k])
      if (done) {
        parked.splice(k, 1)
        parkedPriority.splice(k, 1)
      }
    }
  }

  try {
    post({ type: 'ready' })
    for (;;) {
      const seen = queue.sequence()
      if (queue.stopped) return
      if (parked.length > 0) retryParked()
      const folio = parked.length < MAX_PARKED ? queue.pop(priority) : -1
      if (folio >= 0) {
        if (!cache.claim(folio)) continue // filled, or taken, since it was asked for
        const first = cache.firstPageOf(folio),
          count = cache.pagesIn(folio)
        if (remote === undefined || remote.availablePages(first, count) === count) {
          if (fill(folio, priority[0])) continue
        }
        remote!.request(first, count, priority[0])
        parked.push(folio)
        parkedPriority.push(priority[0])
        continue
      }
      if (parked.length > 0) poll.wait(PARKED_POLL_MS)
      else queue.wait(seen, IDLE_WAIT_MS)
    }
  } finally {
    for (const folio of parked) cache.release(folio)
    source.close()
  }
}

try {
  main()
  post({ type: 'done' })
} catch (err) {
  post({ type: 'fatal', error: err instanceof Error ? err.message : String(err) })
}
