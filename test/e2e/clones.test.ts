// bench clones driven small through the CLI (real guests at once, real userfaultfd, one server
// for all of a mode's guests): its JSON's shape, every touched page verified, and each mode's
// memory accounted the way the mode must use memory. Not timed.
import t from 'tap'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ROOT, scratchDir } from './harness.js'
import { ensureDist } from './dist.js'

const GUESTS = 3
const MIB = 16
const TOUCHED = Math.round(0.25 * MIB * 256)

t.test('bench clones --json: three modes, every page verified, memory where each mode keeps it', async t => {
  ensureDist()
  const dir = scratchDir(t, 'fl-clones-')
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [
      join(ROOT, 'dist/cli/main.js'),
      'bench',
      'clones',
      '--guests',
      String(GUESTS),
      '--mib',
      String(MIB),
      '--workload',
      'random:25',
      '--cold',
      'fadvise',
      '--images',
      dir,
      '--json',
    ],
    { timeout: 180_000, maxBuffer: 16 << 20 },
  )
  const out = JSON.parse(stdout)
  t.same(
    out.modes.map((m: { mode: string }) => m.mode),
    ['mmap', 'faultline', 'faultline-cache'],
    'the three modes, by these names',
  )
  const by: Record<string, any> = Object.fromEntries(out.modes.map((m: { mode: string }) => [m.mode, m]))
  for (const m of out.modes) {
    t.equal(typeof m.allDoneMs, 'number', `${m.mode}: allDoneMs`)
    t.ok(m.allDoneMs > 0 && Number.isFinite(m.allDoneMs), `${m.mode}: all done after ${m.allDoneMs} ms`)
    t.ok(Number.isInteger(m.hostMemoryBytes) && m.hostMemoryBytes > 0, `${m.mode}: host memory ${m.hostMemoryBytes} bytes`)
    t.equal(m.mismatches, 0, `${m.mode}: no page differs from the image`)
    t.equal(m.verifiedPages, GUESTS * TOUCHED, `${m.mode}: every touched page of every guest verified`)
    const r = m.rounds[0]
    t.equal(r.hostMemoryBytes, r.shmemBytes + r.guestAnonBytes + r.pageCacheBytes, `${m.mode}: the sum of its parts`)
    t.equal(r.totalMs.length, GUESTS, `${m.mode}: a report from each guest`)
  }
  const mmap = by.mmap.rounds[0],
    anon = by.faultline.rounds[0],
    cached = by['faultline-cache'].rounds[0]
  t.equal(mmap.shmemBytes, 0, 'mmap: no server, no shmem')
  t.ok(mmap.pageCacheBytes >= TOUCHED * 4096, "mmap: the raw image's touched pages are in the page cache")
  t.same(cached.maps, { cache: GUESTS }, 'faultline-cache: every guest got the decoded cache')
  t.same(anon.maps, { anonymous: GUESTS }, 'faultline: every guest got anonymous memory')
  t.equal(anon.serverFaults, GUESTS * TOUCHED, 'faultline: each guest faulted for each page it touched')
  t.ok(cached.serverFaults < anon.serverFaults, `faultline-cache: fewer faults reach the server (${cached.serverFaults}): hits stay in the kernel`)
  t.ok(cached.shmemBytes > 0, `faultline-cache: the decoded cache holds ${cached.shmemBytes} bytes of shmem`)
  t.ok(cached.guestAnonBytes < anon.guestAnonBytes, `faultline-cache guests keep less private memory (${cached.guestAnonBytes} < ${anon.guestAnonBytes} bytes)`)
  t.ok(anon.serverAnonBytes > 0 && cached.serverAnonBytes > 0, "the server's own memory is measured beside the sum")
})
