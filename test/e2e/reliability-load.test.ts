// Hostile load. A pending handshake costs the server a descriptor and a deadline in its acceptor
// thread, never a session worker: silent clients neither grow the pool nor delay real guests,
// and each is answered at its deadline; pending handshakes are bounded (the rest wait in the
// socket's backlog); refused clients start no worker and idle workers go back down to
// --warm-workers; --max-sessions is the number of guests served at once; the pool bounds are
// checked; and the server survives a descriptor limit with one-line messages.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import * as uffd from '../../src/uffd/index.js'
import { makeImage, runGuest, scratchDir, waitUntil, type GuestResult } from './harness.js'
import { connect, exchange, fdCount, readReply, rssBytes, runCli, startFastServer, startServerProcess } from './reliability-helpers.js'

const MIB = 4

/** Connects `n` clients that say nothing; returns their descriptors. A connect the backlog
 * has no room for yet (EAGAIN: the sockets are non-blocking) is retried. */
async function silentClients(socket: string, n: number): Promise<number[]> {
  const fds: number[] = []
  while (fds.length < n) {
    try {
      fds.push(connect(socket))
    } catch (err) {
      if (!(err instanceof uffd.UffdError) || err.errnoName !== 'EAGAIN') throw err
      await new Promise(r => setTimeout(r, 5))
    }
  }
  return fds
}

t.test('silent clients cost no worker and do not delay a real guest', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB)
  const socket = join(dir, 's.sock')
  const deadline = 6000
  const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, handshakeTimeoutMs: deadline, warmWorkers: 1 })
  t.ok(await waitUntil(() => server.workerCount === 1))
  const started0 = server.workersStarted,
    rss0 = rssBytes()
  const connectedAt = Date.now()
  const silent = await silentClients(socket, 200)
  await new Promise(r => setTimeout(r, 300))
  const guestStart = Date.now()
  const g = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.5', '--verify', img.raw])
  const guestMs = Date.now() - guestStart
  t.equal(g.code, 0, g.stderr)
  t.equal(g.report?.mismatches, 0)
  t.ok(guestMs < deadline / 2, `the guest was served in ${guestMs} ms, not after the silent clients' ${deadline} ms deadline`)
  const workersWhileSilent = server.workerCount
  t.ok(workersWhileSilent <= 2, `${workersWhileSilent} session workers with 200 silent clients connected (1 warm, and the served guest's replacement)`)
  const rssGrowth = rssBytes() - rss0
  // Each silent client is a socket and a deadline; 200 of them are far below a worker (~30 MiB).
  t.ok(rssGrowth < 64 * 2 ** 20, `the server grew by ${(rssGrowth / 2 ** 20).toFixed(1)} MiB with 200 silent clients (a guest served meanwhile)`)
  // Every silent client is answered: at most 128 wait at once (the default bound), the oldest
  // make room for newer ones at once ("server busy"), the rest are answered at the deadline.
  const busy: number[] = [],
    timedOut: number[] = []
  await Promise.all(
    silent.map(async fd => {
      const r = await readReply(fd, 2 * deadline)
      uffd.closeFd(fd)
      const ms = Date.now() - connectedAt
      if (r.reply?.error?.startsWith('server busy: 128 handshakes pending, this one the oldest')) busy.push(ms)
      else if (r.reply?.error === `no complete handshake within ${deadline} ms`) timedOut.push(ms)
      else t.fail(`unexpected answer: ${JSON.stringify(r.reply)}`)
    }),
  )
  t.equal(busy.length, 72 + 1, '72 of the 200 made room for newer ones (and one more for the guest)')
  t.equal(timedOut.length, 200 - busy.length, 'the others were answered at their deadline')
  t.ok(Math.min(...timedOut) >= deadline - 100, `none before the deadline (first after ${Math.min(...timedOut)} ms)`)
  t.ok(Math.max(...timedOut) < deadline + 3000, `none long after it (last after ${Math.max(...timedOut)} ms; deadline ${deadline} ms)`)
  t.equal(server.workersStarted - started0, 1, 'one worker started: the replacement of the guest served; none for the silent clients')
  t.comment(
    `200 silent clients: a real guest served in ${guestMs} ms; ${workersWhileSilent} workers; RSS +${(rssGrowth / 2 ** 20).toFixed(1)} MiB; ` +
      `${busy.length} dropped as the oldest at the bound of 128, the rest answered ${Math.min(...timedOut)}-${Math.max(...timedOut)} ms after connecting (deadline ${deadline} ms)`,
  )
})

