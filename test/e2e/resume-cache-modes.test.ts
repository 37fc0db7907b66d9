// bench resume's cache-mapped, hot and learned modes, each driven once through real processes
// at a small size: memory verified page by page, and what each must do checked in the server's
// own counts (the decoded cache full before a hot run, hits that never reach the server, a
// learned set taken and prefetched). Not timed.
import t from 'tap'
import { join } from 'node:path'
import { ensureImage, recordLearnedSet, runOnce, type RunContext, type RunRecord, type SweepOptions } from '../../src/bench/resume.js'
import { measureSequentialRead } from '../../src/bench/proc.js'
import { scratchDir } from './harness.js'

const MIB = 16
const PAGES = MIB * 256
const TOUCHED = Math.round(0.25 * PAGES)

t.test('cache-mapped, hot and learned resumes serve the image and do what they say', async t => {
  const dir = scratchDir(t, 'fl-cache-modes-')
  const image = await ensureImage(dir, MIB, 5)
  const opts: SweepOptions = {
    sizesMiB: [MIB],
    workloads: [],
    modes: [],
    caches: ['warm'],
    repeat: 1,
    imageDir: dir,
    cold: 'fadvise',
    verify: true,
    seed: 5,
  }
  const ctx: RunContext = {
    image,
    sizeMiB: MIB,
    workload: { pattern: 'random', fraction: 0.25 },
    cache: 'warm',
    round: 0,
    socketPath: join(dir, 'b.sock'),
    opts,
  }
  const check = (r: RunRecord, what: string) => {
    t.equal(r.mismatches, 0, `${what}: no page differs`)
    t.equal(r.verifiedPages, TOUCHED, `${what}: every touched page verified`)
  }

  const warmCache = await runOnce('faultline-cache:ondemand', ctx)
  check(warmCache, 'faultline-cache warm')
  t.equal(warmCache.map, 'cache', 'the guest mapped the decoded cache')
  t.equal(warmCache.decodedCacheBytes, 0, "warm: the server's decoded cache started empty")
  t.ok(warmCache.faults < TOUCHED, `warm: ${warmCache.faults} of ${TOUCHED} touches reached the server (the rest hit filled folios)`)

  const hotCache = await runOnce('faultline-cache:ondemand', { ...ctx, cache: 'hot' })
  check(hotCache, 'faultline-cache hot')
  t.ok(hotCache.decodedCacheBytes! >= image.sizeBytes / 2, `hot: ${hotCache.decodedCacheBytes} decoded bytes in the cache before the guest`)
  t.equal(hotCache.sessionCache!.privatePages, 0, 'hot: no page had to be served privately')
  t.ok(hotCache.faults <= warmCache.faults, `hot: ${hotCache.faults} faults (all-zero folios only), warm ${warmCache.faults}`)

  const hotAnon = await runOnce('faultline:ondemand', { ...ctx, cache: 'hot' })
  check(hotAnon, 'faultline hot')
  t.equal(hotAnon.map, 'anonymous')
  t.ok(hotAnon.sessionCache!.pagesFromCache > 0, `hot anonymous: ${hotAnon.sessionCache!.pagesFromCache} pages copied from the decoded cache, not decoded`)

  const hotEager = await runOnce('eager-lz4', { ...ctx, cache: 'hot' })
  check(hotEager, 'eager-lz4 hot')
  t.equal(hotEager.pagesInstalled, PAGES, 'eager-lz4 hot: every page installed before the guest ran')
  const hotMmap = await runOnce('mmap', { ...ctx, cache: 'hot' })
  check(hotMmap, 'mmap hot (= warm)')
  t.equal(hotMmap.decodedCacheBytes, null, 'mmap has no decoded cache')

  for (const mode of ['faultline:learned', 'faultline-cache:learned']) {
    const set = await recordLearnedSet(mode, ctx, join(dir, `learned-${mode.replace(':', '-')}`))
    const r = await runOnce(mode, { ...ctx, learnedSet: set })
    check(r, mode)
    t.match(r.policy, /^learned:/, `${mode}: the server took the recorded set (${r.policy})`)
    if (mode === 'faultline:learned') {
      t.ok(r.faults < TOUCHED, `${mode}: ${r.faults} of ${TOUCHED} touches faulted (the rest were prefetched)`)
    } else {
      t.ok(r.sessionCache!.foliosRequested > 0, `${mode}: the set became ${r.sessionCache!.foliosRequested} folio fills`)
    }
  }
  await t.rejects(runOnce('faultline:learned', ctx), /no learned set recorded/, 'a learned mode without its set fails')

  const read = measureSequentialRead(image.snap)
  t.equal(read.bytes, image.snapBytes, 'the bandwidth probe read the whole snapshot')
  t.ok(read.ns > 0)
})
