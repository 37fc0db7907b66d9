// The core slice end to end: a real guest process hands its memory to the page server over
// both handshake forms, faults are served through real userfaultfd, and the guest checks
// every page it touched against the raw image.
import t from 'tap'
import { join } from 'node:path'
import { makeImage, runGuest, scratchDir, startServer, waitForEndedSessions, waitUntil } from './harness.js'

t.test('guests resume from a snapshot with their memory verified', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 64)
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket })

  t.test('faultline handshake, random workload', async t => {
    const r = await runGuest(['--socket', socket, '--mib', '64', '--workload', 'random:0.3', '--verify', img.raw])
    t.equal(r.code, 0, r.stderr)
    t.equal(r.report?.mismatches, 0)
    t.equal(r.report?.verified_pages, Math.round(0.3 * 16384))
    t.equal(r.report?.handshake, 'faultline')
  })

  t.test('Firecracker handshake at an offset, 4 threads, writes', async t => {
    const r = await runGuest([
      '--socket',
      socket,
      '--mib',
      '16',
      '--offset',
      String(32 * 2 ** 20),
      '--handshake',
      'firecracker',
      '--threads',
      '4',
      '--write',
      '--workload',
      'sequential',
      '--verify',
      img.raw,
    ])
    t.equal(r.code, 0, r.stderr)
    t.equal(r.report?.verified_pages, 4096)
    t.equal(r.report?.mismatches, 0)
  })

  t.test('several guests at once', async t => {
    const runs = await Promise.all(
      [1, 2, 3, 4].map(seed => runGuest(['--socket', socket, '--mib', '64', '--workload', 'random:0.1', '--seed', String(seed), '--verify', img.raw])),
    )
    for (const r of runs) {
      t.equal(r.code, 0, r.stderr)
      t.equal(r.report?.mismatches, 0)
    }
  })

  await waitForEndedSessions(server, 6)
  t.test('server accounted for every session and every fault', async t => {
    t.equal(server.ended.length, 6)
    const first = server.ended.find(s => s.stats?.faults === Math.round(0.3 * 16384))
    t.ok(first, 'ondemand: one fault per touched page in the random session')
    for (const s of server.ended) {
      t.equal(s.error, undefined)
      t.equal(s.stats?.endReason, 'guest disconnected')
      const st = s.stats!
      t.equal(st.pagesInstalled[0], st.faults, 'ondemand installs exactly the faulting pages')
    }
  })
})

t.test('a verification against the wrong image fails (the check can fail)', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 8, 1, 'a')
  const other = await makeImage(dir, 8, 2, 'b')
  const socket = join(dir, 's.sock')
  await startServer(t, { snapshotPath: img.snap, socketPath: socket })
  const r = await runGuest(['--socket', socket, '--mib', '8', '--workload', 'sequential', '--verify', other.raw])
  t.equal(r.code, 1)
  t.ok(r.report?.mismatches > 0)
})

t.test('a region past the snapshot is refused with a clear error', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 8)
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket })
  const r = await runGuest(['--socket', socket, '--mib', '16', '--workload', 'sequential'])
  t.equal(r.code, 2)
  t.match(r.stderr, /server refused: region 0: offset 0 \+ size 16777216 is past the snapshot's end \(8388608 bytes\)/)
  await waitUntil(() => server.rejected > 0, 10000)
  t.equal(server.rejected, 1)
})
