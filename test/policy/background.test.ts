// background[:ORDER]: idle-time filling in address order, or a trace's working set first.
import t from 'tap'
import { BackgroundPolicy } from '../../src/policy/background.js'
import { RunList } from '../../src/policy/policy.js'
import { faults, writeTrace } from '../trace/fixtures.js'
import { SimContext } from './sim.js'
import { PolicyArgs } from '../../src/policy/args.js'

/** Calls onIdle until it reports nothing left; returns the runs' sizes. */
function drain(policy: BackgroundPolicy, ctx: SimContext, budget: number): number[] {
  const plan = new RunList(4)
  const sizes: number[] = []
  for (let calls = 0; calls < 100000; calls++) {
    plan.clear()
    const more = policy.onIdle(ctx, plan, budget)
    let pages = 0
    for (let r = 0; r < plan.length; r++) pages += plan.count[r]
    if (pages > budget) throw new Error(`onIdle planned ${pages} pages for a budget of ${budget}`)
    sizes.push(pages)
    ctx.apply(plan)
    if (!more) return sizes
  }
  throw new Error('onIdle never finished')
}

t.test('address order: every page of every range, within the budget, resident ones skipped', async t => {
  const ctx = new SimContext(10000, [
    { firstPage: 5000, pageCount: 1000 },
    { firstPage: 100, pageCount: 700 },
  ])
  for (const p of [100, 101, 640, 5999]) ctx.resident[p] = 1
  const policy = BackgroundPolicy.fromArgs(new PolicyArgs('background', undefined))
  t.equal(policy.name, 'background')
  drain(policy, ctx, 256)
  t.equal(ctx.log.length, 1700 - 4)
  t.same(ctx.log.slice(0, 3), [102, 103, 104], 'the lowest range first, skipping resident pages')
  t.ok(
    ctx.log.every((p, i) => i === 0 || p > ctx.log[i - 1]),
    'ascending address order',
  )
  t.equal(ctx.installed[2], 1696, 'installed as background')
})

t.test('trace order first, then address order', async t => {
  const dir = t.testdir()
  const order = [50, 51, 52, 7, 900, 901, 3]
  const path = writeTrace(dir, 'o.fltrace', faults(order))
  const ctx = new SimContext(1024)
  ctx.resident[900] = 1
  const policy = BackgroundPolicy.fromArgs(new PolicyArgs('background', path))
  t.equal(policy.name, `background:${path}`)
  drain(policy, ctx, 2)
  t.same(ctx.log.slice(0, 6), [50, 51, 52, 7, 901, 3], "the trace's pages in its order (resident 900 skipped)")
  t.same(ctx.log.slice(6, 10), [0, 1, 2, 4])
  t.equal(ctx.log.length, 1023)
})

t.test('errors', async t => {
  t.throws(() => BackgroundPolicy.fromArgs(new PolicyArgs('background', '/nonexistent.fltrace')), {
    name: 'PolicyArgumentError',
    message: /background: ORDER must be 'address' or a trace file: \/nonexistent.fltrace/,
  })
  t.equal(BackgroundPolicy.fromArgs(new PolicyArgs('background', 'address')).name, 'background')
})
