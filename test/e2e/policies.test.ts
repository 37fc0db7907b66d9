// Every fault policy driven end to end: a real guest process, the real server, real
// userfaultfd. Touched pages are verified by the guest against the raw image; pages a policy
// installs ahead of time are checked in the live guest through /proc/PID/pagemap (present or
// not) and /proc/PID/mem (their bytes), so work done before or beside the faults is verified too.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AdaptivePolicy } from '../../src/policy/adaptive.js'
import type { PageServer } from '../../src/server/page-server.js'
import type { SessionStats } from '../../src/server/session.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { InstallCause } from '../../src/trace/format.js'
import { readTrace, workingSetPages } from '../../src/trace/reader.js'
import { SimContext, sequential, simulate } from '../policy/sim.js'
import { GUEST, makeImage, runGuest, scratchDir, startServer, waitUntil } from './harness.js'

const PAGE = 4096
const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '../policy/fixtures')

/** The stats of the session that ends next (or has just ended) on `server`. */
async function nextEnded(server: PageServer, before: number): Promise<SessionStats> {
  for (let i = 0; server.ended.length === before; i++) {
    if (i > 3000) throw new Error('no session ended within 60 s')
    await new Promise(r => setTimeout(r, 20))
  }
  const rec = server.ended[before]
  if (!rec.stats) throw new Error(`session failed: ${rec.error}`)
  return rec.stats
}

const installedTotal = (st: SessionStats) => st.pagesInstalled[0] + st.pagesInstalled[1] + st.pagesInstalled[2]

/** A guest that stays alive after its workload (--hold-ms), for looking at its memory. */
interface LiveGuest {
  child: ChildProcess
  pid: number
  report: Record<string, any>
  exited: Promise<number | null>
}

function startLiveGuest(args: string[]): Promise<LiveGuest> {
  return new Promise((resolve, reject) => {
    const child = spawn(GUEST, [...args, '--hold-ms', '600000'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = '',
      err = ''
    const exited = new Promise<number | null>(r => child.on('close', code => r(code)))
    child.stderr!.on('data', d => {
      err += d
    })
    child.stdout!.on('data', d => {
      out += d
      if (out.includes('\n')) resolve({ child, pid: child.pid!, report: JSON.parse(out.split('\n')[0]), exited })
    })
    void exited.then(code => reject(new Error(`guest exited ${code} before reporting: ${err}`)))
  })
}

/** Start address of the guest's `mib` MiB anonymous region (its RAM) from /proc/PID/maps. */
function guestRegion(pid: number, mib: number): number {
  const want = mib * 2 ** 20
  const hits = readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .map(l => l.split(/\s+/))
    .filter(f => {
      if (f.length < 5 || f[1] !== 'rw-p' || (f[5] ?? '') !== '') return false
      const [a, b] = f[0].split('-').map(x => parseInt(x, 16))
      return b - a === want
    })
  if (hits.length !== 1) throw new Error(`expected one ${mib} MiB anonymous mapping in the guest, found ${hits.length}`)
  return parseInt(hits[0][0].split('-')[0], 16)
}

/** Which of the region's pages are present, from /proc/PID/pagemap (bit 63 of each entry). */
function presentPages(pid: number, start: number, pages: number): Uint8Array {
  const buf = Buffer.alloc(pages * 8)
  const fd = openSync(`/proc/${pid}/pagemap`, 'r')
  try {
    readSync(fd, buf, 0, buf.length, (start / PAGE) * 8)
  } finally {
    closeSync(fd)
  }
  const present = new Uint8Array(pages)
  for (let i = 0; i < pages; i++) present[i] = (buf[i * 8 + 7] & 0x80) !== 0 ? 1 : 0
  return present
}

/** Guest pages (of those given) whose bytes differ from the raw image, read with /proc/PID/mem. */
function differingPages(pid: number, start: number, raw: string, pages: Iterable<number>): number[] {
  const image = readFileSync(raw)
  const fd = openSync(`/proc/${pid}/mem`, 'r')
  const page = Buffer.alloc(PAGE)
  const bad: number[] = []
  try {
    for (const p of pages) {
      readSync(fd, page, 0, PAGE, start + p * PAGE)
      if (!page.equals(image.subarray(p * PAGE, (p + 1) * PAGE))) bad.push(p)
    }
  } finally {
    closeSync(fd)
  }
  return bad
}

// One image for the whole file. Each test starts its own servers, each with one worker per
// guest it will see, started up front and none after (singleGuest): a worker starting while a
// guest runs would only compete with it for the CPU.
const ROOT_DIR = scratchDir(t)
const IMAGE = makeImage(ROOT_DIR, 16)

async function waitFor(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; !check(); i++) {
    if (i > 6000) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 10))
  }
}

