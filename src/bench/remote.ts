// The object-store benchmark: the same guest workload resumed from a local snapshot file and
// from the same snapshot in S3 (Ceph RGW) with a cold and a warm chunk cache, with and without
// prefetch policies, directly and through a proxy that adds network round-trip time; pinned
// to one CPU and not. Rounds are interleaved so every cell sees the same machine; the report
// gives medians and ratios to the local file.
import { spawnSync } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { runGuestProcess, type GuestReport } from './guest.js'
import { PageServer, type PageServerOptions } from '../server/page-server.js'
import type { SessionStats } from '../server/session.js'
import { SnapshotReader } from '../snapshot/reader.js'
import type { ChunkStore } from '../store/chunk-store.js'
import { DelayProxy } from './delay-proxy.js'
import { BenchError } from './errors.js'

export interface RemoteBenchOptions {
  /** Local snapshot file and its raw image (for --verify). */
  snapshotPath: string
  rawPath: string
  /** The same snapshot in the store. */
  url: string
  /** The store's endpoint (the delay proxy forwards to it). */
  endpoint: string
  env: NodeJS.ProcessEnv
  mib: number
  workloads: string[]
  policies: string[]
  rttsMs: number[]
  rounds: number
  /** CPU for the pinned runs; undefined runs unpinned only. */
  cpu?: string
  pinModes: boolean[]
  workDir: string
  concurrency: number
  onRun?: (done: number, total: number) => void
}

export interface RemoteRun {
  round: number
  pinned: boolean
  workload: string
  policy: string
  /** 'local', 'cold', 'warm', or 'warm-small' (cache half the chunks the guest needs). */
  source: 'local' | 'cold' | 'warm' | 'warm-small'
  rttMs: number
  workloadNs: number
  faults: number
  faultP50Ns: number
  faultP99Ns: number
  /** Faults that waited for a chunk from the store. */
  remoteWaits: number
  pagesTouched: number
  /** Stored (compressed) bytes of the touched non-zero pages: what the guest needed. */
  neededStoredBytes: number
  /** Chunk data fetched from the store for this guest (header and index excluded). */
  bytesFetched: number
  gets: number
  /** Median time of this guest's chunk GETs, ms (0 when it made none). */
  getP50Ms: number
  mismatches: number
}

/** CPUs this process may run on now (`taskset -p`'s hex mask). */
function currentMask(): string {
  const out = spawnSync('taskset', ['-p', String(process.pid)], { encoding: 'utf8' })
  const m = /:\s*([0-9a-f,]+)\s*$/.exec(out.stdout ?? '')
  if (!m) throw new BenchError(`taskset -p ${process.pid}: ${out.stderr?.trim() || 'unexpected output'} (is util-linux installed?)`)
  return m[1]
}

/** Moves every thread of this process (server main thread, session workers, libuv pool). */
function setAffinity(args: string[]): void {
  const r = spawnSync('taskset', ['-a', '-p', ...args, String(process.pid)], { encoding: 'utf8' })
  if (r.status !== 0) throw new BenchError(`taskset -a -p ${args.join(' ')}: ${r.stderr.trim()}`)
}

