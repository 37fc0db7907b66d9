// The policy workbench on the committed real-program traces (traces/vm): every trace with its
// page map simulates under ondemand to exactly what the recording session saw, and `bench
// policies --traces` builds its per-trace tables, learned-set column and plot from them.
import t from 'tap'
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { columnLabel, loadTraceSet, runTracePolicies } from '../../src/bench/trace-policies.js'
import { benchPoliciesCommand, formatTraceTables } from '../../src/cli/bench-policies.js'
import { createPolicy } from '../../src/policy/registry.js'
import { DEFAULT_COST_MODEL, loadCostModel } from '../../src/bench/cost-model.js'
import { readPageMap } from '../../src/trace/page-map.js'
import { readTrace } from '../../src/trace/reader.js'
import { accessOrder, simSpace, simulatePolicy } from '../../src/bench/simulate.js'
import { traceStats } from '../../src/trace/stats.js'
import { REPO_ROOT } from '../../src/util/repo.js'
import { faults, writeTrace } from '../trace/fixtures.js'

const ROOT = REPO_ROOT
const VM = join(ROOT, 'traces/vm')
const model = loadCostModel(DEFAULT_COST_MODEL)

t.test('the committed collection: six programs, two runs each, page maps', async t => {
  const set = loadTraceSet(VM)
  t.equal(set.length, 12)
  t.same([...new Set(set.map(e => e.program))], ['boot', 'xz', 'sqlite', 'python', 'gcc', 'service'])
  for (const p of new Set(set.map(e => e.program)))
    t.same(
      set.filter(e => e.program === p).map(e => e.run),
      [1, 2],
      `${p}: runs 1 and 2`,
    )
  t.ok(set.every(e => e.pageMap && existsSync(e.pageMap)))
})

t.test('ondemand over each committed trace gives back what its session recorded', async t => {
  const manifest = JSON.parse(readFileSync(join(VM, 'manifest.json'), 'utf8')) as { traces: Array<{ trace: string; pageMap: string; session: string }> }
  for (const e of manifest.traces) {
    const tr = readTrace(join(VM, e.trace))
    const r = simulatePolicy(await createPolicy('ondemand'), accessOrder(tr), simSpace(tr, readPageMap(join(VM, e.pageMap))), { model, tier: 'warm' })
    const st = traceStats(tr)
    t.equal(r.faults, st.faults, `${e.trace}: ${r.faults} faults`)
    t.equal(r.pagesInstalled, st.uniquePagesInstalled)
    // The session printed the stored bytes it read (e.g. "5.6 MiB read"): the page map is that snapshot's.
    const m = /([\d.]+) (B|KiB|MiB) read/.exec(e.session)!
    const printed = Number(m[1]) * { B: 1, KiB: 1024, MiB: 2 ** 20 }[m[2] as 'B']
    t.ok(
      Math.abs(r.bytesRead - printed) <= (m[2] === 'B' ? 0 : 0.05 * 1024 * (m[2] === 'MiB' ? 1024 : 1)),
      `${e.trace}: ${r.bytesRead} bytes read simulated, the session printed ${m[0]}`,
    )
  }
})

t.test('bench policies --traces: tables, the learned column, the plot', async t => {
  const out = t.testdir()
  const code = await benchPoliciesCommand(['--traces', VM, '--out', out])
  t.equal(code, 0)
  const md = readFileSync(join(out, 'results.md'), 'utf8')
  t.match(md, /^Command: `faultline bench policies --traces .*traces\/vm --out .*` \(\d{4}-\d\d-\d\d\)/)
  for (const name of ['boot-1', 'xz-2', 'sqlite-1', 'python-2', 'gcc-1', 'service-2']) t.match(md, new RegExp(`\\| ${name} `), name)
  t.match(md, /cost model .*costs\.json/)
  const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'))
  const learned = json.policies.indexOf('workingset:{run1}')
  t.ok(learned >= 0)
  for (const row of json.rows) {
    const cell = row.cells[learned]
    if (row.entry.run === 1) t.equal(cell, null, `${row.entry.name}: nothing learned from itself in that column`)
    else t.match(cell, { spec: 'workingset:{run1}', policy: `workingset:${join(VM, `${row.entry.program}-1.fltrace.gz`)}` })
    const ondemand = row.cells[json.policies.indexOf('ondemand')]
    t.equal(ondemand.faults, row.accesses, `${row.entry.name}: ondemand faults on every access`)
  }
  const svg = readFileSync(join(out, 'policies.svg'), 'utf8')
  t.match(svg, /^<svg /)
  const cells = json.rows.reduce((n: number, row: { cells: unknown[] }) => n + row.cells.filter(c => c !== null).length, 0)
  t.equal(cells, 12 * json.policies.length - 6 * json.policies.filter((p: string) => p.includes('{run1}')).length, 'the learned columns hold run 2 only')
  t.equal((svg.match(/<rect [^>]*><title>/g) ?? []).length, cells, 'a bar per trace and policy')
  t.match(svg, /learned run 1 -&gt; this run/)
})

t.test('trace sets without a manifest; what is refused', async t => {
  const dir = t.testdir()
  writeTrace(dir, 'app-1.fltrace', faults([1, 2, 3]))
  writeTrace(dir, 'app-2.fltrace', faults([2, 3, 4, 5]))
  writeTrace(dir, 'solo.fltrace', faults([9]))
  const set = loadTraceSet(dir)
  t.same(
    set.map(e => [e.name, e.program, e.run]),
    [
      ['app-1', 'app', 1],
      ['app-2', 'app', 2],
      ['solo', 'solo', 1],
    ],
  )
  const r = await runTracePolicies({ traces: set, policies: ['ondemand', 'workingset:{run1}'], model, tier: 'warm' })
  t.equal(r.rows[1].cells[1]!.faults, 2, "app-2 with app-1's working set faults on pages 4 and 5 only")
  t.equal(r.rows[2].cells[1], undefined)
  const text = formatTraceTables(r, { command: 'x', date: 'd', markdown: false, modelLines: [] })
  t.match(text, /app-2 +4 +1\.000 +0\.500/)
  t.equal(columnLabel('workingset:{run1}@8'), 'workingset:RUN1@8')
  t.throws(() => loadTraceSet(join(dir, 'nope')), { message: /no such directory/ })
  const empty = join(dir, 'empty')
  mkdirSync(empty)
  t.throws(() => loadTraceSet(empty), { message: /no \*\.fltrace or \*\.fltrace\.gz files/ })
  const bad = join(dir, 'bad')
  mkdirSync(bad)
  copyFileSync(join(dir, 'app-1.fltrace'), join(bad, 'a-1.fltrace'))
  writeFileSync(join(bad, 'manifest.json'), JSON.stringify({ traces: [{ trace: 'a-1.fltrace', pageMap: 'gone.pagemap.gz' }] }))
  t.throws(() => loadTraceSet(bad), { message: /manifest.json: lists .*gone.pagemap.gz, which is missing/ })
  await t.rejects(benchPoliciesCommand(['--traces', dir, '--rounds', '2']), { message: /--rounds is for live runs/ })
  await t.rejects(benchPoliciesCommand(['--traces', dir, '--storage', 'tape']), { message: /--storage: expected warm, cold, remote/ })
})
