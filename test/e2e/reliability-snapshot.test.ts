// The snapshot under a running server: removed, it is still served (the server keeps one
// descriptor of it for its lifetime, and every worker reads through it); replaced by another
// file at its path, new guests are refused with a line saying so, the guests being served go
// on, and nothing crashes. And a policy that fails only in the session workers stops the server
// at start with one line naming the module, leaving no socket behind.
import t from 'tap'
import { existsSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { createSnapshot } from '../../src/snapshot/writer.js'
import { writeSyntheticImage } from '../../src/snapshot/synthetic-image.js'
import { makeImage, ROOT, runGuest, scratchDir, waitUntil } from './harness.js'
import { runCli, startFastServer } from './reliability-helpers.js'

const MIB = 8

t.test('snapshot removed, then replaced, under a running server', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB, 5)
  const snap = join(dir, 'live.snap')
  renameSync(img.snap, snap)
  const socket = join(dir, 's.sock')
  const server = await startFastServer(t, { snapshotPath: snap, socketPath: socket, warmWorkers: 2 })
  const logs: string[] = []
  server.on('log', l => logs.push(l))
  const guest = (args: string[] = []) =>
    runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.3', '--verify', img.raw, ...args], { timeoutMs: 60000 })

  // A long guest that lives through the removal and the replacement.
  const long = guest(['--workload', 'random:0.5', '--pace-us', '2000', '--verify-each'])
  t.ok(await waitUntil(() => server.active.size === 1), 'the long guest is being served')
  rmSync(snap)
  const afterRemoval = await guest()
  t.equal(afterRemoval.code, 0, `a guest after the removal is served: ${afterRemoval.stderr}`)
  t.equal(afterRemoval.report?.mismatches, 0)
  // Workers started since the removal (each session's replacement) read the open descriptor.
  const second = await guest(['--seed', '7'])
  t.equal(second.code, 0, `and the next one, by a worker started after the removal: ${second.stderr}`)
  t.ok(
    logs.some(l => l === `snapshot ${snap} was removed; serving on from the descriptor opened at start`),
    'the removal is logged',
  )

  // Another snapshot at the same path: not what the server checked at start.
  const other = join(dir, 'other.raw')
  writeSyntheticImage(other, MIB * 2 ** 20, { seed: 99 })
  await createSnapshot(other, snap)
  const refused = await guest()
  t.equal(refused.code, 2, 'a new guest is refused')
  t.match(refused.stderr, `guest: server refused: snapshot ${snap} was replaced since the server started`)
  t.ok(
    logs.some(l => l.startsWith(`snapshot ${snap} was replaced since the server started`)),
    'the replacement is logged',
  )
  const l = await long
  t.equal(l.code, 0, `the guest being served went on to the end: ${l.stderr}`)
  t.equal(l.report?.mismatches, 0, 'reading the snapshot it started with')
  t.notOk(
    logs.some(x => /worker (failed|crashed)/.test(x)),
    'no worker failed',
  )
  t.ok(await waitUntil(() => server.workerCount === 2 && server.active.size === 0), 'the warm workers are still there')
})

t.test('a policy that fails only in the session workers: one line naming it, no socket left', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 1)
  const socket = join(dir, 's.sock')
  const module = join(ROOT, 'test/e2e/fixtures/worker-only-throw.js')
  const r = await runCli(['serve', '--snapshot', img.snap, '--socket', socket, '--policy', module])
  t.equal(r.code, 1, 'the server did not start')
  t.equal(r.stderr, `faultline: --policy ${module}: the module's factory threw: this policy cannot run in a worker thread\n`, 'one line naming the module')
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
  t.notOk(existsSync(socket), 'no socket file left behind')
})
