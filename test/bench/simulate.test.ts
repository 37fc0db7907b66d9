// Trace simulation without a guest: the access order a trace gives, the session model the
// policies run against (resident set, zero-page runs, region edges, run length, idle budget,
// the start set racing the guest), the cost of what they install, page maps, and `faultline
// trace simulate` itself.
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { traceCommand } from '../../src/cli/trace.js'
import { createPolicy } from '../../src/policy/registry.js'
import { IDLE_BATCH_PAGES, MAX_RUN_BYTES, START_BATCH_PAGES } from '../../src/server/session.js'
import { loadCostModel, type CostModel } from '../../src/bench/cost-model.js'
import { readPageMap, writePageMap, type PageMap } from '../../src/trace/page-map.js'
import { readTrace } from '../../src/trace/reader.js'
import { accessOrder, SIM_IDLE_BATCH_PAGES, SIM_MAX_RUN_BYTES, SIM_START_BATCH_PAGES, simSpace, simulatePolicy } from '../../src/bench/simulate.js'
import { faults, writeTrace, type Rec } from '../trace/fixtures.js'

const MODEL: CostModel = {
  faultNs: 10_000,
  installNs: 1000,
  copyPageNs: 100,
  zeroInstallNs: 700,
  zeroPageNs: 10,
  readNs: 500,
  decodePageNs: 2000,
  byteNs: { warm: 1, cold: 10, remote: 20 },
  remoteChunkNs: 1_000_000,
  sources: {},
  command: 'test',
  measuredAt: 'test',
}
const warm = { model: MODEL, tier: 'warm' as const }

function map(pageCount: number, kind: (p: number) => number, stored = 1000): PageMap {
  const kinds = Uint8Array.from({ length: pageCount }, (_, p) => kind(p))
  return {
    source: 'test map',
    pageSize: 4096,
    pageCount,
    chunkPages: 64,
    kinds,
    storedBytes: Uint32Array.from(kinds, k => (k === 0 ? 0 : k === 2 ? 4096 : stored)),
  }
}

async function io(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '',
    stderr = ''
  const code = await traceCommand(argv, { stdout: { write: s => (stdout += s) }, stderr: { write: s => (stderr += s) } })
  return { code, stdout, stderr }
}

t.test('the session model installs runs as the session does', async t => {
  t.equal(SIM_MAX_RUN_BYTES, MAX_RUN_BYTES, "one install covers what the session's does")
  t.equal(SIM_IDLE_BATCH_PAGES, IDLE_BATCH_PAGES, "onIdle gets the session's budget")
  t.equal(SIM_START_BATCH_PAGES, START_BATCH_PAGES, "start batches are the session's size")
})

t.test('access order: first touches in time order, quiet gaps between faults', async t => {
  const dir = t.testdir()
  const recs: Rec[] = [
    [1000, 10, 1, 0, 1, 7, 500], // a write fault, served in 500 ns
    [5000, 11, 1, 0, 0, 8, 500],
    [3000, 10, 0, 0, 0, 8, 100], // a second thread on page 10: not a first touch
    [6000, 12, 3, 1, 0, 0, 900], // a prefetch record: not an access
    [9000, 4000, 1, 0, 0, 7, 500], // outside the region
    [20000, 13, 1, 0, 0, 7, 500],
  ]
  const tr = readTrace(writeTrace(dir, 'a.fltrace', recs, { regions: [{ address: 0x10000000, firstPage: 0, pageCount: 1024 }] }))
  const a = accessOrder(tr)
  t.same([...a.page], [10, 11, 13])
  t.same([...a.threadId], [7, 8, 7])
  t.same([...a.write], [1, 0, 0])
  t.equal(a.threads, 2)
  t.equal(a.skipped, 1)
  // Quiet: 0..1000 before the first; 1500..3000 and 3100..5000 before page 11; 5500..9000 and
  // 9500..20000 before page 13.
  t.same([...a.gapNs], [1000, 1500 + 1900, 3500 + 10500])
})

