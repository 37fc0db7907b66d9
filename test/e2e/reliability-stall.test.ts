// A policy module that never returns (in onFault, or in onIdle) must not hold its guest, or the
// server, forever: the main thread watches each session's heartbeat, and a session whose loop
// has not moved past the deadline while its guest has faults waiting is ended (its worker
// terminated, its descriptors closed, the guest told why); the server serves on. A second
// SIGINT stops a server whatever its sessions are doing.
import t from 'tap'
import { join } from 'node:path'
import { GUEST, makeImage, ROOT, runGuest, scratchDir, waitUntil } from './harness.js'
import { fdCount, startFastServer, startServerProcess, threadCount } from './reliability-helpers.js'
import { spawn } from 'node:child_process'

const MIB = 8
const SPIN = join(ROOT, 'test/e2e/fixtures/spin-policy.js')
const IDLE_SPIN = join(ROOT, 'test/e2e/fixtures/idle-spin-policy.js')

for (const [name, policy] of [
  ['onFault', `${SPIN}:16`],
  ['onIdle', IDLE_SPIN],
] as const) {
  t.test(`a policy spinning in ${name}: its guest is failed closed at the deadline, the server serves on`, async t => {
    const dir = scratchDir(t)
    const img = await makeImage(dir, MIB, 3)
    const socket = join(dir, 's.sock')
    const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, policy, warmWorkers: 2, stallTimeoutMs: 1000 })
    const logs: string[] = []
    server.on('log', l => logs.push(l))
    await waitUntil(() => server.workerCount === 2)
    const fds0 = fdCount(),
      threads0 = threadCount()
    const started = Date.now()
    const r = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.3', '--verify', img.raw, '--verify-each'], { timeoutMs: 60000 })
    const ms = Date.now() - started
    t.equal(r.signal, null, 'the guest did not hang (the test would have killed it)')
    t.equal(r.code, 3, 'it exited because the server ended its session')
    t.match(
      r.stderr,
      /^guest: page server closed the connection \(session stalled: no progress for \d+ ms with faults waiting \(policy .*\); the server ended it\); exiting\n$/,
      `and says why: ${r.stderr.trim()}`,
    )
    t.ok(ms < 30000, `within ${ms} ms (deadline 1000 ms, checked every 250 ms)`)
    t.ok(
      logs.some(l => /^session 1 \(pid \d+\): session stalled: no progress/.test(l)),
      'the server logged it',
    )
    t.ok(await waitUntil(() => server.ended.length === 1), 'its session ended')
    t.match(server.ended[0].error, /^session stalled: /)
    // The server goes on: a guest that stays under the policy's trouble is served.
    if (name === 'onFault') {
      const small = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'sequential:0.001', '--verify', img.raw])
      t.equal(small.code, 0, `the next guest is served: ${small.stderr}`)
      t.equal(small.report?.mismatches, 0)
    }
    t.ok(
      await waitUntil(() => server.workerCount === 2 && server.active.size === 0 && fdCount() === fds0 && threadCount() === threads0, 20000),
      `workers back to 2 (${server.workerCount}); descriptors ${fdCount()} (were ${fds0}), threads ${threadCount()} (were ${threads0})`,
    )
    t.comment(`${name}: a guest of a stalled session was failed closed ${ms} ms after it started (deadline 1000 ms)`)
  })
}

t.test('a stalled session of a guest whose uffd cannot poison: the guest is killed before its uffd is let go', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB, 3)
  const socket = join(dir, 's.sock')
  const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, policy: `${SPIN}:16`, stallTimeoutMs: 1000 })
  const logs: string[] = []
  server.on('log', l => logs.push(l))
  // Firecracker's form without POISON and without a watchdog: told on its socket it would not
  // listen, and its waiting faults would read zeros once the uffd is closed.
  const args = [
    '--socket',
    socket,
    '--mib',
    String(MIB),
    '--handshake',
    'firecracker',
    '--no-watchdog',
    '--workload',
    'random:0.3',
    '--verify',
    img.raw,
    '--verify-each',
  ]
  const r = await runGuest(args, { timeoutMs: 30000 })
  t.notOk(r.timedOut, `it did not hang (${r.elapsedMs} ms)`)
  t.notMatch(r.stderr, /verify:/, 'no page it read differed from the image')
  t.equal(r.signal, 'SIGKILL', `the server killed it (signal ${r.signal}, code ${r.code})`)
  t.ok(
    logs.some(l => /stalled, and the guest's uffd cannot poison: killed pid \d+ \(SIGKILL\)/.test(l)),
    `and logged why: ${logs.find(l => /stalled, and/.test(l))}`,
  )
})

t.test('a second SIGINT stops the server, even with a session stuck in its policy', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB, 3)
  const socket = join(dir, 's.sock')
  // A deadline far away: only the signals can stop this session.
  const server = await startServerProcess(t, ['--snapshot', img.snap, '--socket', socket, '--policy', `${SPIN}:16`, '--stall-timeout', '600'])
  const guest = spawn(GUEST, ['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.3'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let guestErr = ''
  guest.stderr.on('data', d => {
    guestErr += d
  })
  const guestExit = new Promise<number | null>(r => guest.on('exit', c => r(c)))
  t.teardown(() => {
    if (guest.exitCode === null) guest.kill('SIGKILL')
  })
  await server.waitForLog(/session 1: pid/)
  await new Promise(r => setTimeout(r, 500))
  server.child.kill('SIGINT')
  await server.waitForLog(/stopping after 1 guest\(s\) finish; interrupt again to stop now/)
  await new Promise(r => setTimeout(r, 500))
  t.equal(server.child.exitCode, null, 'the first signal waits for the guest')
  const second = Date.now()
  server.child.kill('SIGINT')
  const exited = await Promise.race([server.exited, new Promise<undefined>(r => setTimeout(() => r(undefined), 15000))])
  t.ok(exited, `the second one stops it (${Date.now() - second} ms)`)
  t.same(exited, { code: 130, signal: null }, 'exit status 130, as for SIGINT')
  t.equal(await guestExit, 3, 'the guest saw its server go')
  t.match(guestErr, /^guest: page server closed the connection/)
  t.comment(`a second SIGINT stopped a server with a stuck session in ${Date.now() - second} ms`)
})
