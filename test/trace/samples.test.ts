// The sample traces committed under traces/ (used by the README): they read, and say what
// the README says they hold.
import t from 'tap'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { readTrace, workingSetPages } from '../../src/trace/reader.js'
import { replayPlan } from '../../src/trace/replay.js'
import { traceStats } from '../../src/trace/stats.js'

const TRACES = join(dirname(fileURLToPath(import.meta.url)), '../../traces')

t.test('random-16mib: ondemand, 4 threads, random:0.25 over 16 MiB', async t => {
  const tr = readTrace(join(TRACES, 'random-16mib.fltrace'))
  t.match(tr.header, { complete: true, policy: 'ondemand', pageSize: 4096, snapshotPages: 4096, regions: [{ firstPage: 0, pageCount: 4096 }] })
  const s = traceStats(tr)
  t.equal(s.faults, 1024)
  t.equal(s.uniquePagesFaulted, 1024)
  t.equal(s.threads, 4)
  t.same(s.pagesByCause, { fault: 1024, prefetch: 0, background: 0 })
  t.equal(workingSetPages(tr).length, 1024)
  t.match(replayPlan(tr), { mib: 16, offsetBytes: 0, skipped: 0 })
})

t.test("mixed-16mib-adaptive: adaptive on the bench's mixed workload", async t => {
  const tr = readTrace(join(TRACES, 'mixed-16mib-adaptive.fltrace'))
  t.match(tr.header, { complete: true, policy: 'adaptive', regions: [{ firstPage: 0, pageCount: 4096 }] })
  const s = traceStats(tr)
  t.equal(s.threads, 1)
  t.ok(s.pagesByCause.prefetch > s.pagesByCause.fault, 'the scans were prefetched')
  t.equal(s.pagesByCause.fault, s.faults)
})