t.test('pending handshakes are bounded', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB)
  const socket = join(dir, 's.sock')
  const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, handshakeTimeoutMs: 1500, maxPendingHandshakes: 16 })
  await waitUntil(() => server.workerCount === 1)
  const fds0 = fdCount()
  const silent = await silentClients(socket, 60)
  await new Promise(r => setTimeout(r, 500))
  // The test's own 60 sockets, and at most 16 accepted ones in the server.
  const held = fdCount() - fds0 - 60
  t.ok(held <= 16 + 2, `the server holds ${held} connections for 60 silent clients (bound 16)`)
  const replies = await Promise.all(silent.map(fd => readReply(fd, 20000).finally(() => uffd.closeFd(fd))))
  t.equal(replies.filter(r => r.reply?.error?.startsWith('server busy: 16 handshakes pending')).length, 44, '44 dropped, oldest first')
  t.equal(replies.filter(r => r.reply?.error === 'no complete handshake within 1500 ms').length, 16, '16 answered at the deadline')
  t.equal(server.workerCount, 1, 'and no worker started for any')
})

t.test('refused clients start no worker; idle workers go back to --warm-workers', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB)
  const socket = join(dir, 's.sock')
  const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, warmWorkers: 2 })
  await waitUntil(() => server.workerCount === 2)
  const started0 = server.workersStarted
  // Refused by the acceptor (not JSON) and by a session worker (memory it does not have).
  const notMapped = JSON.stringify({ version: 1, register: true, regions: [{ base_host_virt_addr: 0x20000, size: 65536, offset: 0, page_size: 4096 }] })
  const refuse = (i: number) => {
    const u = uffd.openUserfaultfd()
    return exchange(socket, i % 2 ? 'garbage\n' : notMapped, [u]).finally(() => uffd.closeFd(u))
  }
  for (let i = 0; i < 24; i++) {
    const r = await refuse(i)
    t.equal(r.reply?.ok, false, `client ${i} refused: ${r.reply?.error}`)
  }
  t.ok(await waitUntil(() => server.rejected === 24), 'and counted')
  t.equal(server.workersStarted - started0, 0, 'no worker was started for them: the worker that refused one waits for the next')
  // At once, clients a worker must check may take more workers than are warm (each could be a
  // guest); once refused, the pool goes back down.
  const replies = await Promise.all(Array.from({ length: 24 }, (_, i) => refuse(i)))
  t.ok(
    replies.every(r => r.reply?.ok === false),
    'a burst of 24, all refused',
  )
  const burstStarts = server.workersStarted - started0
  t.ok(await waitUntil(() => server.workerCount === 2), `the pool is back to its 2 warm workers (${server.workerCount})`)
  t.comment(`24 refused clients one after another started no worker; 24 at once started ${burstStarts}, released after`)
})

t.test('--max-sessions 1 --warm-workers 2 serves one guest at a time', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB)
  const socket = join(dir, 's.sock')
  const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, maxSessions: 1, warmWorkers: 2, handshakeTimeoutMs: 20000 })
  let most = 0
  server.on('session', () => {
    most = Math.max(most, server.active.size)
  })
  const runs: GuestResult[] = await Promise.all(
    [1, 2, 3].map(seed =>
      runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.2', '--seed', String(seed), '--pace-us', '1000', '--verify', img.raw], {
        timeoutMs: 60000,
      }),
    ),
  )
  for (const r of runs) {
    t.equal(r.code, 0, r.stderr)
    t.equal(r.report?.mismatches, 0)
  }
  t.equal(most, 1, 'never more than one session at once')
  t.ok(await waitUntil(() => server.ended.length === 3), 'three sessions, one after another')
})

