// Fault traces end to end: `serve --trace` records real guests' faults (thread ids, write
// flags, pages, latency), one file per session; the trace commands read them; a replay touches
// the recorded pages in the recorded order; and a recorded trace fed to workingset: makes the
// next run of the same workload fault-free (the README's loop).
import t from 'tap'
import { existsSync, readFileSync, renameSync } from 'node:fs'
import { join } from 'node:path'
import { traceCommand } from '../../src/cli/trace.js'
import { PageServer } from '../../src/server/page-server.js'
import { InstallCause, TRACE_FLAG_WRITE } from '../../src/trace/format.js'
import { firstTouchOrder, readTrace } from '../../src/trace/reader.js'
import { makeImage, ROOT, runGuest, scratchDir, startServer } from './harness.js'

async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '',
    stderr = ''
  const code = await traceCommand(argv, { stdout: { write: s => (stdout += s) }, stderr: { write: s => (stderr += s) } })
  return { code, stdout, stderr }
}

function readPages(path: string): number[] {
  const b = readFileSync(path)
  const pages: number[] = []
  for (let i = 0; i < b.length; i += 4) pages.push(b.readUInt32LE(i))
  return pages
}

async function ended(server: PageServer, count: number): Promise<void> {
  for (let i = 0; server.ended.length < count; i++) {
    if (i > 3000) throw new Error('sessions did not end within 60 s')
    await new Promise(r => setTimeout(r, 20))
  }
}

t.test('record, inspect, replay, and feed workingset:', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 16)
  const trace = join(dir, 'run.fltrace')
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, tracePath: trace, warmWorkers: 3, singleGuest: true })
  const touchedFile = join(dir, 'touched.bin')

  const g1 = await runGuest([
    '--socket',
    socket,
    '--mib',
    '16',
    '--workload',
    'random:0.25',
    '--seed',
    '2',
    '--threads',
    '4',
    '--write',
    '--touched-out',
    touchedFile,
    '--verify',
    img.raw,
  ])
  t.equal(g1.code, 0, g1.stderr)
  t.equal(g1.report?.mismatches, 0)
  const g2 = await runGuest(['--socket', socket, '--mib', '8', '--offset', String(4 * 2 ** 20), '--workload', 'sequential', '--verify', img.raw])
  t.equal(g2.code, 0, g2.stderr)
  await ended(server, 2)

  t.test('session 1: every fault, its thread, write flag and latency', async t => {
    const rec = server.ended.find(s => s.id === 1)!
    const st = rec.stats!
    const tr = readTrace(trace)
    t.match(tr.header, { complete: true, sessionId: 1, pid: rec.pid, policy: 'ondemand', pageSize: 4096, snapshotPages: 4096 })
    t.match(tr.header.regions, [{ firstPage: 0, pageCount: 4096 }])
    t.equal(tr.length, st.faults, 'ondemand: one record per fault')
    const threads = new Set<number>()
    const pages = new Set<number>()
    let writes = 0,
      notFaults = 0
    for (let i = 0; i < tr.length; i++) {
      if (tr.cause[i] !== InstallCause.Fault) notFaults++
      threads.add(tr.threadId[i])
      pages.add(tr.page[i])
      if (tr.flags[i] & TRACE_FLAG_WRITE) writes++
    }
    t.equal(notFaults, 0, 'ondemand installs nothing but faulting pages')
    t.equal(writes, tr.length, 'every fault of a --write guest is a write')
    t.equal(threads.size, 4, 'the four guest threads, by thread id')
    t.notOk(threads.has(rec.pid) || threads.has(0), 'worker thread ids, not the process id')
    t.same(pages, new Set(readPages(touchedFile)), 'the faulted pages are the pages the guest touched')
    const s = JSON.parse((await run(['stats', trace, '--json'])).stdout)
    t.equal(s.faults, st.faults)
    t.equal(s.uniquePagesFaulted, 1024)
    t.equal(s.threads, 4)
    t.same(s.pagesByCause, { fault: 1024, prefetch: 0, background: 0 })
    // The server's histogram reports a bucket's upper bound (within 12.5%) of the exact value.
    t.ok(
      s.latency.p50Ns <= st.latency.p50Ns && s.latency.p50Ns >= st.latency.p50Ns / 1.13,
      `trace p50 ${s.latency.p50Ns} ns vs server histogram ${st.latency.p50Ns} ns`,
    )
    t.equal(s.latency.maxNs, st.latency.maxNs)
  })

  t.test('session 2 writes FILE.2, with its region at its snapshot offset', async t => {
    t.ok(existsSync(`${trace}.2`))
    const tr = readTrace(`${trace}.2`)
    t.equal(tr.header.sessionId, 2)
    t.match(tr.header.regions, [{ firstPage: 1024, pageCount: 2048 }])
    t.same(
      firstTouchOrder(tr),
      Array.from({ length: 2048 }, (_, i) => 1024 + i),
    )
  })

  t.test('stats, export and plot from the command line', async t => {
    const text = await run(['stats', trace])
    t.equal(text.code, 0)
    t.match(text.stdout, /distinct pages faulted\s+1024/)
    t.match(text.stdout, /service latency\s+p50 [\d.]+ µs, p90/)
    const csv = join(dir, 'run.csv')
    t.equal((await run(['export', trace, '--csv', '-o', csv])).code, 0)
    t.equal(readFileSync(csv, 'utf8').trimEnd().split('\n').length, 1025)
    const jsonl = await run(['export', trace, '--jsonl'])
    t.equal(jsonl.stdout.trimEnd().split('\n').length, 1024)
    t.equal(JSON.parse(jsonl.stdout.split('\n')[0]).cause, 'fault')
    for (const out of ['run.svg', 'run.html']) {
      const r = await run(['plot', trace, '-o', join(dir, out)])
      t.equal(r.code, 0, r.stderr)
      t.match(readFileSync(join(dir, out), 'utf8'), /Address over time[\s\S]*Fault service latency \(CDF\)[\s\S]*Working set over time/)
    }
    t.equal((await run(['plot', trace, '-o', join(dir, 'x.png')])).code, 2)
    t.equal((await run(['export', trace])).code, 2)
  })

  t.test('replay: the native guest touches the recorded pages in the recorded order', async t => {
    const replayed = join(dir, 'replayed.bin')
    const r = await run(['replay', trace, '--socket', socket, '--verify', img.raw, '--touched-out', replayed])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /pages verified\s+1024 \(0 mismatches\)/)
    t.same(readPages(replayed), firstTouchOrder(readTrace(trace)))
    await ended(server, 3)
    t.same(firstTouchOrder(readTrace(`${trace}.3`)), firstTouchOrder(readTrace(trace)), 'the replay faults in the same order')
  })

  t.test("the loop: the recorded trace as the next run's working set", async t => {
    const next = join(dir, 'next.fltrace')
    const r = await run(['replay', trace, '--snapshot', img.snap, '--policy', `workingset:${trace}`, '--trace', next, '--verify', img.raw])
    t.equal(r.code, 0, r.stderr)
    const s = JSON.parse((await run(['stats', next, '--json'])).stdout)
    // The set goes in once the guest runs, faults first: the guest faults only where it got
    // ahead of it, and every page goes in once.
    t.ok(s.faults < 256, `${s.faults} faults of 1024 pages`)
    t.equal(s.pagesBeforeResume, 0, 'nothing went in before the guest resumed')
    t.equal(s.pagesByCause.prefetch + s.faults, 1024, 'the set and the faults installed each page once')
  })
})

