// Cache-mapped guests against the TypeScript server, end to end: the native guest maps the
// server's decoded cache MAP_PRIVATE over its region (docs/protocol.md); hits never reach the
// server, misses fill the cache. Memory verified page by page; every built-in policy; threads
// faulting inside a folio being filled; private writes; MADV_DONTNEED; fork; eviction under
// running guests; a corrupt page; what is refused.
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { HEADER_SIZE, KIND_LZ4, KIND_ZERO } from '../../src/snapshot/format.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import type { PageServer } from '../../src/server/page-server.js'
import type { SessionStats } from '../../src/server/session.js'
import { makeImage, runGuest, scratchDir, startServer, waitForEndedSessions, waitUntil } from './harness.js'

const MIB = 16
const PAGES = MIB * 256

async function ended(server: PageServer, n: number): Promise<SessionStats> {
  t.ok(await waitForEndedSessions(server, n), `session ${n} ended`)
  const rec = [...server.ended].sort((a, b) => a.id - b.id)[n - 1]
  if (!rec?.stats) throw new Error(`session ${n} failed: ${rec?.error}`)
  return rec.stats
}

t.test('a cache-mapped guest reads the snapshot; a second guest of the same snapshot takes no fault', async t => {
  const dir = scratchDir(t, 'fl-cachemap-')
  const img = await makeImage(dir, MIB, 21)
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, warmWorkers: 2 })
  t.match(server.cacheDescription ?? '', /huge folios|4 KiB pages/, `cache: ${server.cacheDescription}`)
  const a = await runGuest(['--socket', socket, '--mib', String(MIB), '--map', 'cache', '--workload', 'sequential:0.3', '--verify', img.raw])
  t.equal(a.code, 0, a.stderr)
  t.equal(a.report?.map, 'cache', 'the server granted the cache')
  t.equal(a.report?.mismatches, 0)
  const sa = await ended(server, 1)
  t.equal(sa.map, 'cache')
  t.ok(sa.faults > 0, `first guest: ${sa.faults} faults`)
  // The fill workers finish the folios its faults asked for (they start with the first guest).
  t.ok(await waitUntil(() => server.cacheCounts()!.pendingFolios === 0, 30000), `the ${sa.cache.foliosRequested} folios it asked for are in`)
  const b = await runGuest(['--socket', socket, '--mib', String(MIB), '--map', 'cache', '--workload', 'sequential:0.3', '--verify', img.raw])
  t.equal(b.code, 0, b.stderr)
  t.equal(b.report?.mismatches, 0)
  const sb = await ended(server, 2)
  // Its pages' folios are in the cache (the first guest's faults filled them): the kernel maps
  // them, nothing reaches the server but zero-page folios it maps zeros into.
  t.comment(
    JSON.stringify({
      sa: { f: sa.faults, c: sa.cache, i: sa.pagesInstalled, z: sa.zeroPagesInstalled },
      sb: { f: sb.faults, c: sb.cache, i: sb.pagesInstalled, z: sb.zeroPagesInstalled },
      counts: server.cacheCounts(),
    }),
  )
  t.equal(sb.cache.privatePages, 0, 'no page served into its private memory')
  t.ok(sb.faults <= sa.faults, `second guest: ${sb.faults} faults (first: ${sa.faults})`)
  t.ok(b.report!.minflt < (0.3 * PAGES) / 4, `second guest: ${b.report?.minflt} minor faults for ${0.3 * PAGES} pages (huge mappings or fault-around)`)
})

