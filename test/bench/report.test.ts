// Summaries of a sweep: medians, ratios paired with mmap in the same round, tables, the plot.
import t from 'tap'
import { formatMs, renderMarkdown, renderResumePlot, summarize, timeTables } from '../../src/bench/report.js'
import type { RunRecord, SweepResult } from '../../src/bench/resume.js'
import { parseSizeMiB } from '../../src/cli/bench-resume.js'
import { breakdownRows, summarizeFaultCost, type FaultRun } from '../../src/bench/fault-cost.js'

function run(mode: string, round: number, totalMs: number, sizeMiB = 256, cache: 'cold' | 'warm' = 'warm'): RunRecord {
  return {
    sizeMiB,
    workload: 'random 5%',
    cache,
    mode,
    round,
    firstAccessNs: totalMs * 1e5,
    resumeNs: 0,
    workloadNs: totalMs * 1e6,
    totalNs: totalMs * 1e6,
    storageReadBytes: 4096 * round,
    guestReadBytes: 0,
    serverReadBytes: mode === 'mmap' ? null : 0,
    logicalReadBytes: 0,
    serverCpuNs: mode === 'mmap' ? null : 1e6,
    guestCpuNs: 0,
    serverPeakRssBytes: mode === 'mmap' ? null : 50e6,
    guestPeakRssBytes: 0,
    faults: 100,
    guestMajorFaults: 0,
    guestMinorFaults: 0,
    serviceP50Ns: null,
    serviceP99Ns: null,
    pagesInstalled: null,
    verifiedPages: 10,
    mismatches: 0,
    rawCachedBytes: null,
    snapCachedBytes: null,
  }
}

t.test('medians and ratios paired by round', async t => {
  // Round 1 is slow for everyone (machine load): paired ratios stay at 2x, unpaired would not.
  const runs = [
    run('mmap', 0, 10),
    run('faultline:ondemand', 0, 20),
    run('mmap', 1, 100),
    run('faultline:ondemand', 1, 200),
    run('mmap', 2, 12),
    run('faultline:ondemand', 2, 24),
  ]
  const rows = summarize(runs)
  const f = rows.find(r => r.mode === 'faultline:ondemand')!
  t.equal(f.runs, 3)
  t.equal(f.totalNs, 24e6, 'median of 20, 200, 24')
  t.equal(f.totalVsMmap, 2)
  t.equal(f.storageReadBytes, 4096)
  const m = rows.find(r => r.mode === 'mmap')!
  t.equal(m.totalVsMmap, 1)
  t.ok(Number.isNaN(m.serverCpuNs), 'no server: no CPU figure')
  const table = timeTables(rows, 'total', 'warm')
  t.match(table, /\| 256 MiB \| random 5% \|\s*12\.0 \(1\.00x\)\s*\|\s*24\.0 \(2\.00x\)\s*\|/)
})

