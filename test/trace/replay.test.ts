// Replay plans: a trace's first-touch order as guest page indices of its region.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { readTrace } from '../../src/trace/reader.js'
import { replayPlan, writePagesFile } from '../../src/trace/replay.js'
import { faults, writeTrace } from './fixtures.js'

t.test('pages relative to the region, in first-touch order', async t => {
  const dir = t.testdir()
  const regions = [{ address: 0x1000000, firstPage: 1024, pageCount: 2048 }]
  const records = faults([1030, 1024, 1030, 5, 3071, 1025])
  records.push([100, 1500, 4, 1, 0, 0, 1]) // prefetches are not accesses
  const tr = readTrace(writeTrace(dir, 'r.fltrace', records, { regions }))
  const plan = replayPlan(tr)
  t.same(plan, { mib: 8, offsetBytes: 1024 * 4096, pages: [6, 0, 2047, 1], skipped: 1 })
  writePagesFile(join(dir, 'p.txt'), plan, 'r.fltrace')
  t.equal(readFileSync(join(dir, 'p.txt'), 'utf8'), '# first-touch order replayed from r.fltrace\n6\n0\n2047\n1\n')
})

t.test('what cannot be replayed', async t => {
  const dir = t.testdir()
  t.throws(() => replayPlan(readTrace(writeTrace(dir, 'a', faults([1]), { regions: [] }))), { message: /records no guest region/ })
  t.throws(() => replayPlan(readTrace(writeTrace(dir, 'b', faults([1]), { regions: [{ address: 0, firstPage: 0, pageCount: 100 }] }))), {
    message: /not whole MiB/,
  })
})
