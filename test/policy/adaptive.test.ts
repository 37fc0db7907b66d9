// adaptive: window growth on sequential scans, restraint on random and strided access, and
// threads sharing one scan, checked against a page-state model of the session.
import t from 'tap'
import { ADAPTIVE_DEFAULT_MAX, ADAPTIVE_INITIAL_WINDOW, AdaptivePolicy } from '../../src/policy/adaptive.js'
import { PolicyArgumentError } from '../../src/policy/registry.js'
import { SimContext, sequential, simulate } from './sim.js'
import { PolicyArgs } from '../../src/policy/args.js'

/** Faults a single-threaded scan of `pages` takes: the first fault starts a stream, the
 * second (page 1) opens the initial window, each later one doubles it up to `max`. */
function expectedSequentialFaults(pages: number, max: number): number {
  let faults = 2,
    w = ADAPTIVE_INITIAL_WINDOW,
    p = 1
  for (;;) {
    p += 1 + w
    if (p >= pages) return faults
    faults++
    w = Math.min(2 * w, max)
  }
}

t.test('a sequential scan: the window doubles up to the maximum', async t => {
  for (const max of [ADAPTIVE_DEFAULT_MAX, 16]) {
    const ctx = new SimContext(4096)
    const r = simulate(AdaptivePolicy.fromArgs(new PolicyArgs('adaptive', String(max))), ctx, sequential(4096))
    t.equal(r.faults, expectedSequentialFaults(4096, max), `max ${max}`)
    t.equal(r.installed, 4096)
    t.equal(r.untouched, 0, 'the last window is clipped at the end of the range')
  }
  t.equal(expectedSequentialFaults(4096, 256), 22)
})

t.test('window sizes as a scan proceeds', async t => {
  const policy = new AdaptivePolicy(64)
  const ctx = new SimContext(1024)
  simulate(policy, ctx, sequential(2))
  t.equal(policy.windowAt(6), 4, 'page 1 continued the stream: 4 pages prefetched, next expected fault at 6')
  simulate(policy, ctx, [[6, 1]])
  t.equal(policy.windowAt(15), 8)
})

t.test('random access prefetches (almost) nothing', async t => {
  let s = 7
  const rand = () => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return s
  }
  const seen = new Set<number>()
  const accesses: Array<[number, number]> = []
  while (accesses.length < 2000) {
    const p = rand() % 65536
    if (!seen.has(p)) {
      seen.add(p)
      accesses.push([p, 1])
    }
  }
  const r = simulate(AdaptivePolicy.fromArgs(new PolicyArgs('adaptive', undefined)), new SimContext(65536), accesses)
  t.ok(r.prefetched <= 2000 * 0.01, `prefetched ${r.prefetched} pages for 2000 random faults`)
  t.ok(r.faults >= 1990)
})

t.test('a strided scan by one thread shrinks the window to nothing', async t => {
  const accesses: Array<[number, number]> = []
  for (let p = 0; p < 8192; p += 2) accesses.push([p, 1])
  const r = simulate(AdaptivePolicy.fromArgs(new PolicyArgs('adaptive', undefined)), new SimContext(8192), accesses)
  t.equal(r.untouched, 0, 'no prefetched page is wasted')
  t.equal(r.faults, 4096)
})

t.test('threads sharing one scan (faulting out of order) still get large windows', async t => {
  // Two threads take alternate pages; at each window boundary the odd thread's fault is
  // handled first, so the stream sees a skip from a thread other than its last one.
  const accesses: Array<[number, number]> = [
    [1, 2],
    [0, 1],
  ]
  for (let p = 2; p < 4096; p += 2) accesses.push([p + 1, 2], [p, 1])
  const ctx = new SimContext(4096)
  const r = simulate(AdaptivePolicy.fromArgs(new PolicyArgs('adaptive', undefined)), ctx, accesses)
  t.ok(r.faults <= 40, `${r.faults} faults for 4096 pages`)
  t.equal(r.untouched, 0)
  t.equal(r.installed, 4096)
})

t.test('arguments', async t => {
  t.equal(AdaptivePolicy.fromArgs(new PolicyArgs('adaptive', undefined)).name, `adaptive:${ADAPTIVE_DEFAULT_MAX}`)
  t.equal(AdaptivePolicy.fromArgs(new PolicyArgs('adaptive', '32')).name, 'adaptive:32')
  for (const bad of ['0', 'x', '1.5', '70000']) t.throws(() => AdaptivePolicy.fromArgs(new PolicyArgs('adaptive', bad)), PolicyArgumentError, bad)
})