t.test('ondemand: one fault and one install per access, costed from the counts', async t => {
  const dir = t.testdir()
  const pages = [5, 6, 7, 100, 3, 100]
  const tr = readTrace(writeTrace(dir, 'o.fltrace', faults(pages)))
  const m = map(4096, p => (p === 100 ? 0 : 1))
  const r = simulatePolicy(await createPolicy('ondemand'), accessOrder(tr), simSpace(tr, m), warm)
  t.match(r, {
    accesses: 5,
    faults: 5,
    pagesInstalled: 5,
    wastedPages: 0,
    zeroPages: 1,
    installs: 5,
    reads: 4,
    bytesRead: 4000,
    pagesByCause: { fault: 5, prefetch: 0, background: 0 },
  })
  const data = MODEL.faultNs + MODEL.installNs + MODEL.copyPageNs + MODEL.readNs + MODEL.decodePageNs + 1000 * MODEL.byteNs.warm
  const zero = MODEL.faultNs + MODEL.zeroInstallNs + MODEL.zeroPageNs
  t.equal(r.estimatedMs, (4 * data + zero) / 1e6)
})

t.test('prefetch runs split where the page kind changes, at region edges and every 2 MiB', async t => {
  const dir = t.testdir()
  const regions = [
    { address: 0x10000000, firstPage: 0, pageCount: 600 },
    { address: 0x20000000, firstPage: 600, pageCount: 1000 },
  ]
  const tr = readTrace(writeTrace(dir, 'p.fltrace', faults([0]), { regions, snapshotPages: 2000 }))
  // Pages 0..9 stored, 10..19 zero, the rest stored; readahead:1999 asks for everything.
  const m = map(2000, p => (p >= 10 && p < 20 ? 0 : 1))
  const r = simulatePolicy(await createPolicy('readahead:1999'), accessOrder(tr), simSpace(tr, m), warm)
  t.equal(r.pagesInstalled, 1600, 'nothing past the last region')
  t.equal(r.wastedPages, 1599)
  t.equal(r.zeroPages, 10)
  // The fault's own run [0,1), then [1,10) [10,20) [20,532) [532,600) | [600,1112) [1112,1600)
  t.equal(r.installs, 7)
  t.equal(r.reads, 6)
  t.equal(r.bytesRead, (1600 - 10) * 1000)
})

t.test('a policy sees resident pages, the regions and page kinds through its context', async t => {
  const dir = t.testdir()
  const seen: string[] = []
  const module = join(dir, 'probe.mjs')
  writeFileSync(
    module,
    `export default () => ({ name: 'probe', onFault(f, ctx, plan) {
    globalThis.__probe.push([f.page, f.threadId, f.write, ctx.isResident(f.page + 1), ctx.isResident(99999), ctx.kindOf(f.page + 1), ctx.ranges.length, f.address.toString(16)].join(' '))
    plan.add(f.page + 1, 1, 1)
  } })\n`,
  )
  ;(globalThis as { __probe?: string[] }).__probe = seen
  const tr = readTrace(
    writeTrace(dir, 'u.fltrace', [
      [10, 8, 1, 0, 1, 3, 1],
      [20, 9, 1, 0, 0, 4, 1],
      [30, 20, 1, 0, 0, 5, 1],
    ]),
  )
  const r = simulatePolicy(
    await createPolicy(module),
    accessOrder(tr),
    simSpace(
      tr,
      map(4096, p => (p === 21 ? 0 : 1)),
    ),
    warm,
  )
  t.same(seen, ['8 3 true false true 1 1 7f0000008000', '20 5 false false true 0 1 7f0000014000'], 'page 9 was prefetched: no fault, no call')
  t.match(r, { faults: 2, pagesInstalled: 4, wastedPages: 1, pagesByCause: { fault: 2, prefetch: 2 } })
})