export async function runRemoteBench(o: RemoteBenchOptions): Promise<RemoteRun[]> {
  const reader = SnapshotReader.open(o.snapshotPath)
  const index = reader.index
  reader.close()
  const proxies = new Map<number, DelayProxy>()
  const target = new URL(o.endpoint)
  for (const rtt of o.rttsMs) {
    if (rtt > 0) proxies.set(rtt, await DelayProxy.start({ targetHost: target.hostname, targetPort: Number(target.port), oneWayDelayMs: rtt / 2 }))
  }
  const originalMask = currentMask()
  const runs: RemoteRun[] = []
  const perRound = o.pinModes.length * o.workloads.length * (o.policies.length * (1 + 2 * o.rttsMs.length) + 1)
  const total = o.rounds * perRound
  let cellNo = 0
  const touchedFile = join(o.workDir, 'touched')

  /** Stored bytes of the touched non-zero pages (the guest's --touched-out list). */
  const needed = (): number => {
    const b = readFileSync(touchedFile)
    let n = 0
    for (let i = 0; i < b.length; i += 4) n += index.storedLength(b.readUInt32LE(i))
    return n
  }
  const guest = (socket: string, workload: string, round: number, pinned: boolean): Promise<GuestReport> =>
    runGuestProcess(
      ['--socket', socket, '--mib', String(o.mib), '--workload', workload, '--seed', String(round + 1), '--verify', o.rawPath, '--touched-out', touchedFile],
      { cpus: pinned ? o.cpu : undefined, timeoutMs: 600_000 },
    )

  async function serve(opts: Partial<PageServerOptions>, run: (server: PageServer, socket: string) => Promise<void>): Promise<void> {
    const socket = join(o.workDir, `s${cellNo}.sock`)
    const server = await PageServer.start({ snapshotPath: o.snapshotPath, socketPath: socket, warmWorkers: 1, ...opts })
    try {
      await run(server, socket)
    } finally {
      await server.close()
    }
  }
  const lastSession = async (server: PageServer, count: number): Promise<SessionStats> => {
    while (server.ended.length < count) await new Promise(r => setTimeout(r, 5))
    const rec = server.ended[count - 1]
    if (!rec.stats) throw new BenchError(`session ${rec.id} failed: ${rec.error}`)
    return rec.stats
  }
  const record = (
    base: Omit<RemoteRun, 'workloadNs' | 'faults' | 'faultP50Ns' | 'faultP99Ns' | 'remoteWaits' | 'pagesTouched' | 'neededStoredBytes' | 'mismatches'>,
    g: GuestReport,
    st: SessionStats,
  ): void => {
    runs.push({
      ...base,
      workloadNs: g.workload_ns,
      faults: st.faults,
      faultP50Ns: st.latency.p50Ns,
      faultP99Ns: st.latency.p99Ns,
      remoteWaits: st.remoteWaits,
      pagesTouched: g.pages_touched,
      neededStoredBytes: needed(),
      mismatches: g.mismatches,
    })
    o.onRun?.(++cellNo, total)
  }
  const fetchedSince = (store: ChunkStore, before: { bytes: number; gets: number }) => {
    const s = store.stats
    const gets = s.chunkGets - before.gets
    // A warm guest makes no GETs: the server's percentile would be the cold guest's.
    return { bytesFetched: s.bytesFetched - before.bytes, gets, getP50Ms: gets > 0 ? s.getMs.p50 : 0 }
  }

  try {
    // One unrecorded run first: page cache, JIT and the store's connections warm for every cell.
    await serve({ policy: 'ondemand' }, async (server, socket) => {
      await guest(socket, o.workloads[0], 0, false)
      await lastSession(server, 1)
    })
    for (let round = 0; round < o.rounds; round++) {
      for (const pinned of o.pinModes) {
        if (pinned) setAffinity(['-c', o.cpu!])
        else setAffinity([originalMask])
        for (const workload of o.workloads) {
          for (const policy of o.policies) {
            await serve({ policy }, async (server, socket) => {
              const g = await guest(socket, workload, round, pinned)
              const st = await lastSession(server, 1)
              record({ round, pinned, workload, policy, source: 'local', rttMs: 0, bytesFetched: 0, gets: 0, getP50Ms: 0 }, g, st)
            })
            for (const rtt of o.rttsMs) {
              const endpoint = rtt > 0 ? proxies.get(rtt)!.url : o.endpoint
              const cacheDir = join(o.workDir, `cache-${cellNo}`)
              await serve(
                { policy, snapshotPath: o.url, remote: { endpoint, env: o.env, cacheDir, cacheSizeBytes: 2 ** 30, concurrency: o.concurrency } },
                async (server, socket) => {
                  const store = server.store!
                  for (const source of ['cold', 'warm'] as const) {
                    const before = { bytes: store.stats.bytesFetched, gets: store.stats.chunkGets }
                    const g = await guest(socket, workload, round, pinned)
                    const st = await lastSession(server, source === 'cold' ? 1 : 2)
                    // Prefetches still in flight when the guest ended count for this guest.
                    await store.idle()
                    record({ round, pinned, workload, policy, source, rttMs: rtt, ...fetchedSince(store, before) }, g, st)
                  }
                },
              )
              rmSync(cacheDir, { recursive: true, force: true })
            }
          }
          // The cache under pressure: half as big as what the guest needs, second guest.
          const cacheDir = join(o.workDir, `cache-small-${cellNo}`)
          const needBytes = await (async () => {
            let n = 0
            await serve(
              {
                policy: 'ondemand',
                snapshotPath: o.url,
                remote: { endpoint: o.endpoint, env: o.env, cacheDir, cacheSizeBytes: 2 ** 30, concurrency: o.concurrency },
              },
              async (server, socket) => {
                await guest(socket, workload, round, pinned)
                await lastSession(server, 1)
                await server.store!.idle()
                n = server.store!.cache.bytes
              },
            )
            rmSync(cacheDir, { recursive: true, force: true })
            return n
          })()
          const small = Math.max(Math.floor(needBytes / 2), 2 * (o.concurrency + 1) * (maxChunkBytes(index) + 4096))
          await serve(
            {
              policy: 'ondemand',
              snapshotPath: o.url,
              remote: { endpoint: o.endpoint, env: o.env, cacheDir, cacheSizeBytes: small, concurrency: o.concurrency },
            },
            async (server, socket) => {
              const store = server.store!
              await guest(socket, workload, round, pinned)
              await lastSession(server, 1)
              await store.idle()
              const before = { bytes: store.stats.bytesFetched, gets: store.stats.chunkGets }
              const g = await guest(socket, workload, round, pinned)
              const st = await lastSession(server, 2)
              record(
                {
                  round,
                  pinned,
                  workload,
                  policy: `ondemand, cache ${(small / 2 ** 20).toFixed(1)} MiB`,
                  source: 'warm-small',
                  rttMs: 0,
                  ...fetchedSince(store, before),
                },
                g,
                st,
              )
            },
          )
          rmSync(cacheDir, { recursive: true, force: true })
        }
      }
    }
  } finally {
    setAffinity([originalMask])
    for (const p of proxies.values()) await p.close()
  }
  return runs
}

function maxChunkBytes(index: SnapshotReader['index']): number {
  let max = 0
  for (let first = 0; first < index.pageCount; first += index.chunkPages) {
    max = Math.max(max, index.runEnd(Math.min(index.pageCount, first + index.chunkPages) - 1) - index.runStart(first))
  }
  return max
}
