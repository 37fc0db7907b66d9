// The trace file: records survive a round trip through the recorder and reader (buffer flushes
// included), unclosed files are readable, damaged ones are refused with the reason.
import t from 'tap'
import { closeSync, openSync, readFileSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import {
  H_FLAGS,
  H_RECORD_COUNT,
  H_VERSION,
  TRACE_FIXED_HEADER_BYTES,
  TRACE_FLAG_BEFORE_RESUME,
  TRACE_FLAG_WRITE,
  TRACE_RECORD_BYTES,
  TRACE_REGION_BYTES,
  tracePathForSession,
} from '../../src/trace/format.js'
import { readTrace } from '../../src/trace/reader.js'
import { checkTracePath, TraceRecorder } from '../../src/trace/recorder.js'
import { writeTrace, type Rec } from './fixtures.js'

t.test('a round trip keeps every field', async t => {
  const dir = t.testdir()
  const records: Rec[] = [
    [0, 100, 3, 1, TRACE_FLAG_BEFORE_RESUME, 0, 123456],
    [1500, 7, 1, 0, TRACE_FLAG_WRITE, 4194303, 9876],
    [2 ** 40 + 12345, 4095, 0, 0, 0, 17, 0], // a time past 2^32 ns (73 minutes)
    [2 ** 41, 4000, 96, 2, 0, 0, 2 ** 33], // a latency past u32 saturates
  ]
  const regions = [
    { address: 0x7fffdead0000, firstPage: 0, pageCount: 2048 },
    { address: 0x10000000, firstPage: 2048, pageCount: 2048 },
  ]
  const path = writeTrace(dir, 'a.fltrace', records, { regions, policy: 'readahead:15' })
  t.equal(statSync(path).size, TRACE_FIXED_HEADER_BYTES + 2 * TRACE_REGION_BYTES + 4 * TRACE_RECORD_BYTES)
  const tr = readTrace(path)
  t.match(tr.header, {
    version: 1,
    pageSize: 4096,
    complete: true,
    sessionId: 3,
    pid: 4242,
    recordCount: 4,
    snapshotPages: 4096,
    policy: 'readahead:15',
    regions,
  })
  t.ok(Math.abs(tr.header.startUnixMs - Date.now()) < 600_000, 'start time is wall-clock ms')
  t.equal(tr.length, 4)
  t.equal(tr.incomplete, false)
  t.same(Array.from(tr.timeNs), [0, 1500, 2 ** 40 + 12345, 2 ** 41])
  t.same(Array.from(tr.page), [100, 7, 4095, 4000])
  t.same(Array.from(tr.count), [3, 1, 0, 96])
  t.same(Array.from(tr.cause), [1, 0, 0, 2])
  t.same(Array.from(tr.flags), [TRACE_FLAG_BEFORE_RESUME, TRACE_FLAG_WRITE, 0, 0])
  t.same(Array.from(tr.threadId), [0, 4194303, 17, 0])
  t.same(Array.from(tr.latencyNs), [123456, 9876, 0, 0xffffffff])
})

t.test('more records than the buffer holds are all written', async t => {
  const dir = t.testdir()
  const n = 100_003
  const rec = new TraceRecorder({ path: join(dir, 'big.fltrace'), pageSize: 4096, snapshotPages: 1 << 20, sessionId: 1, pid: 1, policy: 'x', regions: [] })
  for (let i = 0; i < n; i++) rec.record(i * 10, i, 1, 0, 0, 1, i)
  rec.close()
  rec.close() // a second close is harmless
  const tr = readTrace(join(dir, 'big.fltrace'))
  t.equal(tr.length, n)
  let ok = true
  for (let i = 0; i < n; i++) if (tr.page[i] !== i || tr.timeNs[i] !== i * 10 || tr.latencyNs[i] !== i) ok = false
  t.ok(ok, 'every record in order')
})

t.test('a trace the server never closed is read up to its last whole record', async t => {
  const dir = t.testdir()
  const path = writeTrace(
    dir,
    'open.fltrace',
    [
      [1, 1, 1, 0, 0, 1, 1],
      [2, 2, 1, 0, 0, 1, 1],
      [3, 3, 1, 0, 0, 1, 1],
    ],
    { close: false },
  )
  const fd = openSync(path, 'a')
  writeSync(fd, Buffer.alloc(10, 7))
  closeSync(fd) // a torn record
  const tr = readTrace(path)
  t.equal(tr.incomplete, true)
  t.equal(tr.length, 3)
  t.same(Array.from(tr.page), [1, 2, 3])
})

t.test('damaged traces are refused, naming the file and the problem', async t => {
  const dir = t.testdir()
  const good = writeTrace(dir, 'g.fltrace', [
    [1, 1, 1, 0, 0, 1, 1],
    [2, 2, 1, 0, 0, 1, 1],
  ])
  const bytes = readFileSync(good)
  const variant = (name: string, edit: (b: Buffer) => Buffer) => {
    const p = join(dir, name)
    writeFileSync(p, edit(Buffer.from(bytes)))
    return p
  }
  t.throws(
    () =>
      readTrace(
        variant('magic', b => {
          b[0] = 0x58
          return b
        }),
      ),
    { name: 'TraceFormatError', message: /magic: not a faultline trace/ },
  )
  t.throws(
    () =>
      readTrace(
        variant('version', b => {
          b.writeUInt32LE(9, H_VERSION)
          return b
        }),
      ),
    { message: /version: trace format version 9 is not supported/ },
  )
  t.throws(
    () =>
      readTrace(
        variant('count', b => {
          b.writeUInt32LE(5, H_RECORD_COUNT)
          return b
        }),
      ),
    { message: /count: header says 5 records \(140 bytes\) but the file holds 56 bytes of records/ },
  )
  t.throws(() => readTrace(variant('short', b => b.subarray(0, 100))), { message: /short: not a faultline trace/ })
  const cause = variant('cause', b => {
    b[TRACE_FIXED_HEADER_BYTES + TRACE_REGION_BYTES + TRACE_RECORD_BYTES + 24] = 7
    return b
  })
  t.throws(() => readTrace(cause), { message: /cause: record 1 has cause 7/ })
  const torn = variant('torn', b => b)
  truncateSync(torn, bytes.length - 5)
  t.throws(() => readTrace(torn), { message: /header says 2 records/ }, 'a complete trace must be whole')
  t.throws(() => readTrace(join(dir, 'none')), { message: /none: cannot read trace: no such file or directory/ })
  void H_FLAGS
})

t.test('session files and the --trace check', async t => {
  t.equal(tracePathForSession('/x/run.fltrace', 1), '/x/run.fltrace')
  t.equal(tracePathForSession('/x/run.fltrace', 2), '/x/run.fltrace.2')
  const dir = t.testdir({ sub: {} })
  t.doesNotThrow(() => checkTracePath(join(dir, 'ok.fltrace')))
  t.throws(() => checkTracePath(join(dir, 'sub')), { message: /--trace .*sub: is a directory/ })
  t.throws(() => checkTracePath('/nonexistent-dir/x.fltrace'), {
    message: /--trace \/nonexistent-dir\/x\.fltrace: cannot write in \/nonexistent-dir: no such file/,
  })
})