t.test('background gets the quiet gaps as its budget', async t => {
  const dir = t.testdir()
  const m = map(4096, () => 1)
  const perPage = MODEL.installNs / 256 + MODEL.copyPageNs + MODEL.readNs / 256 + MODEL.decodePageNs + 1000 * MODEL.byteNs.warm
  // Busy: faults back to back, each served in 1 µs: no time for background work.
  const busy = readTrace(
    writeTrace(
      dir,
      'busy.fltrace',
      [1, 2, 3, 4].map((p, i): Rec => [i * 1000, p, 1, 0, 0, 1, 1000]),
    ),
  )
  const b = simulatePolicy(await createPolicy('background'), accessOrder(busy), simSpace(busy, m), warm)
  t.equal(b.pagesByCause.background, 0)
  t.equal(b.faults, 4)
  // A long quiet gap before the last access: enough to fill the whole region first.
  const quiet = readTrace(
    writeTrace(dir, 'quiet.fltrace', [
      [0, 1, 1, 0, 0, 1, 1000],
      [1e9, 4000, 1, 0, 0, 1, 1000],
    ]),
  )
  const q = simulatePolicy(await createPolicy('background'), accessOrder(quiet), simSpace(quiet, m), warm)
  t.equal(q.faults, 1, 'the second access found its page installed in the gap')
  t.equal(q.pagesByCause.background, 4095)
  t.ok(q.estimate.backgroundMs > ((4095 * perPage) / 1e6) * 0.99, 'the background work was costed')
  // A gap of about 300 pages' work: one batch of 256 fits, the second overruns and the next fault waits.
  const gap = Math.round(300 * perPage)
  const some = readTrace(
    writeTrace(dir, 'some.fltrace', [
      [0, 1, 1, 0, 0, 1, 0],
      [gap, 4000, 1, 0, 0, 1, 0],
    ]),
  )
  const s = simulatePolicy(await createPolicy('background'), accessOrder(some), simSpace(some, m), warm)
  t.equal(s.pagesByCause.background, 512)
  t.equal(s.faults, 2)
  t.ok(s.estimate.idleWaitMs > 0, `the fault waited ${s.estimate.idleWaitMs} ms for the batch in progress`)
})

