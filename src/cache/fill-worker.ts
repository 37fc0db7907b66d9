// Fill worker entry: takes folio requests from the shared queue, highest priority first,
// decodes each whole folio from the snapshot and writes it into the decoded cache, then tells
// waiting sessions. Several run per snapshot, so decoding uses every core and reads go to
// storage several at a time; the threads serving faults never wait for one.
import { parentPort, workerData } from 'node:worker_threads'
import { SnapshotReader } from '../snapshot/reader.js'
import { DecodedCache } from './decoded-cache.js'
import { FillNotifier } from './fill-notifier.js'
import { FillQueue } from './fill-queue.js'
import { FILL_STAT_FIELDS, S_BUSY_MS, S_BYTES_READ, S_FOLIOS, S_FOLIOS_BY_PRIORITY, type FillWorkerData, type FillWorkerMessage } from './fill-protocol.js'

const data = workerData as FillWorkerData
const post = (m: FillWorkerMessage) => parentPort!.postMessage(m)

/** How long an idle worker sleeps before looking at the queue again without a push. */
const IDLE_WAIT_MS = 1000

function main(): void {
  const cache = DecodedCache.attach(data.cache)
  const queue = new FillQueue(data.queue)
  const notifier = new FillNotifier(data.notifier)
  const stats = new Float64Array(data.stats)
  const row = data.index * FILL_STAT_FIELDS
  const source = data.snapshotFd >= 0 ? SnapshotReader.fromDescriptor(data.snapshotFd, data.snapshotPath) : SnapshotReader.open(data.snapshotPath)
  const staging = Buffer.allocUnsafeSlow(cache.folioBytes)
  const priority = new Int32Array(1)
  try {
    for (;;) {
      const seen = queue.sequence()
      if (queue.stopped) return
      const folio = queue.pop(priority)
      if (folio < 0) {
        queue.wait(seen, IDLE_WAIT_MS)
        continue
      }
      const t0 = performance.now()
      const read0 = source.bytesRead
      const outcome = cache.fill(folio, source, staging)
      if (outcome === 'filled') {
        stats[row + S_FOLIOS]++
        stats[row + S_FOLIOS_BY_PRIORITY + priority[0]]++
        stats[row + S_BYTES_READ] += source.bytesRead - read0
        stats[row + S_BUSY_MS] += performance.now() - t0
        notifier.notifyArmed()
      } else if (outcome === 'unservable') {
        post({ type: 'unservable', folio, error: cache.lastError?.message ?? 'unknown error' })
        notifier.notifyArmed()
      }
    }
  } finally {
    source.close()
  }
}

try {
  main()
  post({ type: 'done' })
} catch (err) {
  post({ type: 'fatal', error: err instanceof Error ? err.message : String(err) })
}
