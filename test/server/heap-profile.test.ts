// The session's heap sampling (FAULTLINE_HEAP_PROFILE): it sees short-lived allocations, which
// the scavenger has already collected when the profile is taken.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startHeapSampling } from '../../src/server/heap-profile.js'

interface ProfileNode {
  callFrame: { functionName: string }
  selfSize: number
  children: ProfileNode[]
}

let last: number[] = []

function allocatesGarbage(n: number): number {
  let sum = 0
  for (let i = 0; i < n; i++) {
    last = [i, i + 1, i + 2] // escapes, so it is allocated; dead at the next iteration
    sum += last.length
  }
  return sum
}

t.test('a profile written on stop names the function that allocated, after a scavenge', async t => {
  const path = join(t.testdir(), 'session.1.heapprofile')
  const sampling = await startHeapSampling()
  t.equal(allocatesGarbage(200_000), 600_000)
  await sampling.stop(path)
  const { head } = JSON.parse(readFileSync(path, 'utf8')) as { head: ProfileNode }
  let bytes = 0
  const walk = (n: ProfileNode): void => {
    if (n.callFrame.functionName === 'allocatesGarbage') bytes += n.selfSize
    n.children.forEach(walk)
  }
  walk(head)
  // 200,000 arrays of 3 small integers: several MB, far more than one young generation keeps.
  t.ok(bytes > 1_000_000, `allocatesGarbage: ${bytes} bytes sampled`)
})