t.test('readahead:7 installs each fault and the 7 pages after it; zero pages by ZEROPAGE', async t => {
  const dir = scratchDir(t)
  const img = await IMAGE
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, policy: 'readahead:7', singleGuest: true })
  const r = await runGuest(['--socket', socket, '--mib', '16', '--workload', 'sequential', '--verify', img.raw])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.report?.verified_pages, 4096)
  t.equal(r.report?.mismatches, 0)
  const st = await nextEnded(server, 0)
  t.equal(st.faults, 4096 / 8)
  t.same(st.pagesInstalled, [512, 4096 - 512, 0])
  const snap = SnapshotReader.open(img.snap)
  let zero = 0
  for (let p = 0; p < 4096; p++) if (snap.kindOf(p) === 0) zero++
  snap.close()
  t.ok(zero > 0, 'the image has zero pages')
  t.equal(st.zeroPagesInstalled, zero, 'every zero page went in with UFFDIO_ZEROPAGE')
})

t.test('adaptive: a sequential scan takes the faults the model predicts; random access gets no prefetch to speak of', async t => {
  const dir = scratchDir(t)
  const img = await IMAGE
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, policy: 'adaptive', warmWorkers: 3, singleGuest: true })
  const model = simulate(new AdaptivePolicy(256), new SimContext(4096), sequential(4096))

  const seq = await runGuest(['--socket', socket, '--mib', '16', '--workload', 'sequential', '--verify', img.raw])
  t.equal(seq.code, 0, seq.stderr)
  t.equal(seq.report?.mismatches, 0)
  const st = await nextEnded(server, 0)
  t.equal(st.faults, model.faults, `${model.faults} faults, as in the model`)
  t.equal(installedTotal(st), 4096)

  const rnd = await runGuest(['--socket', socket, '--mib', '16', '--workload', 'random:0.25', '--seed', '3', '--verify', img.raw])
  t.equal(rnd.code, 0, rnd.stderr)
  t.equal(rnd.report?.verified_pages, 1024)
  t.equal(rnd.report?.mismatches, 0)
  const st2 = await nextEnded(server, 1)
  t.ok(st2.pagesInstalled[1] <= 1024 * 0.02, `${st2.pagesInstalled[1]} pages prefetched for 1024 random touches`)
  t.equal(st2.faults + st2.pagesInstalled[1], installedTotal(st2))

  const threads = await runGuest(['--socket', socket, '--mib', '16', '--workload', 'sequential', '--threads', '4', '--verify', img.raw])
  t.equal(threads.code, 0, threads.stderr)
  t.equal(threads.report?.mismatches, 0)
  const st3 = await nextEnded(server, 2)
  t.ok(st3.faults < 1024, `4 threads sharing a scan: ${st3.faults} faults for 4096 pages`)
})

t.test('workingset: a recorded working set goes in once the guest runs, in first-touch order, and the same workload takes few faults', async t => {
  const dir = scratchDir(t)
  const img = await IMAGE
  const trace = join(dir, 'rec.fltrace')
  const workload = ['--mib', '12', '--workload', 'random:0.1', '--seed', '9']
  const recorder = await startServer(t, { snapshotPath: img.snap, socketPath: join(dir, 'rec.sock'), tracePath: trace, singleGuest: true })
  const touchedFile = join(dir, 'touched.bin')
  const rec = await runGuest(['--socket', recorder.socketPath, ...workload, '--touched-out', touchedFile])
  t.equal(rec.code, 0, rec.stderr)
  await nextEnded(recorder, 0)
  const touched = new Set<number>()
  const tb = readFileSync(touchedFile)
  for (let i = 0; i < tb.length; i += 4) touched.add(tb.readUInt32LE(i))
  t.equal(touched.size, Math.round(0.1 * 3072))
  t.same(new Set(workingSetPages(readTrace(trace))), touched, "the trace's working set is what the guest touched")

  const socket = join(dir, 'ws.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, policy: `workingset:${trace}`, warmWorkers: 3, singleGuest: true })

  t.test('a guest that touches nothing gets exactly the working set', async t => {
    const g = await startLiveGuest(['--socket', socket, '--mib', '12', '--workload', 'none'])
    const start = guestRegion(g.pid, 12)
    // Installed after the ack (the resume is as fast as ondemand's), while the guest runs.
    const presentSet = new Set<number>()
    const complete = await waitUntil(() => {
      presentSet.clear()
      presentPages(g.pid, start, 3072).forEach((v, i) => {
        if (v) presentSet.add(i)
      })
      return presentSet.size >= touched.size
    }, 20000)
    t.ok(complete, `the working set arrived (${presentSet.size} of ${touched.size} pages)`)
    t.same(presentSet, touched, 'exactly the working set is present')
    t.same(differingPages(g.pid, start, img.raw, touched), [], "with the snapshot's bytes")
    g.child.kill('SIGTERM')
    await g.exited
    const st = await nextEnded(server, 0)
    t.equal(st.faults, 0)
    t.equal(st.pagesInstalled[1], touched.size)
  })

  t.test('the recorded workload again: few faults, each page once; a larger one: the rest fault', async t => {
    const same = await runGuest(['--socket', socket, ...workload, '--verify', img.raw])
    t.equal(same.code, 0, same.stderr)
    t.equal(same.report?.mismatches, 0)
    const st = await nextEnded(server, 1)
    // The guest chases the prefetch through the same order: it faults only where it got ahead
    // of it (about once a batch of installs), and every page goes in once.
    t.ok(st.faults < touched.size / 4, `${st.faults} faults for ${touched.size} pages of the set`)
    t.equal(st.pagesInstalled[0] + st.pagesInstalled[1], touched.size, 'faults and prefetch installed each page once')
    // random:F with the same seed touches the same first pages: 0.2 is a superset of 0.1.
    const more = await runGuest(['--socket', socket, '--mib', '12', '--workload', 'random:0.2', '--seed', '9', '--verify', img.raw])
    t.equal(more.code, 0, more.stderr)
    t.equal(more.report?.mismatches, 0)
    const outside = Math.round(0.2 * 3072) - touched.size
    const f = (await nextEnded(server, 2)).faults
    t.ok(f >= outside && f < outside + touched.size / 4, `${f} faults: the ${outside} pages outside the set, and few inside`)
  })
})

t.test('background: the whole of guest memory ends up resident, with the right bytes', async t => {
  const dir = scratchDir(t)
  const img = await IMAGE
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, policy: 'background', singleGuest: true })
  const g = await startLiveGuest(['--socket', socket, '--mib', '12', '--workload', 'random:0.02', '--verify', img.raw])
  t.equal(g.report.mismatches, 0)
  const start = guestRegion(g.pid, 12)
  await waitFor('every page to be present', () => presentPages(g.pid, start, 3072).every(v => v === 1))
  t.same(
    differingPages(
      g.pid,
      start,
      img.raw,
      Array.from({ length: 3072 }, (_, i) => i),
    ),
    [],
    "all 3072 pages hold the snapshot's bytes",
  )
  g.child.kill('SIGTERM')
  await g.exited
  const st = await nextEnded(server, 0)
  t.equal(installedTotal(st), 3072)
  t.equal(st.pagesInstalled[1], 0)
  t.ok(st.faults <= Math.round(0.02 * 3072), `${st.faults} faults`)
  t.ok(st.pagesInstalled[2] >= 3072 - st.faults)
})

