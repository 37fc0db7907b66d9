// Failure of either side. A page server killed mid-workload: its guests end promptly with a
// clear message, having read no wrong page (each page is checked as it is touched), and hang
// nowhere. A guest killed mid-fault (while the server is serving that very fault, held there by
// a slow policy): its session ends because the guest is gone ("guest exited", from installing a
// page into an address space that no longer exists), no descriptor or worker is left behind,
// and the guest beside it is served to the end.
import t from 'tap'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { mkdirSync, readdirSync, readlinkSync } from 'node:fs'
import { GUEST, makeImage, ROOT, runGuest, scratchDir, type GuestResult } from './harness.js'
import { fdCount, startFastServer, startServerProcess, threadCount, waitFor } from './reliability-helpers.js'

const MIB = 8

t.test('server killed with SIGKILL mid-workload: guests exit 3 promptly, no wrong page read', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB)
  const socket = join(dir, 's.sock')
  const server = await startServerProcess(t, ['--snapshot', img.snap, '--socket', socket, '--warm-workers', '3'])
  // Paced workloads (2 ms a page, ~4 s in all) so the kill lands in the middle; every page is
  // compared with the image right after it is touched.
  const common = ['--socket', socket, '--mib', String(MIB), '--workload', 'random:1', '--pace-us', '2000', '--verify', img.raw, '--verify-each']
  const variants: Array<[string, string[]]> = [
    ['faultline form', []],
    ['Firecracker form', ['--handshake', 'firecracker']],
    ['4 threads, writes', ['--threads', '4', '--write']],
  ]
  const exits: Array<number> = []
  const guests = variants.map(([, args]) => {
    const done = runGuest([...common, ...args], { timeoutMs: 60000 })
    void done.then(() => exits.push(performance.now()))
    return done
  })
  await server.waitForLog(/session 3: pid/)
  await new Promise(r => setTimeout(r, 500))
  const killedAt = performance.now()
  server.child.kill('SIGKILL')
  t.same(await server.exited, { code: null, signal: 'SIGKILL' })
  const results = await Promise.all(guests)
  for (const [i, r] of results.entries()) {
    const name = variants[i][0]
    t.equal(r.signal, null, `${name}: not killed by the test's timeout (it did not hang)`)
    t.equal(r.code, 3, `${name}: exit 3, the page server went away`)
    t.match(r.stderr, /^guest: page server closed the connection; exiting\n$/, `${name}: says so, and nothing else (no page differed)`)
    t.equal(r.report, undefined, `${name}: stopped mid-workload, before its result`)
  }
  // A hang is what this checks (the watchdog sees the socket close at once); the time itself
  // depends on the machine's load, so it is bounded generously and reported.
  const worstMs = Math.max(...exits) - killedAt
  t.ok(worstMs < 10000, `every guest exited ${worstMs.toFixed(0)} ms after the kill (bound 10 s: no hang)`)
  t.comment(`guests exited at most ${worstMs.toFixed(0)} ms after the server's SIGKILL`)
})

t.test('server stopping its sessions: guests are told why', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB)
  const socket = join(dir, 's.sock')
  const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket })
  const guest = runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'random:1', '--pace-us', '2000', '--verify', img.raw, '--verify-each'], {
    timeoutMs: 60000,
  })
  await new Promise<void>(r => server.once('session', () => r()))
  await new Promise(r => setTimeout(r, 300))
  server.stopSessions()
  const r = await guest
  t.equal(r.code, 3)
  t.match(r.stderr, /^guest: page server closed the connection \(server stopping\); exiting\n$/)
})