for (const policy of ['ondemand', 'readahead', 'adaptive', 'background', 'eager']) {
  t.test(`policy ${policy}: a cache-mapped guest reads every page right`, async t => {
    const dir = scratchDir(t, 'fl-cachemap-')
    const img = await makeImage(dir, MIB, 22)
    const socket = join(dir, 's.sock')
    const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, policy, singleGuest: true })
    const g = await runGuest([
      '--socket',
      socket,
      '--mib',
      String(MIB),
      '--map',
      'cache',
      '--workload',
      'random:0.5',
      '--seed',
      '3',
      '--threads',
      '3',
      '--verify',
      img.raw,
      '--verify-each',
    ])
    t.equal(g.code, 0, g.stderr)
    t.equal(g.report?.map, 'cache')
    t.equal(g.report?.mismatches, 0)
    const st = await ended(server, 1)
    if (policy === 'eager') t.equal(st.cache.privatePages, 0, 'eager: every folio was in the cache before the guest ran')
    t.comment(
      `${policy}: ${st.faults} faults, ${st.cache.wakes} answered by a wake, ${st.cache.privatePages} pages served privately, ${st.cache.foliosRequested} folios asked for`,
    )
  })
}

t.test('threads faulting inside folios being filled all read their bytes', async t => {
  const dir = scratchDir(t, 'fl-cachemap-')
  const img = await makeImage(dir, MIB, 23)
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, warmWorkers: 3 })
  // Three guests at once, eight threads each touching every page of the first quarter from
  // their own start: many faults land in each folio while a fill worker writes it.
  const runs = await Promise.all(
    [0, 1, 2].map(() =>
      runGuest([
        '--socket',
        socket,
        '--mib',
        String(MIB),
        '--map',
        'cache',
        '--workload',
        'sequential:0.25',
        '--threads',
        '8',
        '--same-pages',
        '--verify',
        img.raw,
        '--verify-each',
      ]),
    ),
  )
  for (const [i, g] of runs.entries()) {
    t.equal(g.code, 0, `guest ${i}: ${g.stderr}`)
    t.equal(g.report?.mismatches, 0, `guest ${i}: every page right`)
  }
  await waitForEndedSessions(server, 3)
})

t.test("writes stay private; MADV_DONTNEED brings back the snapshot's page; another guest reads the snapshot", async t => {
  const dir = scratchDir(t, 'fl-cachemap-')
  const img = await makeImage(dir, MIB, 24)
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, warmWorkers: 2 })
  // Pages 0-599 written, then 300-899 discarded: 0-299 read the pattern, 300-899 the image again.
  const a = await runGuest([
    '--socket',
    socket,
    '--mib',
    String(MIB),
    '--map',
    'cache',
    '--workload',
    'sequential',
    '--verify',
    img.raw,
    '--write-pattern',
    '0:600',
    '--discard',
    '300:600',
  ])
  t.equal(a.code, 0, a.stderr)
  t.equal(a.report?.after_mismatches, 0, "written pages read what was written, discarded ones the snapshot's bytes")
  const b = await runGuest(['--socket', socket, '--mib', String(MIB), '--map', 'cache', '--workload', 'sequential', '--verify', img.raw])
  t.equal(b.report?.mismatches, 0, "another guest of the same cache reads the snapshot, not the first guest's writes")
  await waitForEndedSessions(server, 2)
})

t.test("fork: the child shares the cache, its faults are served by the parent's session", async t => {
  const dir = scratchDir(t, 'fl-cachemap-')
  const img = await makeImage(dir, MIB, 25)
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, singleGuest: true })
  const logs: string[] = []
  server.on('log', l => logs.push(l))
  const g = await runGuest(['--socket', socket, '--mib', String(MIB), '--map', 'cache', '--workload', 'sequential:0.25', '--verify', img.raw, '--fork'])
  t.equal(g.code, 0, g.stderr)
  t.equal(g.report?.child_mismatches, 0, 'the child read every page right, touched by the parent or not')
  t.equal(g.report?.after_mismatches, 0, 'and so did the parent after it')
  const st = await ended(server, 1)
  t.equal(st.forks, 1)
  t.ok(
    logs.some(l => /child 1 shares the decoded cache/.test(l)),
    'the child was served from the session',
  )
})