t.test("background:TRACE fills the trace's pages first, in its order, then the rest by address", async t => {
  const dir = scratchDir(t)
  const img = await IMAGE
  const rec = join(dir, 'rec.fltrace')
  const recorder = await startServer(t, { snapshotPath: img.snap, socketPath: join(dir, 'rec.sock'), tracePath: rec, singleGuest: true })
  const r = await runGuest(['--socket', recorder.socketPath, '--mib', '12', '--workload', 'random:0.05', '--seed', '4'])
  t.equal(r.code, 0, r.stderr)
  await nextEnded(recorder, 0)
  const order = workingSetPages(readTrace(rec))
  t.equal(order.length, Math.round(0.05 * 3072))

  const out = join(dir, 'bg.fltrace')
  const socket = join(dir, 'bg.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, policy: `background:${rec}`, tracePath: out, singleGuest: true })
  const g = await startLiveGuest(['--socket', socket, '--mib', '12', '--workload', 'none'])
  const start = guestRegion(g.pid, 12)
  await waitFor('every page to be present', () => presentPages(g.pid, start, 3072).every(v => v === 1))
  t.same(differingPages(g.pid, start, img.raw, order), [])
  g.child.kill('SIGTERM')
  await g.exited
  const st = await nextEnded(server, 0)
  t.equal(st.pagesInstalled[2], 3072)
  const tr = readTrace(out)
  const installedOrder: number[] = []
  for (let i = 0; i < tr.length; i++) {
    if (tr.cause[i] === InstallCause.Fault) continue
    for (let p = tr.page[i]; p < tr.page[i] + tr.count[i]; p++) installedOrder.push(p)
  }
  t.equal(installedOrder.length, 3072)
  t.same(installedOrder.slice(0, order.length), order, 'the recorded pages first, in first-touch order')
  const rest = installedOrder.slice(order.length)
  t.ok(
    rest.every((p, i) => i === 0 || p > rest[i - 1]),
    'then ascending addresses',
  )
})

t.test('a user policy module (the docs/policies.md example) serves a downward scan', async t => {
  const dir = scratchDir(t)
  const img = await IMAGE
  const pages = join(dir, 'down.txt')
  writeFileSync(pages, Array.from({ length: 1024 }, (_, i) => 1023 - i).join('\n') + '\n')
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, policy: `${join(FIXTURES, 'stack-down.js')}:8`, singleGuest: true })
  const r = await runGuest(['--socket', socket, '--mib', '4', '--workload', `pages:${pages}`, '--verify', img.raw])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.report?.verified_pages, 1024)
  t.equal(r.report?.mismatches, 0)
  const st = await nextEnded(server, 0)
  t.equal(st.faults, Math.ceil(1024 / 9), 'each fault brings its page and the 8 below')
  t.equal(installedTotal(st), 1024)
})
