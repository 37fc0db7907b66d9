// Measures the trace simulator's cost model on this machine: real sessions (the native guest,
// a faultline server process with its stage timers on) serving one page a fault and 64-page
// runs, warm and cold; the per-ioctl and per-page costs are the intercept and slope between the
// two, the per-byte ones come from reading the snapshot file whole, warm and cold.
import { closeSync, openSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { median } from '../util/format.js'
import type { FaultBreakdownSummary } from '../server/fault-breakdown.js'
import type { SessionStats } from '../server/session.js'
import { DEFAULT_PAGE_SIZE } from '../snapshot/format.js'
import type { CostModel } from './cost-model.js'
import { dropFileCache } from '../vm/pagecache.js'
import { runGuestProcess } from './guest.js'
import { warmPageCache } from './proc.js'
import { ensureImage } from './resume.js'
import { startFaultlineServer } from './servers.js'

export interface CostBenchOptions {
  dir: string
  mib: number
  rounds: number
  seed: number
  /** The command line, recorded in the model. */
  command: string
  /** Remote tier, from `faultline bench remote` (a chunk GET's latency, and bandwidth). */
  remote?: { getMs: number; mibPerSecond: number; source: string }
  onProgress?: (done: number, total: number) => void
}

export interface CostRun {
  round: number
  name: string
  workload: string
  policy: string
  cold: boolean
  timers: boolean
  faults: number
  workloadNs: number
  stats: Pick<SessionStats, 'faults' | 'pagesInstalled' | 'zeroPagesInstalled' | 'copyIoctls' | 'bytesDecoded' | 'bytesRead'>
  breakdown?: FaultBreakdownSummary
}

export interface CostBenchResult {
  model: CostModel
  runs: CostRun[]
  bulkRead: { bytes: number; warmNs: number[]; coldNs: number[] }
}

/** The four sessions of a round. Readahead:63 on a sequential scan installs runs of up to 64
 * pages (fewer where zero and stored pages alternate). */
const SESSIONS = [
  { name: 'one page a fault', workload: 'random:0.25', policy: 'ondemand', cold: false, timers: true },
  { name: 'one page a fault, no timers', workload: 'random:0.25', policy: 'ondemand', cold: false, timers: false },
  { name: '64-page runs', workload: 'sequential', policy: 'readahead:63', cold: false, timers: true },
  { name: '64-page runs, cold', workload: 'sequential', policy: 'readahead:63', cold: true, timers: true },
] as const

/** Times reading `path` whole in 1 MiB reads, ns. */
function readWhole(path: string): number {
  const buf = Buffer.allocUnsafe(1 << 20)
  const fd = openSync(path, 'r')
  try {
    const t0 = process.hrtime.bigint()
    for (let at = 0; ; ) {
      const n = readSync(fd, buf, 0, buf.length, at)
      if (n === 0) break
      at += n
    }
    return Number(process.hrtime.bigint() - t0)
  } finally {
    closeSync(fd)
  }
}

export async function measureCosts(opts: CostBenchOptions): Promise<CostBenchResult> {
  const image = await ensureImage(opts.dir, opts.mib, opts.seed)
  const socketPath = join(opts.dir, `costs-${process.pid}.sock`)
  const runs: CostRun[] = []
  const bulk = { bytes: image.snapBytes, warmNs: [] as number[], coldNs: [] as number[] }
  const total = opts.rounds * SESSIONS.length
  for (let round = 0; round < opts.rounds; round++) {
    dropFileCache(image.snap)
    bulk.coldNs.push(readWhole(image.snap))
    bulk.warmNs.push(readWhole(image.snap))
    for (const s of SESSIONS) {
      warmPageCache(image.raw)
      if (s.cold) dropFileCache(image.snap)
      else warmPageCache(image.snap)
      const server = await startFaultlineServer({
        snapshotPath: image.snap,
        socketPath,
        policy: s.policy,
        env: { FAULTLINE_BREAKDOWN: s.timers ? '1' : '0' },
      })
      try {
        const guest = await runGuestProcess(['--socket', socketPath, '--mib', String(opts.mib), '--workload', s.workload, '--seed', String(opts.seed)], {
          timeoutMs: 600_000,
        })
        const cost = await server.finish()
        const st = cost.session!
        runs.push({
          round,
          name: s.name,
          workload: s.workload,
          policy: s.policy,
          cold: s.cold,
          timers: s.timers,
          faults: st.faults,
          workloadNs: guest.workload_ns,
          breakdown: st.breakdown,
          stats: {
            faults: st.faults,
            pagesInstalled: st.pagesInstalled,
            zeroPagesInstalled: st.zeroPagesInstalled,
            copyIoctls: st.copyIoctls,
            bytesDecoded: st.bytesDecoded,
            bytesRead: st.bytesRead,
          },
        })
      } catch (err) {
        server.kill()
        throw err
      }
      opts.onProgress?.(runs.length, total)
    }
  }
  return { model: deriveModel(runs, bulk, DEFAULT_PAGE_SIZE, opts), runs, bulkRead: bulk }
}

/** Per-unit costs from the runs: medians over rounds of each session's totals. */
export function deriveModel(
  runs: CostRun[],
  bulk: CostBenchResult['bulkRead'],
  pageSize: number,
  opts: Pick<CostBenchOptions, 'command' | 'remote' | 'mib' | 'rounds'>,
): CostModel {
  const of = (name: string) => runs.filter(r => r.name === name)
  const med = (rs: CostRun[], f: (r: CostRun) => number) => median(rs.map(f))
  const one = of('one page a fault'),
    plain = of('one page a fault, no timers'),
    runs64 = of('64-page runs'),
    cold = of('64-page runs, cold')
  const b = (r: CostRun) => r.breakdown!
  const copyIoctls = (r: CostRun) => b(r).copies
  const dataPages = (r: CostRun) => r.stats.bytesDecoded / pageSize
  // UFFDIO_COPY: ns per ioctl = installNs + pages * copyPageNs, at 1 page and at n pages.
  const copy1 = med(one, r => b(r).copyNs / copyIoctls(r))
  const copyN = med(runs64, r => b(r).copyNs / copyIoctls(r))
  const nCopy = med(runs64, r => dataPages(r) / copyIoctls(r))
  const copyPageNs = Math.max(0, (copyN - copy1) / (nCopy - 1))
  const installNs = Math.max(0, copy1 - copyPageNs)
  // UFFDIO_ZEROPAGE: the same line for zero pages.
  const zero1 = med(one, r => b(r).zeropageNs / b(r).zeropages)
  const zeroN = med(runs64, r => b(r).zeropageNs / b(r).zeropages)
  const nZero = med(runs64, r => r.stats.zeroPagesInstalled / b(r).zeropages)
  const zeroPageNs = Math.max(0, (zeroN - zero1) / (nZero - 1))
  const zeroInstallNs = Math.max(0, zero1 - zeroPageNs)
  // Bulk reads of the whole snapshot: what a stored byte costs to read, warm and cold.
  const warmByteNs = median(bulk.warmNs) / bulk.bytes
  const coldBulkByteNs = median(bulk.coldNs) / bulk.bytes
  // Source reads (pread + decode + check): ns per read = readNs + pages * decodePageNs + bytes * warmByteNs.
  const readCost = (r: CostRun) => (b(r).sourceReadNs - r.stats.bytesRead * warmByteNs) / b(r).sourceReads
  const read1 = med(one, readCost)
  const readN = med(runs64, readCost)
  const nRead = med(runs64, r => dataPages(r) / b(r).sourceReads)
  const decodePageNs = Math.max(0, (readN - read1) / (nRead - 1))
  const readNs = Math.max(0, read1 - decodePageNs)
  // Cold runs: the extra time of their source reads, per byte read, on top of a warm byte.
  const coldByteNs = warmByteNs + Math.max(0, med(cold, r => b(r).sourceReadNs) - med(runs64, r => b(r).sourceReadNs)) / med(cold, r => r.stats.bytesRead)
  // A fault as the guest sees it (no timers), less what its install took.
  const perFault = med(plain, r => r.workloadNs / r.faults)
  const installPerFault = med(one, r => (b(r).copyNs + b(r).zeropageNs + b(r).sourceReadNs) / r.faults)
  const faultNs = Math.max(0, perFault - installPerFault)
  const f = (ns: number) => `${(ns / 1000).toFixed(2)} µs`
  const remote = opts.remote
  const sources: Record<string, string> = {
    faultNs: `${opts.mib} MiB synthetic snapshot, native guest, ondemand, random 25%: ${f(perFault)} a fault as the guest measures it, less ${f(installPerFault)} of installs the stage timers saw`,
    'installNs, copyPageNs': `UFFDIO_COPY ${f(copy1)} for 1 page, ${f(copyN)} for ${nCopy.toFixed(1)} pages (readahead:63, sequential)`,
    'zeroInstallNs, zeroPageNs': `UFFDIO_ZEROPAGE ${f(zero1)} for 1 page, ${f(zeroN)} for ${nZero.toFixed(1)} pages`,
    'readNs, decodePageNs': `source read (pread + LZ4 + CRC-32) less its bytes: ${f(read1)} for 1 page, ${f(readN)} for ${nRead.toFixed(1)} pages`,
    'byteNs.warm': `reading the ${(bulk.bytes / 2 ** 20).toFixed(1)} MiB snapshot whole in 1 MiB reads from the page cache (${(1e3 / warmByteNs).toFixed(0)} MB/s); bulk cold read ${(1e3 / coldBulkByteNs).toFixed(0)} MB/s`,
    'byteNs.cold': "the 64-page-run sessions' source reads with the snapshot dropped from the page cache, less the warm ones, per byte read, plus a warm byte",
    remote: remote
      ? `${remote.source}: a chunk GET ${remote.getMs} ms, ${remote.mibPerSecond} MiB/s`
      : 'not measured (give --remote-get-ms and --remote-mib-s from faultline bench remote)',
  }
  return {
    faultNs,
    installNs,
    copyPageNs,
    zeroInstallNs,
    zeroPageNs,
    readNs,
    decodePageNs,
    byteNs: { warm: warmByteNs, cold: coldByteNs, remote: remote ? 1e9 / (remote.mibPerSecond * 2 ** 20) : 0 },
    remoteChunkNs: remote ? remote.getMs * 1e6 : null,
    sources,
    command: opts.command,
    measuredAt: new Date().toISOString().slice(0, 10),
  }
}