t.test('the committed sample trace is the working set of the workload it was recorded from', async t => {
  // traces/random-16mib.fltrace: `guest --mib 16 --workload random:0.25 --seed 1 --threads 4`
  // against the 16 MiB synthetic image of seed 1 (what makeImage(dir, 16) writes).
  const dir = scratchDir(t)
  const img = await makeImage(dir, 16)
  const sample = join(ROOT, 'traces/random-16mib.fltrace')
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, policy: `workingset:${sample}`, singleGuest: true })
  const r = await runGuest(['--socket', socket, '--mib', '16', '--workload', 'random:0.25', '--seed', '1', '--threads', '4', '--verify', img.raw])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.report?.verified_pages, 1024)
  t.equal(r.report?.mismatches, 0)
  await ended(server, 1)
  const st = server.ended[0].stats!
  t.ok(st.faults < 256, `${st.faults} faults`)
  t.equal(st.pagesInstalled[0] + st.pagesInstalled[1], 1024, 'the set and the faults installed each page once')
})

t.test('an unwritable --trace is refused when the server starts', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 1)
  await t.rejects(PageServer.start({ snapshotPath: img.snap, socketPath: join(dir, 's.sock'), tracePath: join(dir, 'no/such/dir/t.fltrace') }), {
    message: /--trace .*no\/such\/dir\/t\.fltrace: cannot write in .*: no such file or directory/,
  })
})

t.test("a later session's trace path (FILE.N) that is the snapshot is refused, the snapshot untouched", async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 1)
  // The snapshot lives at what session 2's trace would be called.
  const trace = join(dir, 't.fltrace')
  renameSync(img.snap, `${trace}.2`)
  const snap = `${trace}.2`
  const before = readFileSync(snap)
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: snap, socketPath: socket, tracePath: trace })
  const first = await runGuest(['--socket', socket, '--mib', '1', '--workload', 'random:0.5', '--verify', img.raw])
  t.equal(first.code, 0, first.stderr)
  const second = await runGuest(['--socket', socket, '--mib', '1', '--workload', 'random:0.5', '--verify', img.raw])
  t.equal(second.code, 2, 'session 2 is refused')
  t.equal(
    second.stderr,
    `guest: server refused: --trace ${snap}: is the same file as the snapshot ${snap}; refusing to overwrite an input (choose another output path)\n`,
  )
  t.ok(readFileSync(snap).equals(before), 'the snapshot is untouched')
  const third = await runGuest(['--socket', socket, '--mib', '1', '--workload', 'random:0.5', '--verify', img.raw])
  t.equal(third.code, 0, `and session 3 is served, traced to ${trace}.3: ${third.stderr}`)
  await ended(server, 2)
  t.ok(existsSync(`${trace}.3`))
})
