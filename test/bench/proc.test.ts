// /proc parsing and sampling used by the benchmarks: fixed texts, and this process itself.
import t from 'tap'
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  cachedBytes,
  dropPageCache,
  memAvailableBytes,
  parseProcIo,
  parseProcStatus,
  parseSchedstat,
  resetPeakRss,
  sampleProcess,
  warmPageCache,
} from '../../src/bench/proc.js'
import { BenchError } from '../../src/bench/errors.js'

t.test('parses /proc/PID/io, status and schedstat', async t => {
  const io = 'rchar: 1234\nwchar: 5\nsyscr: 3\nsyscw: 1\nread_bytes: 8192\nwrite_bytes: 0\ncancelled_write_bytes: 0\n'
  t.same(parseProcIo(io), { readBytes: 8192, rchar: 1234 })
  t.throws(() => parseProcIo('rchar: 1\n'), BenchError)
  const status = 'Name:\tnode\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n'
  t.same(parseProcStatus(status), { rssBytes: 102400 * 1024, peakRssBytes: 204800 * 1024 })
  t.throws(() => parseProcStatus('Name: x\n'), /VmRSS/)
  t.equal(parseSchedstat('123456789 2000 17\n'), 123456789)
  t.throws(() => parseSchedstat('x y z'), BenchError)
  t.equal(memAvailableBytes('MemTotal: 100 kB\nMemAvailable:   2048 kB\n'), 2048 * 1024)
})

t.test('samples this process: reads, CPU and peak memory move the right way', async t => {
  // An earlier peak (start-up, another test) may lie above today's RSS: start from a reset one.
  resetPeakRss('self')
  const before = sampleProcess('self')
  t.ok(before.rssBytes > 0 && before.peakRssBytes >= before.rssBytes)
  const spinUntil = process.hrtime.bigint() + 30_000_000n
  while (process.hrtime.bigint() < spinUntil) {
    /* burn 30 ms of CPU */
  }
  readFileSync('/proc/self/status')
  const big = Buffer.alloc(64 << 20, 1) // touched: RSS rises by 64 MiB
  const after = sampleProcess('self')
  t.ok(after.cpuNs - before.cpuNs >= 25e6, `CPU grew by ${after.cpuNs - before.cpuNs} ns`)
  t.ok(after.rchar > before.rchar, 'rchar counts reads')
  // 8 MiB of slack for memory the heap may have handed back meanwhile.
  t.ok(after.peakRssBytes - before.rssBytes >= 56 << 20, `peak RSS saw the 64 MiB buffer (${before.rssBytes} -> peak ${after.peakRssBytes})`)
  big.fill(0)
  resetPeakRss('self')
  const reset = sampleProcess('self')
  t.ok(reset.peakRssBytes <= reset.rssBytes + (8 << 20), 'peak reset to about the current RSS')
})

t.test('cold and warm page cache of one file', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'fl-proc-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const f = join(dir, 'data')
  writeFileSync(f, Buffer.alloc(4 << 20, 7))
  warmPageCache(f)
  // cachedBytes is undefined without fincore (util-linux): that would check nothing.
  const warm = cachedBytes(f)
  t.equal(warm, 4 << 20, `warm: ${warm} bytes cached (undefined: fincore is missing, apt-get install util-linux)`)
  dropPageCache('fadvise', [f])
  const cold = cachedBytes(f)
  t.equal(cold, 0, `cold: ${cold} bytes cached`)
  t.throws(() => dropPageCache('fadvise', [join(dir, 'missing')]), BenchError)
})
