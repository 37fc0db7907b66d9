// primed:TRACE[+N]: the learned working set up front, then readahead of N on every fault
// outside it.
import t from 'tap'
import { createPrimed, PrimedPolicy } from '../../src/policy/primed.js'
import { createPolicy } from '../../src/policy/registry.js'
import { faults, writeTrace } from '../trace/fixtures.js'
import { SimContext, simulate } from './sim.js'

t.test('the set before resume, readahead after each fault outside it', async t => {
  const dir = t.testdir()
  const trace = writeTrace(dir, 'run1.fltrace', faults([10, 11, 12, 40]))
  const policy = await createPrimed(`${trace}+4`) as PrimedPolicy
  t.equal(policy.name, `primed:${trace}+4`)
  const ctx = new SimContext(4096)
  // Run 2 touches the learned pages, then a scan the set does not hold.
  const r = simulate(policy, ctx, [10, 11, 12, 40, 100, 101, 102, 103, 104, 105, 106].map(p => [p, 1] as [number, number]))
  t.same(ctx.log.slice(0, 4), [10, 11, 12, 40], 'the working set, installed before any access')
  t.equal(r.faults, 2, 'faults at 100 (then 101..104 read ahead) and 105 (then 106..109)')
  t.equal(ctx.installed[1], 4 + 8, 'the set and the two read-ahead windows, as prefetch')
  t.equal(r.untouched, 3)
  t.equal((await createPolicy(`primed:${trace}`)).name, `primed:${trace}+15`, 'N defaults to readahead\'s 15')
})

t.test('arguments', async t => {
  const dir = t.testdir()
  const trace = writeTrace(dir, 'a.fltrace', faults([1]))
  await t.rejects(createPolicy('primed'), { message: /primed: expected a trace file: --policy primed:TRACE\[\+N\]/ })
  await t.rejects(createPolicy(`primed:${trace}+0`), { message: /N must be 1\.\.65536/ })
  await t.rejects(createPolicy(`primed:${dir}/missing.fltrace`), { message: /workingset: .*missing\.fltrace/ })
})
