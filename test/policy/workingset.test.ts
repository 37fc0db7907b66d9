// workingset:TRACE: which pages a trace's working set holds, and the runs installed up front.
import t from 'tap'
import { pagesToRuns, WorkingSetPolicy } from '../../src/policy/workingset.js'
import { readTrace, workingSetPages } from '../../src/trace/reader.js'
import { TRACE_FLAG_BEFORE_RESUME } from '../../src/trace/format.js'
import { faults, writeTrace } from '../trace/fixtures.js'
import { SimContext, simulate } from './sim.js'
import { PolicyArgs } from '../../src/policy/args.js'

t.test('pagesToRuns sorts, deduplicates and merges adjacent pages', async t => {
  t.same(pagesToRuns([9, 3, 4, 5, 9, 20, 1]), { first: [1, 3, 9, 20], count: [1, 3, 1, 1] })
  t.same(pagesToRuns([]), { first: [], count: [] })
  t.same(pagesToRuns([9, 3, 4, 5, 9, 20, 1], 1), { first: [1, 9, 20], count: [5, 1, 1] }, 'gap 1 joins 1 and 3-5')
  t.same(pagesToRuns([9, 3, 4, 5, 9, 20, 1], 3), { first: [1, 20], count: [9, 1] })
})

t.test('workingset:TRACE@GAP installs the gaps too', async t => {
  const dir = t.testdir()
  const path = writeTrace(dir, 'g.fltrace', faults([10, 12, 13, 20]))
  const policy = WorkingSetPolicy.fromArgs(new PolicyArgs('workingset', `${path}@1`))
  t.equal(policy.name, `workingset:${path}@1`)
  t.equal(policy.runCount, 2)
  t.equal(policy.plannedPages, 5)
  const ctx = new SimContext(4096)
  simulate(policy, ctx, [])
  t.same(ctx.log, [10, 11, 12, 13, 20])
  t.throws(() => WorkingSetPolicy.fromArgs(new PolicyArgs('workingset', `${path}@9999`)), { message: `workingset: expected a GAP of 0..512 pages, got '9999'` })
})

t.test('the working set: faulted pages plus pages installed before resume, not prefetches', async t => {
  const dir = t.testdir()
  const path = writeTrace(dir, 'ws.fltrace', [
    [0, 100, 3, 1, TRACE_FLAG_BEFORE_RESUME, 0, 9000], // 100..102 installed by onStart
    ...faults([7, 8, 200]),
    [5000, 9, 16, 1, 0, 0, 3000], // a prefetch after the fault on 8: not part of the set
    ...faults([8, 101, 300]), // repeats are dropped
  ])
  t.same(workingSetPages(readTrace(path)), [100, 101, 102, 7, 8, 200, 300])
  const policy = WorkingSetPolicy.fromArgs(new PolicyArgs('workingset', path))
  t.equal(policy.name, `workingset:${path}`)
  t.equal(policy.pages, 7)
  t.equal(policy.runCount, 4, 'runs 7-8, 100-102, 200 and 300')
  const ctx = new SimContext(4096)
  const r = simulate(
    policy,
    ctx,
    [7, 8, 100, 101, 102, 200, 300, 5].map(p => [p, 1] as [number, number]),
  )
  t.equal(r.faults, 1, 'only the page outside the working set faults')
  t.equal(ctx.installed[1], 7, 'the working set is installed up front as prefetch')
})

t.test('pages outside the guest are skipped, not installed', async t => {
  const dir = t.testdir()
  const path = writeTrace(dir, 'ws.fltrace', faults([10, 11, 5000]), { snapshotPages: 8192 })
  const ctx = new SimContext(8192, [{ firstPage: 0, pageCount: 4096 }])
  simulate(WorkingSetPolicy.fromArgs(new PolicyArgs('workingset', path)), ctx, [])
  t.same(ctx.log, [10, 11])
})

t.test('errors name the trace and what is wrong', async t => {
  t.throws(() => WorkingSetPolicy.fromArgs(new PolicyArgs('workingset', undefined)), {
    name: 'PolicyArgumentError',
    message: /workingset: expected a trace file/,
  })
  t.throws(() => WorkingSetPolicy.fromArgs(new PolicyArgs('workingset', '/nonexistent/x.fltrace')), {
    name: 'PolicyArgumentError',
    message: /^workingset: \/nonexistent\/x\.fltrace: cannot read trace: no such file/,
  })
  const dir = t.testdir({ 'not-a-trace': 'hello world, this is text and not a trace at all '.repeat(4) })
  t.throws(() => WorkingSetPolicy.fromArgs(new PolicyArgs('workingset', `${dir}/not-a-trace`)), {
    name: 'PolicyArgumentError',
    message: /not a faultline trace/,
  })
  const path = writeTrace(dir, 'ws.fltrace', faults([1, 2]))
  for (const gap of ['-1', '1.5', '513', '+1e9']) {
    t.throws(
      () => WorkingSetPolicy.fromArgs(new PolicyArgs('workingset', `${path}@${gap}`)),
      { name: 'PolicyArgumentError', message: `workingset: expected a GAP of 0..512 pages, got '${gap}'` },
      `@${gap} is a bad gap, not part of the file name`,
    )
  }
})

t.test('a trace recorded on a snapshot of another shape is refused', async t => {
  const dir = t.testdir()
  const path = writeTrace(dir, 'ws.fltrace', faults([1, 2]), { snapshotPages: 8192 })
  const args = new PolicyArgs('workingset', path)
  t.throws(() => WorkingSetPolicy.fromArgs(args, { pageSize: 4096, pageCount: 4096 }), {
    name: 'PolicyArgumentError',
    message: `workingset: ${path} was recorded on a snapshot of 8192 pages of 4096 bytes; this one has 4096 pages of 4096`,
  })
  t.throws(() => WorkingSetPolicy.fromArgs(args, { pageSize: 8192, pageCount: 8192 }), { message: /this one has 8192 pages of 8192$/ })
  t.ok(WorkingSetPolicy.fromArgs(args, { pageSize: 4096, pageCount: 8192 }), 'the shape it was recorded on is accepted')
  t.ok(WorkingSetPolicy.fromArgs(args), 'and without a snapshot to check against, nothing is checked')
})
