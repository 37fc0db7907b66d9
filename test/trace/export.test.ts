// CSV and JSON Lines export: one row per record, every field.
import t from 'tap'
import { exportTrace, CSV_COLUMNS } from '../../src/trace/export.js'
import { readTrace } from '../../src/trace/reader.js'
import { TRACE_FLAG_BEFORE_RESUME, TRACE_FLAG_WRITE } from '../../src/trace/format.js'
import { writeTrace, type Rec } from './fixtures.js'

t.test('csv and jsonl', async t => {
  const dir = t.testdir()
  const records: Rec[] = [
    [0, 9, 4, 1, TRACE_FLAG_BEFORE_RESUME, 0, 500],
    [2000, 3, 1, 0, TRACE_FLAG_WRITE, 77, 6000],
  ]
  for (let i = 0; i < 9000; i++) records.push([3000 + i, i % 4096, 1, 2, 0, 0, 100]) // spans several chunks
  const tr = readTrace(writeTrace(dir, 'x.fltrace', records))
  let csv = ''
  exportTrace(tr, 'csv', c => {
    csv += c
  })
  const lines = csv.trimEnd().split('\n')
  t.equal(lines.length, records.length + 1)
  t.equal(lines[0], CSV_COLUMNS.join(','))
  t.equal(lines[1], '0,9,4,prefetch,0,1,0,500')
  t.equal(lines[2], '2000,3,1,fault,1,0,77,6000')
  t.equal(lines[lines.length - 1], `${3000 + 8999},${8999 % 4096},1,background,0,0,0,100`)
  let jsonl = ''
  exportTrace(tr, 'jsonl', c => {
    jsonl += c
  })
  const rows = jsonl
    .trimEnd()
    .split('\n')
    .map(l => JSON.parse(l))
  t.equal(rows.length, records.length)
  t.same(rows[1], { time_ns: 2000, page: 3, pages: 1, cause: 'fault', write: true, before_resume: false, thread_id: 77, latency_ns: 6000 })
})
