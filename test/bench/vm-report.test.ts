// The real-VM sweep's summaries: mode labels, medians over good runs, ratios to mmap paired
// by round, failures counted, tables and the plot.
import t from 'tap'
import { planMode, toRecord, type VmRunRecord, type VmSweepResult } from '../../src/bench/vm.js'
import { renderVmMarkdown, renderVmPlot, summarizeVm, vmCostTable, vmTimeTable } from '../../src/bench/vm-report.js'
import type { VmDirResumeReport } from '../../src/vm/resume-dir.js'

function run(mode: string, round: number, firstReplyMs: number, o: Partial<VmRunRecord> = {}): VmRunRecord {
  return {
    sizeMiB: 256,
    cache: 'warm',
    pinning: 'unpinned',
    mode,
    round,
    ok: true,
    stateLoadedMs: 1,
    firstReplyMs,
    checksumMs: firstReplyMs * 3,
    workloadMs: firstReplyMs * 2,
    recheckMs: 50,
    ...o,
  }
}

t.test('mode labels', async t => {
  t.same(planMode('mmap'), { label: 'mmap', mode: 'mmap', options: {} })
  t.same(planMode('faultline:readahead:15').options, { policy: 'readahead:15' })
  t.same(planMode('uffd-c').options, { floor: { batchPages: 1 } })
  t.same(planMode('uffd-c:16').options, { floor: { batchPages: 16 } })
  t.throws(() => planMode('faultline:'), /unknown mode 'faultline:'/)
  t.throws(() => planMode('uffd-c:0'), /pages per fault must be 1..512/)
  t.throws(() => planMode('lazy'), /unknown mode 'lazy'/)
})

t.test('medians over good runs, ratios paired with mmap in the same round', async t => {
  // Round 1 is slow for everyone: paired ratios stay 4x.
  const runs = [
    run('mmap', 0, 100),
    run('faultline:ondemand', 0, 400),
    run('mmap', 1, 1000),
    run('faultline:ondemand', 1, 4000),
    run('mmap', 2, 110),
    run('faultline:ondemand', 2, 440),
    run('faultline:ondemand', 3, 5, { ok: false, error: 'checksum x, recorded y' }),
  ]
  const rows = summarizeVm(runs)
  const f = rows.find(r => r.mode === 'faultline:ondemand')!
  t.equal(f.runs, 4)
  t.equal(f.failures, 1)
  t.equal(f.firstReplyMs, 440, 'median of 400, 4000, 440: the failed run left out')
  t.equal(f.firstReplyVsMmap, 4)
  t.equal(f.workloadVsMmap, 4)
  t.equal(rows.find(r => r.mode === 'mmap')!.firstReplyVsMmap, 1)
  const table = vmTimeTable(rows, 'firstReply', 'warm', 'unpinned')
  t.match(table, /\| 256 MiB \| +110 \(1\.00x\) \| 440 \(4\.00x\) 1 failed \|/)
  t.match(vmTimeTable(rows, 'workload', 'warm', 'unpinned'), /all memory in \|\n.*\n\| 256 MiB \| +220 \(1\.00x\) \| 880 \(4\.00x\) 1 failed \| +50.0 \|/)
})

t.test('a mode that never resumed shows as failed, not as a number', async t => {
  const rows = summarizeVm([run('mmap', 0, 100), run('eager', 0, NaN, { ok: false, error: 'QEMU exited' })])
  t.match(vmTimeTable(rows, 'firstReply', 'warm', 'unpinned'), /\| 256 MiB \| 100 \(1\.00x\) \| failed \|/)
})