t.test('pool bounds are checked', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 1)
  const base = ['serve', '--snapshot', img.snap, '--socket', join(dir, 's.sock')]
  const cases: Array<[string[], string]> = [
    [['--max-sessions', '0'], "faultline: --max-sessions: expected 1..4096, got '0'"],
    [['--warm-workers', '1000000'], "faultline: --warm-workers: expected 1..64, got '1000000'"],
    [['--warm-workers', '-1'], "faultline: --warm-workers: expected 1..64, got '-1'"],
    [['--max-sessions', '2.5'], "faultline: --max-sessions: expected 1..4096, got '2.5'"],
  ]
  for (const [args, message] of cases) {
    const r = await runCli([...base, ...args], 20000)
    t.not(r.code, 0, `${args.join(' ')}: refused`)
    t.equal(r.stderr, `${message}\n`, args.join(' '))
  }
})

t.test('under a descriptor limit: one-line messages, and guests served through a flood', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB)
  for (const limit of [400, 150]) {
    const socket = join(dir, `s${limit}.sock`)
    const server = await startServerProcess(t, ['--snapshot', img.snap, '--socket', socket, '--warm-workers', '2'], ['prlimit', `--nofile=${limit}`, '--'])
    const silent = await silentClients(socket, 300)
    await new Promise(r => setTimeout(r, 500))
    const g = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.5', '--verify', img.raw])
    t.equal(g.code, 0, `nofile ${limit}: a guest is served while 300 silent clients are connected: ${g.stderr}`)
    for (const fd of silent) uffd.closeFd(fd)
    const after = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.5', '--verify', img.raw])
    t.equal(after.code, 0, `nofile ${limit}: and after them: ${after.stderr}`)
    const lines = server.log().trimEnd().split('\n')
    t.notMatch(server.log(), /\n\s+at |worker (crashed|failed)|acceptor (crashed|failed)/, `nofile ${limit}: no stack trace, no worker failure`)
    t.same(
      lines.filter(l => !l.startsWith('faultline: ')),
      [],
      `nofile ${limit}: ${lines.length} log lines, each one line of its own`,
    )
    if (limit === 150)
      t.ok(
        lines.some(l => /^faultline: descriptor limit 150 \(\d+ free\): at most \d+ handshakes pending at once instead of 128$/.test(l)),
        'the limit lowers the bound',
      )
    t.notOk(
      lines.some(l => l.includes('cannot accept')),
      'the bound on pending handshakes keeps the server below the limit',
    )
    server.child.kill('SIGTERM')
    t.same(await server.exited, { code: 0, signal: null })
  }
  // The limit lowered under a running server (past the bound it computed at start): accept(2)
  // fails, the oldest pending handshakes make room, one line says so.
  const socket = join(dir, 'low.sock')
  const server = await startServerProcess(t, ['--snapshot', img.snap, '--socket', socket])
  const pid = server.child.pid!
  const inUse = readdirSync(`/proc/${pid}/fd`).length
  execFileSync('prlimit', ['--pid', String(pid), `--nofile=${inUse + 20}`])
  const silent = await silentClients(socket, 100)
  await server.waitForLog(
    /cannot accept connections: too many open files \(the process limit, ulimit -n\); \d+ failed accept\(s\), \d+ handshake\(s\) pending; the oldest pending ones are dropped to make room/,
  )
  for (const fd of silent) uffd.closeFd(fd)
  const g = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.5', '--verify', img.raw])
  t.equal(g.code, 0, `limit lowered to ${inUse + 20}: a guest is served after the flood: ${g.stderr}`)
  t.notMatch(server.log(), /\n\s+at |worker (crashed|failed)|acceptor (crashed|failed)/, 'no stack trace, no worker failure')
  t.match(server.log(), /refused pid \d+: server busy: out of file descriptors with \d+ handshakes pending, this one the oldest; try again/)
})
