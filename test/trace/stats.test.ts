// Trace statistics on traces whose answers are known.
import t from 'tap'
import { readTrace } from '../../src/trace/reader.js'
import { quantileSorted, traceStats, workingSetCurve } from '../../src/trace/stats.js'
import { TRACE_FLAG_BEFORE_RESUME, TRACE_FLAG_WRITE } from '../../src/trace/format.js'
import { writeTrace, type Rec } from './fixtures.js'

t.test('counts, pages by cause, latency quantiles, rates and growth', async t => {
  const dir = t.testdir()
  const records: Rec[] = [[0, 1000, 10, 1, TRACE_FLAG_BEFORE_RESUME, 0, 2_000_000]]
  // 100 faults, 1 ms apart, on pages 0..99, latency (i+1) µs; every 10th a write; 2 threads.
  for (let i = 0; i < 100; i++) records.push([(i + 1) * 1_000_000, i, 1, 0, i % 10 === 0 ? TRACE_FLAG_WRITE : 0, 10 + (i % 2), (i + 1) * 1000])
  records.push([50_500_000, 200, 8, 1, 0, 0, 40_000]) // a prefetch
  records.push([60_000_000, 5, 0, 0, 0, 10, 700]) // a fault on a page already there
  records.push([100_000_000, 300, 16, 2, 0, 0, 90_000]) // background
  const s = traceStats(readTrace(writeTrace(dir, 's.fltrace', records)))
  t.equal(s.records, 104)
  t.equal(s.durationNs, 100_000_000)
  t.equal(s.faults, 101)
  t.equal(s.faultsOnPresentPages, 1)
  t.equal(s.writeFaults, 10)
  t.equal(s.threads, 2)
  t.equal(s.uniquePagesFaulted, 100)
  t.equal(s.uniquePagesInstalled, 100 + 10 + 8 + 16)
  t.same(s.pagesByCause, { fault: 100, prefetch: 18, background: 16 })
  t.equal(s.pagesBeforeResume, 10)
  t.equal(s.beforeResumeNs, 2_000_000)
  t.equal(s.faultsPerSec, 1010)
  t.equal(s.peakFaultsPerSec, 1100, '11 faults in the busiest 10 ms (one of them the repeat at 60 ms)')
  // 101 latencies: 700 and 1000..100000 step 1000.
  t.equal(s.latency.p50Ns, 50_000)
  t.equal(s.latency.p90Ns, 90_000)
  t.equal(s.latency.p99Ns, 99_000)
  t.equal(s.latency.maxNs, 100_000)
  t.same(
    s.workingSetGrowth.map(g => g.pages),
    [10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
  )
  t.same(s.workingSetTimeNs, { p50: 50_000_000, p90: 90_000_000, p100: 100_000_000 })
})

t.test('an empty trace', async t => {
  const dir = t.testdir()
  const s = traceStats(readTrace(writeTrace(dir, 'e.fltrace', [])))
  t.equal(s.faults, 0)
  t.equal(s.latency.p50Ns, 0)
  t.equal(s.faultsPerSec, 0)
  t.equal(workingSetCurve(readTrace(writeTrace(dir, 'e2.fltrace', []))).timeNs.length, 0)
})

t.test('quantiles are nearest-rank', async t => {
  t.equal(quantileSorted([1, 2, 3, 4], 0.5), 2)
  t.equal(quantileSorted([1, 2, 3, 4], 0.51), 3)
  t.equal(quantileSorted([7], 0.99), 7)
})
