// The start set's batches: in order, up to the budget; a fault ahead in the set moves them
// there, and the runs passed over are installed after the rest; nothing is given twice.
import t from 'tap'
import { InstallCause, RunList } from '../../src/policy/policy.js'
import { StartSet } from '../../src/server/start-set.js'

function drain(set: StartSet, budget: number): number[][] {
  const batches: number[][] = []
  const plan = new RunList()
  while (set.pending) {
    plan.clear()
    set.nextBatch(plan, budget)
    const pages: number[] = []
    for (let r = 0; r < plan.length; r++) for (let p = plan.first[r]; p < plan.first[r] + plan.count[r]; p++) pages.push(p)
    batches.push(pages)
  }
  return batches
}

t.test("batches follow the set's order and split runs at the budget", async t => {
  const set = new StartSet(100)
  set.add(50, 3, InstallCause.Prefetch)
  set.add(10, 5, InstallCause.Prefetch)
  set.add(70, 1, InstallCause.Prefetch)
  t.same(drain(set, 4), [[50, 51, 52, 10], [11, 12, 13, 14], [70]])
  t.equal(set.pending, false)
})

t.test('a fault ahead in the set moves the batches there; the runs passed over come last', async t => {
  const set = new StartSet(1000)
  for (const p of [5, 100, 200, 300, 400, 500]) set.add(p, 1, InstallCause.Prefetch)
  const plan = new RunList()
  set.nextBatch(plan, 1)
  t.same([plan.first[0]], [5])
  set.onFault(400) // the guest is already at the set's fifth page
  plan.clear()
  set.nextBatch(plan, 2)
  t.same([...plan.first.subarray(0, plan.length)], [400, 500], 'from the fault on')
  t.same(drain(set, 10), [[100, 200, 300]], 'then the pages passed over')
  set.onFault(100)
  t.equal(set.pending, false, 'a fault behind changes nothing')
})

t.test('faults outside the set, or behind the batches, change nothing', async t => {
  const set = new StartSet(100)
  set.add(10, 10, InstallCause.Prefetch)
  set.onFault(99)
  set.onFault(10)
  t.same(drain(set, 100), [[10, 11, 12, 13, 14, 15, 16, 17, 18, 19]])
})

t.test('every page of the set is given exactly once, whatever the faults', async t => {
  const set = new StartSet(4096)
  const order: number[] = []
  let seed = 7
  const next = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
    return seed
  }
  const chosen = new Set<number>()
  while (chosen.size < 500) chosen.add(next() % 4096)
  for (const p of chosen) {
    set.add(p, 1, InstallCause.Prefetch)
    order.push(p)
  }
  const plan = new RunList()
  const given: number[] = []
  while (set.pending) {
    if (next() % 3 === 0) set.onFault(order[next() % order.length])
    plan.clear()
    set.nextBatch(plan, 1 + (next() % 40))
    for (let r = 0; r < plan.length; r++) for (let p = plan.first[r]; p < plan.first[r] + plan.count[r]; p++) given.push(p)
  }
  t.equal(given.length, 500)
  t.same(new Set(given), chosen)
})