t.test('markdown report and plot name every mode and size', async t => {
  const runs = [
    run('mmap', 0, 10),
    run('eager', 0, 50),
    run('mmap', 0, 20, 1024),
    run('eager', 0, 200, 1024),
    run('mmap', 0, 30, 256, 'cold'),
    run('eager', 0, 90, 256, 'cold'),
  ]
  const result: SweepResult = {
    options: {
      sizesMiB: [256, 1024],
      workloads: [{ pattern: 'random', fraction: 0.05 }],
      modes: ['mmap', 'eager'],
      caches: ['warm', 'cold'],
      repeat: 1,
      imageDir: '/x',
      cold: 'fadvise',
      verify: true,
      seed: 1,
    },
    machine: { kernel: '6.18', cpus: 2, memTotalBytes: 2 ** 34, node: 'v20', loadAvgStart: [1, 1, 1], loadAvgEnd: [2, 2, 2] },
    startedAt: 'a',
    finishedAt: 'b',
    runs,
    skipped: [{ sizeMiB: 8192, reason: 'needs 17 GiB' }],
  }
  const md = renderMarkdown(result, 'faultline bench resume --quick')
  t.match(md, /Command: `faultline bench resume --quick`/)
  t.match(md, /8 GiB: needs 17 GiB/)
  t.match(md, /\|\s*1 GiB\s*\| random 5%\s*\|\s*20\.0 \(1\.00x\)\s*\|\s*200 \(10\.0x\)/)
  t.match(md, /## Costs at 256 MiB, cold page cache/)
  t.match(md, /60 touched pages verified, 0 mismatches/)
  const svg = renderResumePlot(result, 'random 5%')
  t.equal((svg.match(/<polyline/g) ?? []).length, 2 + 0, 'warm: two modes with two sizes; cold has one size each (points only)')
  t.equal((svg.match(/<circle/g) ?? []).length, 6)
  t.match(svg, />1 GiB</)
})

t.test('formats and sizes', async t => {
  t.equal(formatMs(1234567), '1.23')
  t.equal(formatMs(NaN), '-')
  t.equal(parseSizeMiB('256M'), 256)
  t.equal(parseSizeMiB('8G'), 8192)
  t.equal(parseSizeMiB('2GiB'), 2048)
  t.equal(parseSizeMiB('512'), 512)
  t.throws(() => parseSizeMiB('lots'), /--sizes: expected a size like 256M/)
})

t.test('fault-cost summary pairs with both C servers per round; the breakdown adds up', async t => {
  const fr = (server: string, round: number, perFaultNs: number, pinned = true): FaultRun => ({
    server,
    pinned,
    round,
    faults: 1000,
    perFaultNs,
    serviceP50Ns: perFaultNs / 2,
    serverCpuPerFaultNs: perFaultNs,
    mismatches: 0,
  })
  const rows = summarizeFaultCost([
    fr('uffd-c', 0, 10e3),
    fr('uffd-c/snapshot', 0, 11e3),
    fr('faultline/koffi', 0, 12e3),
    fr('uffd-c', 1, 30e3),
    fr('uffd-c/snapshot', 1, 24e3),
    fr('faultline/koffi', 1, 36e3),
  ])
  const koffi = rows.find(r => r.server === 'faultline/koffi')!
  t.equal(koffi.vsFloor, 1.2)
  t.equal(koffi.vsSameWork, (12 / 11 + 36 / 24) / 2, 'the same-work ratio pairs with uffd-c/snapshot of the same round')
  t.equal(rows.find(r => r.server === 'uffd-c/snapshot')!.vsFloor, (1.1 + 0.8) / 2)
  t.ok(Number.isNaN(summarizeFaultCost([fr('uffd-c', 0, 10e3), fr('faultline/koffi', 0, 12e3)])[1].vsSameWork), 'NaN without uffd-c/snapshot')
  const timed: FaultRun = {
    ...fr('faultline/koffi+timers', 0, 10e3),
    breakdown: {
      polls: 1000,
      uffdReads: 1000,
      emptyReads: 0,
      uffdReadNs: 1e6,
      sourceReads: 600,
      sourceReadNs: 3e6,
      copies: 600,
      copyNs: 2e6,
      zeropages: 400,
      zeropageNs: 0.5e6,
      serviceNs: 8e6,
      faults: 1000,
      heapGrowthBytes: 0,
      warmHeapGrowthBytes: 0,
      warmFaults: 0,
    },
  }
  const costs = { preadNs: 1000, lz4DecodeNs: 1000, crc32Ns: 1000, nativeDecodeNs: 500, indexLookupNs: 0, zeroFraction: 0.4 }
  const native = Object.fromEntries(breakdownRows([timed], costs, 'native').map(r => [r.stage, r.nsPerFault]))
  t.equal(native['pread(2) of stored bytes'], 2000, 'native: source read (3 µs) split 2:1 between pread and the codec')
  t.equal(native['LZ4 decode + CRC-32 check (native codec)'], 1000)
  const b = breakdownRows([timed], costs, 'npm')
  const ns = Object.fromEntries(b.map(r => [r.stage, r.nsPerFault]))
  t.equal(ns['uffd read(2)'], 1000)
  t.equal(ns['pread(2) of stored bytes'], 1000, 'source read (3 µs) split in equal thirds')
  t.equal(ns.UFFDIO_COPY, 2000)
  t.equal(ns['JS and FFI overhead (the rest)'], 8000 - 1000 - 3000 - 2000 - 500)
  t.equal(ns['service time (sum)'], 8000)
})