t.test('guests killed mid-fault: sessions end cleanly, nothing leaks, the others are served', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 16)
  const socket = join(dir, 's.sock')
  const markers = join(dir, 'markers')
  mkdirSync(markers)
  const policy = `${join(ROOT, 'test/e2e/fixtures/slow-fault-policy.js')}:${markers}`
  const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, warmWorkers: 2, policy })
  const guestArgs = (args: string[]) => ['--socket', socket, '--mib', '16', '--verify', img.raw, ...args]
  // One guest first, so whatever the process sets up once (thread pools, lazily opened
  // files) exists before the baseline is taken.
  const warm = await runGuest(guestArgs(['--workload', 'random:0.05']))
  t.equal(warm.code, 0, warm.stderr)
  const settled = () => server.active.size === 0 && server.workerCount === 2
  t.ok(await waitFor(settled, 20000), 'pool back to its 2 warm workers')
  // A worker still starting has not opened all its descriptors yet: the baseline is taken
  // once the counts have held still for a second, and the end is a return to it.
  const fds0 = await steady(fdCount),
    threads0 = await steady(threadCount)
  const fdsBefore = openFds()

  // A survivor that outlives every kill, and five victims, each killed while the server serves
  // its 32nd fault: the policy announces that fault (a marker file) and holds it for 400 ms.
  const seen = new Set(readdirSync(markers))
  const fresh = () => readdirSync(markers).filter(f => !seen.has(f))
  const survivor = runGuest(guestArgs(['--workload', 'random:0.5', '--pace-us', '8000', '--threads', '2', '--verify-each']), { timeoutMs: 120000 })
  t.ok(await waitFor(() => fresh().length > 0, 20000), 'the survivor went through its slow fault')
  for (const f of fresh()) seen.add(f)
  const victims: Array<{ pid: number; result: Promise<GuestResult> }> = []
  for (let i = 0; i < 5; i++) {
    const child = spawn(GUEST, guestArgs(['--workload', 'random:1', '--seed', String(i + 10), '--threads', String(1 + (i % 3))]), { stdio: 'ignore' })
    const result = new Promise<GuestResult>(r => child.on('exit', (code, signal) => r({ code, signal, stdout: '', stderr: '' })))
    const pid = child.pid!
    // Its session's marker: the one new file (the survivor's is seen already).
    t.ok(await waitFor(() => fresh().length > 0, 20000), `victim ${pid} reached its slow fault`)
    for (const f of fresh()) seen.add(f)
    child.kill('SIGKILL')
    victims.push({ pid, result })
  }
  for (const v of victims) t.equal((await v.result).signal, 'SIGKILL', `victim ${v.pid} was killed mid-workload`)
  const s = await survivor
  t.equal(s.code, 0, `the survivor was served to the end: ${s.stderr}`)
  t.equal(s.report?.mismatches, 0)
  t.equal(s.report?.verified_pages, 2048)

  t.ok(await waitFor(settled, 20000), 'every session ended and the pool is back to 2 warm workers')
  const ended = (pid: number) => server.ended.find(e => e.pid === pid)
  for (const v of victims) {
    const rec = ended(v.pid)
    t.ok(rec, `victim ${v.pid}: its session ended`)
    t.equal(rec?.error, undefined, `victim ${v.pid}: without an error`)
    t.equal(rec?.stats?.endReason, 'guest exited', `victim ${v.pid}: ended installing a page for a guest that was gone`)
    t.equal(rec?.stats?.faults, 32, `victim ${v.pid}: killed while its 32nd fault was being served`)
  }
  // Descriptors close and threads exit asynchronously after a worker ends: wait for the
  // counts to come back, then compare what was seen.
  await waitFor(() => fdCount() === fds0 && threadCount() === threads0, 20000)
  const fds = await steady(fdCount),
    threads = await steady(threadCount)
  if (fds !== fds0) {
    // Say what is left over (fd numbers are reused, so compare by what they point at).
    const after = openFds(),
      was = Object.values(fdsBefore)
    t.comment(
      `descriptors that appeared: ${Object.entries(after)
        .filter(([fd, what]) => fdsBefore[fd] !== what && !was.includes(what))
        .map(([fd, what]) => `${fd} ${what}`)
        .join(', ')}`,
    )
  }
  t.equal(fds, fds0, `no descriptor leaked (${fds0} before, ${fds} after)`)
  t.equal(threads, threads0, `no worker thread leaked (${threads0} before, ${threads} after)`)
  t.comment(`after 5 guests killed mid-fault: ${fds} fds (baseline ${fds0}), ${threads} threads (baseline ${threads0}), ${server.workerCount} workers`)
})

/** This process's descriptors and what each points at. */
function openFds(): Record<string, string> {
  const out: Record<string, string> = {}
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      out[fd] = readlinkSync(`/proc/self/fd/${fd}`)
    } catch {
      /* closed meanwhile */
    }
  }
  return out
}

/** The value of `count` once it has not changed for a second (at most 30 s). */
async function steady(count: () => number): Promise<number> {
  const deadline = Date.now() + 30000
  let value = count(),
    since = Date.now()
  while (Date.now() - since < 1000 && Date.now() < deadline) {
    await new Promise(r => setTimeout(r, 50))
    const v = count()
    if (v !== value) {
      value = v
      since = Date.now()
    }
  }
  return value
}