t.test('a bounded cache evicts under running guests; every page still reads right', async t => {
  const dir = scratchDir(t, 'fl-cachemap-')
  const img = await makeImage(dir, MIB, 26)
  const socket = join(dir, 's.sock')
  // Room for a quarter of the image: guests touching all of it force evictions while others run.
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, warmWorkers: 3, cacheMemoryBytes: (MIB / 4) * 2 ** 20 })
  const runs = await Promise.all(
    [1, 2, 3].map(seed =>
      runGuest([
        '--socket',
        socket,
        '--mib',
        String(MIB),
        '--map',
        'cache',
        '--workload',
        'random:1',
        '--seed',
        String(seed),
        '--pace-us',
        '20',
        '--verify',
        img.raw,
        '--verify-each',
      ]),
    ),
  )
  for (const [i, g] of runs.entries()) {
    t.equal(g.code, 0, `guest ${i}: ${g.stderr}`)
    t.equal(g.report?.mismatches, 0, `guest ${i}: every page right`)
  }
  await waitForEndedSessions(server, 3)
  const counts = server.cacheCounts()!
  t.ok(counts.evictions > 0, `${counts.evictions} folios evicted`)
  t.ok(counts.presentBytes <= (MIB / 4) * 2 ** 20 + 2 * 2 * 2 ** 20, `${counts.presentBytes} bytes held, bound ${(MIB / 4) * 2 ** 20}`)
})

t.test('a corrupt page: poisoned when touched, its folio served page by page', async t => {
  const dir = scratchDir(t, 'fl-cachemap-')
  const img = await makeImage(dir, MIB, 27)
  const reader = SnapshotReader.open(img.snap)
  let bad = 600
  while (!(reader.kindOf(bad) === KIND_LZ4 && reader.kindOf(bad - 1) !== KIND_ZERO)) bad++
  reader.close()
  const snap = readFileSync(img.snap)
  const at = HEADER_SIZE + 16 * bad
  snap[Number(snap.readBigUInt64LE(48)) + snap.readUIntLE(at, 6) + 3] ^= 0x77
  const damaged = join(dir, 'damaged.snap')
  writeFileSync(damaged, snap)
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: damaged, socketPath: socket, singleGuest: true })
  const list = join(dir, 'pages.txt')
  writeFileSync(list, `${bad - 1}\n${bad}\n`)
  const g = await runGuest(['--socket', socket, '--mib', String(MIB), '--map', 'cache', '--workload', `pages:${list}`, '--verify', img.raw, '--verify-each'])
  t.equal(g.code, 4, g.stderr)
  t.match(g.stderr, new RegExp(`^guest: SIGBUS at page ${bad}: `), 'the damaged page is poisoned; its neighbour read right')
  const st = await ended(server, 1)
  t.equal(st.poisonedPages, 1)
})

t.test('the cache only where the server can serve it: a Firecracker-form guest gets anonymous memory', async t => {
  const dir = scratchDir(t, 'fl-cachemap-')
  const img = await makeImage(dir, 4, 28)
  const socket = join(dir, 's.sock')
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: socket, warmWorkers: 2 })
  const fc = await runGuest(['--socket', socket, '--mib', '4', '--handshake', 'firecracker', '--workload', 'sequential', '--verify', img.raw])
  t.equal(fc.code, 0, fc.stderr)
  t.equal(fc.report?.mismatches, 0)
  const off = await startServer(t, { snapshotPath: img.snap, socketPath: join(dir, 'off.sock'), cacheMemoryBytes: 0 })
  const g = await runGuest(['--socket', off.socketPath, '--mib', '4', '--map', 'cache', '--workload', 'sequential', '--verify', img.raw])
  t.equal(g.code, 0, g.stderr)
  t.equal(g.report?.map, 'anonymous', 'a server without a cache answers anonymous')
  t.equal(g.report?.mismatches, 0)
  await waitForEndedSessions(server, 1)
})
