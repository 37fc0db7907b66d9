// primed:TRACE[+N]: the learned working set from the start, then readahead of N on every fault
// outside it.
import t from 'tap'
import { PolicyArgs } from '../../src/policy/args.js'
import { PrimedPolicy } from '../../src/policy/primed.js'
import { createPolicy } from '../../src/policy/registry.js'
import { faults, writeTrace } from '../trace/fixtures.js'
import { SimContext, simulate } from './sim.js'

t.test('the set from the start, readahead after each fault outside it', async t => {
  const dir = t.testdir()
  const trace = writeTrace(dir, 'run1.fltrace', faults([10, 11, 12, 40]))
  const policy = PrimedPolicy.fromArgs(new PolicyArgs('primed', `${trace}+4`))
  t.equal(policy.name, `primed:${trace}+4`)
  const ctx = new SimContext(4096)
  // Run 2 touches the learned pages, then a scan the set does not hold.
  const r = simulate(
    policy,
    ctx,
    [10, 11, 12, 40, 100, 101, 102, 103, 104, 105, 106].map(p => [p, 1] as [number, number]),
  )
  t.same(ctx.log.slice(0, 4), [10, 11, 12, 40], 'the working set, planned at the start')
  t.equal(r.faults, 2, 'faults at 100 (then 101..104 read ahead) and 105 (then 106..109)')
  t.equal(ctx.installed[1], 4 + 8, 'the set and the two read-ahead windows, as prefetch')
  t.equal(r.untouched, 3)
  t.equal((await createPolicy(`primed:${trace}`)).name, `primed:${trace}+15`, "N defaults to readahead's 15")
})

t.test('arguments', async t => {
  const dir = t.testdir()
  const trace = writeTrace(dir, 'a.fltrace', faults([1]))
  const refused: Array<[string, RegExp]> = [
    ['primed', /^primed: expected a trace file: --policy primed:TRACE\[\+N\]$/],
    ['primed:', /^primed: expected a trace file/],
    [`primed:${trace}+0`, /^primed: expected an N of 1\.\.65536 pages, got '0'$/],
    [`primed:${trace}+65537`, /^primed: expected an N of 1\.\.65536 pages, got '65537'$/],
    [`primed:${dir}/missing.fltrace`, /^primed: .*missing\.fltrace/],
    [`primed:${dir}/missing.fltrace+4`, /^primed: .*missing\.fltrace: /],
  ]
  for (const [spec, message] of refused) await t.rejects(createPolicy(spec), { name: 'PolicyArgumentError', code: 'FL_ERR_POLICY_ARGUMENT', message }, spec)
  t.equal((await createPolicy(`primed:${trace}+65536`)).name, `primed:${trace}+65536`)
})
