// serve --learn DIR: a session's used pages are kept per snapshot; after a server restart, the
// next session of that snapshot prefetches them unasked (policy learned:), taking far fewer
// faults, anonymous or cache-mapped; `trace stats` shows what the file holds.
import t from 'tap'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { learnedSetPath, readLearnedSet } from '../../src/trace/learned-set.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import type { SessionStats } from '../../src/server/session.js'
import type { PageServer } from '../../src/server/page-server.js'
import { makeImage, ROOT, runGuest, scratchDir, startServer, waitForEndedSessions } from './harness.js'

const MIB = 32

async function lastStats(server: PageServer): Promise<SessionStats> {
  t.ok(await waitForEndedSessions(server, 1), 'the session ended')
  const rec = server.ended.at(-1)!
  if (!rec.stats) throw new Error(`session failed: ${rec.error}`)
  return rec.stats
}

for (const map of ['anonymous', 'cache'] as const) {
  t.test(`${map} guests: the second resume, after a server restart, prefetches what the first used`, async t => {
    const dir = scratchDir(t, 'fl-learn-')
    const img = await makeImage(dir, MIB, 31)
    const learn = join(dir, 'learned')
    spawnSync('mkdir', [learn])
    // The guest lives a little past its workload so a cache-mapped one's hits get sampled.
    const guest = ['--mib', String(MIB), '--map', map, '--workload', 'random:0.25', '--seed', '5', '--hold-ms', '400', '--verify', img.raw]
    const first = await startServer(t, { snapshotPath: img.snap, socketPath: join(dir, 'a.sock'), learnDir: learn, singleGuest: true })
    t.equal(first.policySpec, 'ondemand', 'nothing learned yet: ondemand')
    const a = await runGuest(['--socket', first.socketPath, ...guest])
    t.equal(a.code, 0, a.stderr)
    t.equal(a.report?.mismatches, 0)
    const sa = await lastStats(first)
    await first.close()
    const reader = SnapshotReader.open(img.snap)
    const identity = { indexCrc: reader.header.indexCrc, pageCount: reader.pageCount, pageSize: reader.pageSize }
    reader.close()
    const set = readLearnedSet(learn, identity)!
    t.equal(set.sessions.length, 1)
    t.ok(set.sessions[0].pages.length >= a.report!.pages_touched, `${set.sessions[0].pages.length} pages learned for ${a.report!.pages_touched} touched`)
    t.same(readdirSync(learn), [learnedSetPath(learn, identity).split('/').pop()], "one file, named by the snapshot's content")

    // A new server: it finds the set and prefetches it.
    const second = await startServer(t, { snapshotPath: img.snap, socketPath: join(dir, 'b.sock'), learnDir: learn, singleGuest: true })
    t.match(second.policySpec, /^learned:.*\.fllearn$/, `the restarted server prefetches the learned set (${second.policySpec})`)
    const b = await runGuest(['--socket', second.socketPath, ...guest])
    t.equal(b.code, 0, b.stderr)
    t.equal(b.report?.mismatches, 0, 'every page right')
    const sb = await lastStats(second)
    if (map === 'anonymous') {
      t.ok(sb.faults * 3 <= sa.faults, `${sb.faults} faults against ${sa.faults} the first time (at least 3x fewer)`)
    } else {
      // A cache-mapped guest's learned set goes to the fill workers as prefetch requests, which
      // race the guest: how many of its touches still fault depends on how fast folios fill
      // (on this VM, fresh huge pages are slow), so what is checked is that every folio of the
      // set was asked for; the fault counts are reported.
      const pagesPerFolio = (b.report!.folio_bytes as number) / 4096
      const folios = new Set(set.sessions[0].pages.map(p => Math.floor(p / pagesPerFolio))).size
      t.ok(sb.cache.foliosRequested >= folios, `the ${folios} folios of the learned set were asked for (${sb.cache.foliosRequested})`)
      t.ok(sb.faults <= a.report!.pages_touched, `${sb.faults} faults for ${a.report!.pages_touched} pages touched`)
    }
    t.comment(
      `${map}: first resume ${sa.faults} faults, workload ${(a.report!.workload_ns / 1e6).toFixed(1)} ms; second ${sb.faults} faults, ${(b.report!.workload_ns / 1e6).toFixed(1)} ms`,
    )
    await second.close()
    t.equal(readLearnedSet(learn, identity)!.sessions.length, 2, 'the second session was kept too')

    const stats = spawnSync(process.execPath, [join(ROOT, 'dist/cli/main.js'), 'trace', 'stats', learnedSetPath(learn, identity)], { encoding: 'utf8' })
    t.equal(stats.status, 0, stats.stderr)
    t.match(stats.stdout, /learned working set of snapshot index CRC [0-9a-f]{8} \(8192 pages of 4096 bytes\), 2 session\(s\) kept/)
    t.match(stats.stdout, /the last two sessions share \d+ of \d+ pages/)
  })
}