t.test('a start set goes in while the guest runs: ahead of a slow guest, one batch at a time before a fast one, following its faults', async t => {
  const dir = t.testdir()
  const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i)
  // The set: three runs of one batch each, A = 0..63, B = 1000..1063, C = 2000..2063, in that order.
  const set = writeTrace(dir, 'set.fltrace', faults([...range(0, 64), ...range(1000, 64), ...range(2000, 64)]))
  const policy = async () => await createPolicy(`workingset:${set}`)
  const m = map(4096, () => 1)
  const batchNs = MODEL.installNs + MODEL.readNs + 64 * (MODEL.copyPageNs + MODEL.decodePageNs + 1000 * MODEL.byteNs.warm)
  // Slow: the guest's first touch comes a second after resume, the whole set is in by then.
  const late: Rec[] = faults([5, 1010, 2020]).map(([time, ...rest]) => [time + 1e9, ...rest] as Rec)
  const slowTrace = readTrace(writeTrace(dir, 'slow.fltrace', late))
  const slow = simulatePolicy(await policy(), accessOrder(slowTrace), simSpace(slowTrace, m), warm)
  t.match(slow, { faults: 0, startSetWaits: 0, pagesStartSet: 192, pagesBeforeResume: 0, pagesInstalled: 192, estimatedMs: 0 })
  t.equal(slow.estimate.startSetMs, (3 * batchNs) / 1e6, 'three batches, costed, none of it waited for')
  // The same guest a million times faster (--gap-scale): its first touch comes while A goes in.
  const sped = simulatePolicy(await policy(), accessOrder(slowTrace), simSpace(slowTrace, m), { ...warm, gapScale: 1e-6 })
  t.match(sped, { faults: 2, startSetWaits: 1, pagesStartSet: 190 }, 'waits for page 5 in A, faults on 1010 where A ended and on 2020 while B goes in')
  t.ok(sped.estimatedMs > 0)
  // Fast: the guest touches the set in its order without a pause (each access 1 µs after the
  // last was served). It waits for A going in, faults where A ends (the session, busy with A,
  // had not begun B), waits for the rest of B, and so on: one fault per batch after the first.
  const inOrder = readTrace(writeTrace(dir, 'fast.fltrace', faults([...range(0, 64), ...range(1000, 64), ...range(2000, 64)])))
  const fast = simulatePolicy(await policy(), accessOrder(inOrder), simSpace(inOrder, m), warm)
  t.match(fast, { faults: 2, startSetWaits: 3, pagesStartSet: 190, pagesInstalled: 192, wastedPages: 0 })
  t.ok(fast.estimate.startSetWaitMs > batchNs / 1e6, `the guest waited ${fast.estimate.startSetWaitMs} ms for the start set`)
  // A fault ahead in the set moves the batches there: the guest touches C first, then B.
  // After the fault on 2000 the next batch is the rest of C (one wait, no more faults there);
  // B, passed over, goes in at the end, after the fault on 1000 (a wait on 1001). Without the
  // jump B would go in first and C's pages would fault.
  const jumpTrace = readTrace(writeTrace(dir, 'jump.fltrace', faults([2000, 2001, 2063, 5, 1000, 1001])))
  const jump = simulatePolicy(await policy(), accessOrder(jumpTrace), simSpace(jumpTrace, m), warm)
  t.match(jump, { faults: 2, startSetWaits: 2, pagesStartSet: 190, pagesInstalled: 192 })
  // A policy that says so installs its set before the guest runs instead (as eager does).
  const ws = await policy()
  const b = simulatePolicy(
    { name: 'before', startBeforeResume: true, onStart: (ctx, plan) => ws.onStart!(ctx, plan), onFault() {} },
    accessOrder(inOrder),
    simSpace(inOrder, m),
    warm,
  )
  t.match(b, { faults: 0, startSetWaits: 0, pagesStartSet: 0, pagesBeforeResume: 192 })
  t.equal(b.estimate.beforeResumeMs, (3 * batchNs) / 1e6)
})

t.test('onStart work is installed before resume; remote reads fetch whole chunks', async t => {
  const dir = t.testdir()
  const tr = readTrace(writeTrace(dir, 'e.fltrace', faults([1, 2])))
  const m = map(4096, p => (p % 2 ? 1 : 0))
  const e = simulatePolicy(await createPolicy('eager'), accessOrder(tr), simSpace(tr, m), warm)
  t.match(e, { faults: 0, pagesBeforeResume: 4096, pagesInstalled: 4096, wastedPages: 4094, zeroPages: 2048 })
  t.equal(e.estimate.faultStallMs, 0)
  const r = simulatePolicy(await createPolicy('ondemand'), accessOrder(tr), simSpace(tr, m), { model: MODEL, tier: 'remote' })
  t.equal(r.chunksFetched, 1, 'pages 1 and 2 share a 64-page chunk')
  const one = MODEL.faultNs + MODEL.installNs + MODEL.copyPageNs + MODEL.readNs + MODEL.decodePageNs + 1000 * MODEL.byteNs.warm
  t.equal(r.estimatedMs, (one + MODEL.faultNs + MODEL.zeroInstallNs + MODEL.zeroPageNs + MODEL.remoteChunkNs! + 32 * 1000 * MODEL.byteNs.remote) / 1e6)
  t.throws(() => simulatePolicy({ name: 'x', onFault() {} }, accessOrder(tr), simSpace(tr, m), { model: { ...MODEL, remoteChunkNs: null }, tier: 'remote' }), {
    message: /no remote constants/,
  })
})

