// The page server's decoded cache of a snapshot and its fill workers, started and closed with
// the server (a local snapshot read through the server's descriptor, an object-store one
// through its chunk store).
import { DecodedCache } from '../cache/decoded-cache.js'
import { FillPool } from '../cache/fill-pool.js'
import type { SnapshotReader } from '../snapshot/reader.js'
import { SnapshotIndex } from '../snapshot/snapshot-index.js'
import type { ChunkStore } from '../store/chunk-store.js'
import type { LogLevel } from './session-pool.js'
import type { PageServerOptions } from './server-options.js'

/** How often the cache is checked for folios the server did not put there. */
export const STRAY_CHECK_MS = 1000

export interface CacheParts {
  cache: DecodedCache
  fills: FillPool
  log?: (line: string, level?: LogLevel) => void
}

/** The decoded cache of the snapshot and its fill workers (which read an object-store
 * snapshot through the chunk store, several chunks in flight). */
export function startCache(opts: PageServerOptions, snapshot: SnapshotReader | undefined, snapshotFd: number, store: ChunkStore | undefined): CacheParts {
  const geometry = snapshot ?? SnapshotIndex.parse(opts.snapshotPath, store!.snapshot.header, Buffer.from(store!.snapshot.indexBytes))
  const cache = DecodedCache.create(geometry, { folios: opts.cacheFolios, limitBytes: opts.cacheMemoryBytes })
  const parts: CacheParts = { cache, fills: undefined as unknown as FillPool }
  try {
    parts.fills = FillPool.create({
      snapshotPath: opts.snapshotPath,
      snapshotFd,
      cache,
      workers: opts.fillWorkers,
      log: line => parts.log?.(line, 'warn'),
      remote: store === undefined ? undefined : { workerData: store.workerData(), store },
    })
  } catch (err) {
    cache.close()
    throw err
  }
  return parts
}

export async function closeCache(parts: CacheParts | undefined): Promise<void> {
  if (parts === undefined) return
  await parts.fills?.close()
  parts.cache.close()
}

export function formatCacheBound(cache: DecodedCache): string {
  const mib = (n: number) => `${Math.round(n / 2 ** 20)} MiB`
  return cache.info.limitBytes >= cache.folioCount * cache.folioBytes
    ? `up to the whole image (${mib(cache.info.limitBytes)})`
    : `at most ${mib(cache.info.limitBytes)}, evicting past it`
}