t.test('a resume report becomes a record with the server counters', async t => {
  const report: VmDirResumeReport = {
    mode: 'faultline',
    policy: 'ondemand',
    expected: 'a'.repeat(16),
    checksum: 'b'.repeat(16),
    match: false,
    timings: { qmpReadyMs: 1, stateLoadedMs: 2, runningMs: 3, firstReplyMs: 4, checksumMs: 10, workloadMs: 6 },
    recheckMs: 2,
    recheckHex: 'b'.repeat(16),
    session: {
      faults: 7,
      pagesInstalled: [7, 20, 3],
      zeroPagesInstalled: 1,
      copyIoctls: 9,
      bytesDecoded: 0,
      removedPages: 0,
      events: 7,
      bytesRead: 4096,
      remoteWaits: 0,
      latency: { p50Ns: 12_000, p99Ns: 50_000 } as never,
      cpuNs: 5e6,
      durationMs: 20,
      endReason: 'guest disconnected',
    },
  }
  const rec = toRecord({ sizeMiB: 256, cache: 'cold', pinning: 'pinned', mode: 'faultline:ondemand', round: 0 }, report)
  t.equal(rec.ok, false)
  t.match(rec.error, /checksum b+\/b+, recorded a+/)
  t.equal(rec.faults, 7)
  t.equal(rec.pagesInstalled, 30)
  t.equal(rec.serverCpuMs, 5)
  t.equal(rec.serviceP50Us, 12)
  t.equal(rec.firstReplyMs, 4)
  // Costs come from runs that resumed with the right checksum only.
  t.notMatch(vmCostTable(summarizeVm([rec]), 'cold', 'pinned'), /faultline:ondemand/)
  const rows = summarizeVm([{ ...rec, ok: true }])
  t.match(vmCostTable(rows, 'cold', 'pinned'), /\| 256 MiB \| faultline:ondemand \| +7 \| +30 \| +5 \| +12.0 \|/)
})

t.test('markdown and plot', async t => {
  const runs = [
    run('mmap', 0, 100),
    run('faultline:ondemand', 0, 400),
    run('mmap', 0, 200, { sizeMiB: 1024 }),
    run('faultline:ondemand', 0, 500, { sizeMiB: 1024 }),
  ]
  const result: VmSweepResult = {
    options: {
      sizesMiB: [256, 1024],
      modes: ['mmap', 'faultline:ondemand'],
      caches: ['warm'],
      pinnings: ['unpinned'],
      repeat: 1,
      checkpointDir: '/c',
      imageDir: '/i',
      cold: 'fadvise',
    },
    machine: {
      kernel: '6.18',
      cpus: 2,
      memTotalBytes: 2 ** 34,
      node: 'v20',
      qemu: 'QEMU emulator version 7.2.22',
      loadAvgStart: [1, 1, 1],
      loadAvgEnd: [2, 2, 2],
    },
    startedAt: 's',
    finishedAt: 'f',
    runs,
    skipped: [{ sizeMiB: 4096, reason: 'needs 10 GiB' }],
    checkpoints: [
      { sizeMiB: 256, dir: '/c/256M', reused: true, workloadMiB: 160, bootMs: 20000, checkpointMs: 3000, snapshotBytes: 2 ** 27, stateBytes: 2 ** 18 },
    ],
  }
  const md = renderVmMarkdown(result, 'faultline bench vm --sizes 256M,1G')
  t.match(md, /Command: `faultline bench vm --sizes 256M,1G`/)
  t.match(md, /Memory check: 4 of 4 resumes printed the recorded checksum/)
  t.match(md, /- 4 GiB: needs 10 GiB/)
  t.match(md, /\| +1 GiB \| 200 \(1\.00x\) \| 500 \(2\.50x\) +\|/)
  t.match(md, /\| 256 MiB \| +160 \| +20\.0 \| +3\.0 \| 128\.0 MiB \| +256\.0 KiB \| +- \| yes +\|/)
  const svg = renderVmPlot(result, 'unpinned')
  t.equal((svg.match(/<g class="panel">/g) ?? []).length, 2, 'resume and workload panels for the one cache state')
  t.equal((svg.match(/<g class="series" data-name="faultline:ondemand">/g) ?? []).length, 2)
  t.match(svg, /until the guest answers, warm cache/)
})