t.test('page maps: round trip, compressed; a map of another snapshot is refused', async t => {
  const dir = t.testdir()
  const m = map(4096, p => p % 3)
  writePageMap(m, join(dir, 'm.pagemap.gz'))
  const back = readPageMap(join(dir, 'm.pagemap.gz'))
  t.same([...back.kinds], [...m.kinds])
  t.same([...back.storedBytes], [...m.storedBytes])
  t.equal(back.chunkPages, 64)
  writeFileSync(join(dir, 'junk'), 'hello')
  t.throws(() => readPageMap(join(dir, 'junk')), { message: /junk: not a faultline page map or snapshot/ })
  writeFileSync(join(dir, 'junk.gz'), gzipSync(Buffer.from('hello')))
  t.throws(() => readPageMap(join(dir, 'junk.gz')), { message: /not a faultline page map/ })
  const tr = readTrace(writeTrace(dir, 'x.fltrace', faults([1]), { snapshotPages: 8192 }))
  t.throws(() => simSpace(tr, m), { message: /4096 pages of 4096 bytes, but .*x.fltrace was recorded on a snapshot of 8192 pages/ })
})

t.test('faultline trace simulate', async t => {
  const dir = t.testdir()
  const costs = join(dir, 'costs.json')
  writeFileSync(costs, JSON.stringify({ model: MODEL }))
  t.equal(loadCostModel(costs).faultNs, MODEL.faultNs)
  const plain = writeTrace(dir, 's.fltrace', faults([1, 2, 3, 4, 50]))
  const gz = join(dir, 's.fltrace.gz')
  writeFileSync(gz, gzipSync(readFileSync(plain)))
  const r = await io(['simulate', gz, '--policy', 'ondemand,readahead:3', '--costs', costs, '--json'])
  t.equal(r.code, 0, r.stderr)
  const j = JSON.parse(r.stdout)
  t.same(
    j.policies.map((p: { policy: string; faults: number; pagesInstalled: number; wastedPages: number }) => [
      p.policy,
      p.faults,
      p.pagesInstalled,
      p.wastedPages,
    ]),
    [
      ['ondemand', 5, 5, 0],
      ['readahead:3', 2, 8, 3],
    ],
  )
  for (const p of j.policies) t.same(Object.keys(p).slice(0, 6), ['policy', 'faults', 'pagesInstalled', 'wastedPages', 'bytesRead', 'estimatedMs'])
  t.equal(j.costModel.faultNs, MODEL.faultNs, 'the model comes with the result')
  const text = await io(['simulate', plain, '--policy', 'ondemand', '--costs', costs])
  t.match(text.stdout, /5 accesses .* recorded under ondemand/)
  t.match(text.stdout, /cost model .*costs.json \(test, test\); stored bytes warm/)
  t.match(text.stdout, /every page taken as LZ4/)
  t.equal((await io(['simulate', plain, '--costs', costs])).code, 2, '--policy is required')
  t.match(await io(['simulate', plain, '--policy', 'ondemand', '--costs', costs, '--gap-scale', '0']), {
    code: 2,
    stderr: /--gap-scale: expected a number > 0 and at most 1000, got '0'/,
  })
  t.match(await io(['simulate', plain, '--policy', 'ondemand', '--costs', costs, '--gap-scale', '1e3']), { code: 2, stderr: /--gap-scale: expected a number/ })
  t.match(await io(['simulate', plain, '--policy', 'ondemand', '--costs', costs, '--gap-scale', '0.05']), {
    code: 0,
    stdout: /running time between faults: the recorded one x 0.05/,
  })
  t.match(
    (await io(['simulate', plain, '--policy', 'ondemand', '--storage', 'tape', '--costs', costs])).stderr,
    /--storage: expected warm, cold, remote, got 'tape'/,
  )
  await t.rejects(io(['simulate', join(dir, 'missing.fltrace'), '--policy', 'ondemand', '--costs', costs]), { message: /missing.fltrace/ })
  const unknown = await io(['simulate', plain, '--policy', 'nosuch', '--costs', costs])
  t.equal(unknown.code, 2, 'an unknown policy is a usage error')
  t.match(unknown.stderr, /^faultline: --policy: unknown policy 'nosuch'/)
  await t.rejects(io(['simulate', plain, '--policy', 'ondemand', '--costs', join(dir, 'none.json')]), {
    message: /no cost model there: measure one with faultline bench costs/,
  })
})
