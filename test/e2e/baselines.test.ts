// Every resume mode of the benchmark, driven once through real processes at a small size
// (real userfaultfd, real page cache): memory verified page by page against the raw image,
// and each mode's accounting checked against what that mode must do. Not timed.
import t from 'tap'
import { join } from 'node:path'
import { ensureImage, runOnce, type RunRecord, type SweepOptions } from '../../src/bench/resume.js'
import { scratchDir } from './harness.js'
import { BenchError } from '../../src/bench/errors.js'

const MIB = 16
const PAGES = MIB * 256
const TOUCHED = Math.round(0.25 * PAGES)

t.test('each resume mode serves the guest the image, and accounts for it', async t => {
  const dir = scratchDir(t, 'fl-baselines-')
  const image = await ensureImage(dir, MIB, 3)
  const opts: SweepOptions = {
    sizesMiB: [MIB],
    workloads: [],
    modes: [],
    caches: ['warm'],
    repeat: 1,
    imageDir: dir,
    cold: 'fadvise',
    verify: true,
    seed: 3,
  }
  const ctx = {
    image,
    sizeMiB: MIB,
    workload: { pattern: 'random' as const, fraction: 0.25 },
    cache: 'warm' as const,
    round: 0,
    socketPath: join(dir, 'b.sock'),
    opts,
  }
  const runs: Record<string, RunRecord> = {}
  for (const mode of ['eager', 'eager-lz4', 'mmap', 'faultline:ondemand', 'faultline:readahead', 'uffd-c']) {
    const r = await runOnce(mode, ctx)
    runs[mode] = r
    t.equal(r.mismatches, 0, `${mode}: no page differs`)
    t.equal(r.verifiedPages, TOUCHED, `${mode}: every touched page verified`)
    t.ok(r.totalNs >= r.firstAccessNs && r.firstAccessNs > 0, `${mode}: first access within the run`)
  }
  t.ok(runs.eager.logicalReadBytes >= image.sizeBytes, 'eager read the whole image')
  t.ok(runs.eager.faults >= PAGES, 'eager faulted in every page of its anonymous memory')
  t.equal(runs['eager-lz4'].pagesInstalled, PAGES, 'eager-lz4 installed every page before the guest ran')
  t.equal(runs['eager-lz4'].faults, 0, 'so the guest never faulted to it')
  t.ok(runs.mmap.faults < TOUCHED, `mmap: fault-around maps several pages a fault (${runs.mmap.faults})`)
  t.equal(runs.mmap.serverCpuNs, null, 'mmap has no server')
  t.equal(runs['faultline:ondemand'].faults, TOUCHED, 'ondemand: one fault a touched page')
  t.equal(runs['faultline:ondemand'].pagesInstalled, TOUCHED)
  t.ok(runs['faultline:readahead'].pagesInstalled! > runs['faultline:readahead'].faults, 'readahead installs more than it was asked')
  t.equal(runs['uffd-c'].faults, TOUCHED, 'uffd-c: one fault a touched page')
  t.equal(runs['uffd-c'].pagesInstalled, TOUCHED)
  for (const mode of ['eager-lz4', 'faultline:ondemand', 'uffd-c']) {
    t.ok(runs[mode].serverCpuNs! > 0, `${mode}: server CPU measured`)
    t.ok(runs[mode].serverPeakRssBytes! > 0, `${mode}: server peak RSS measured`)
  }
  t.ok(runs['faultline:ondemand'].serverPeakRssBytes! > runs['uffd-c'].serverPeakRssBytes!, 'a Node server holds more memory than the C floor')

  t.test('cold: storage reads are counted for whoever reads', async t => {
    const cold = { ...ctx, cache: 'cold' as const }
    const mmap = await runOnce('mmap', cold)
    t.equal(mmap.rawCachedBytes, 0, 'the raw image was out of the page cache')
    t.ok(mmap.guestReadBytes > 0, `mmap: the guest read ${mmap.guestReadBytes} bytes from storage`)
    const fl = await runOnce('faultline:ondemand', cold)
    t.equal(fl.snapCachedBytes, 0, 'the snapshot was out of the page cache')
    t.ok(fl.serverReadBytes! > 0, `faultline: the server read ${fl.serverReadBytes} bytes from storage`)
    t.equal(fl.guestReadBytes, 0, 'and the guest none')
    t.equal(fl.mismatches, 0)
  })

  t.test('the ffi-napi backend serves the same memory', async t => {
    const r = await runOnce('faultline:ondemand', { ...ctx, opts: { ...opts, serverEnv: { FAULTLINE_FFI: 'ffi-napi' } } })
    t.equal(r.mismatches, 0)
    t.equal(r.faults, TOUCHED)
  })

  t.test('a guest checking against the wrong image fails the run (the check can fail)', async t => {
    const other = await ensureImage(join(dir, 'other'), MIB, 4)
    // Served from another image's snapshot, checked against this image's raw bytes.
    await t.rejects(runOnce('faultline:ondemand', { ...ctx, image: { ...image, snap: other.snap } }), BenchError)
    await t.rejects(runOnce('eager-lz4', { ...ctx, image: { ...image, snap: other.snap } }), /differ from/)
  })
})
