// The latency histogram's integer bucketing against the exact quantiles of the same samples.
import t from 'tap'
import { LatencyHistogram } from '../../src/server/latency-histogram.js'

function exactQuantile(sorted: number[], q: number): number {
  return sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]
}

t.test('quantiles are within one bucket (12.5%) above the exact ones, over 1 ns .. 30 s', async t => {
  let state = 12345
  const next = () => {
    state = (state * 1103515245 + 12345) % 2147483648
    return state / 2147483648
  }
  const h = new LatencyHistogram()
  const samples: number[] = []
  for (let i = 0; i < 20000; i++) {
    const ns = Math.exp(next() * Math.log(3e10)) // log-uniform: every bucket range is hit
    samples.push(ns)
    h.record(ns)
  }
  samples.sort((a, b) => a - b)
  for (const q of [0.01, 0.1, 0.5, 0.9, 0.99, 0.999]) {
    const exact = exactQuantile(samples, q)
    const got = h.quantile(q)
    t.ok(got >= exact && got <= Math.max(exact * 1.125 + 2, exact + 2), `q${q}: ${got} vs exact ${exact}`)
  }
  t.equal(h.summary().count, 20000)
  t.equal(h.summary().maxNs, Math.round(samples[samples.length - 1]))
})

t.test('values around powers of two and 2^31 land in the buckets the float formula picks', async t => {
  for (const ns of [1, 2, 3, 7, 8, 9, 15, 16, 17, 1023, 1024, 1025, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 5e9]) {
    const h = new LatencyHistogram()
    h.record(ns)
    const exp = Math.floor(Math.log2(ns))
    const sub = exp < 3 ? 0 : Math.floor(ns / 2 ** (exp - 3) - 8)
    t.equal(h.counts[exp * 8 + sub], 1, `${ns} ns in bucket ${exp}/${sub}`)
  }
})
