// Cache-mapped guests (/work/notes/cache-protocol.md) end to end: the native guest and the shim
// (guest side: the map stage, the cache mapped MAP_PRIVATE over the region) against uffd-floor
// --map cache (the C reference server: a miss fills a whole folio of the decoded cache, then
// wakes). Memory verified page by page; the server's counters held against what each fault
// must have done; semantics (private writes, MADV_DONTNEED, fork, threads) checked by reading.
import t from 'tap'
import type { Test } from '@tapjs/test'
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { HEADER_SIZE, KIND_LZ4, KIND_ZERO } from '../../src/snapshot/format.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { makeImage, ROOT, runGuest, scratchDir } from '../e2e/harness.js'
import { Floor, runFloor } from './floor.js'

const MIB = 16
const PAGES = MIB * 256

function touchedPages(path: string): number[] {
  const b = readFileSync(path)
  return Array.from({ length: b.length / 4 }, (_, i) => b.readUInt32LE(4 * i))
}

/** Folios of `folioBytes` the pages fall in, split by whether every page of the folio is a
 * zero page (those stay holes and are ZEROPAGEd) or not (those are filled). */
function folios(reader: SnapshotReader, pages: Iterable<number>, folioBytes: number): { filled: Set<number>; zero: Set<number> } {
  const per = folioBytes / 4096
  const filled = new Set<number>(),
    zero = new Set<number>()
  for (const p of pages) {
    const k = Math.floor(p / per)
    let allZero = true
    for (let q = k * per; q < Math.min((k + 1) * per, reader.pageCount); q++) if (reader.kindOf(q) !== KIND_ZERO) allZero = false
    ;(allZero ? zero : filled).add(k)
  }
  return { filled, zero }
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

async function setup(t: Test, seed: number, floorArgs: string[] = [], spawnPrefix: string[] = []) {
  const dir = scratchDir(t, 'fl-cache-')
  const img = await makeImage(dir, MIB, seed)
  const reader = SnapshotReader.open(img.snap)
  t.teardown(() => reader.close())
  const socket = join(dir, 's.sock')
  const floor = await Floor.start(t, ['--socket', socket, '--snapshot', img.snap, '--map', 'cache', ...floorArgs], spawnPrefix)
  t.match(floor.stderr, /uffd-floor: decoded cache: (a file on a private tmpfs mounted huge=within_size|a memfd)/, 'the server says what its cache is')
  return { dir, img, reader, socket, floor }
}

t.test('a cache-mapped guest reads the snapshot through the cache; a miss fills one whole folio, a second guest only hits', async t => {
  const { dir, img, reader, socket, floor } = await setup(t, 11)
  const touched = join(dir, 'a.touched')
  const a = await runGuest([
    '--socket',
    socket,
    '--mib',
    String(MIB),
    '--map',
    'cache',
    '--workload',
    'sequential:0.3',
    '--verify',
    img.raw,
    '--touched-out',
    touched,
  ])
  t.equal(a.code, 0, a.stderr)
  t.equal(a.report?.map, 'cache', 'the server granted the cache')
  t.equal(a.report?.mismatches, 0)
  const b = await runGuest(['--socket', socket, '--mib', String(MIB), '--map', 'cache', '--workload', 'sequential', '--verify', img.raw])
  t.equal(b.code, 0, b.stderr)
  t.equal(b.report?.mismatches, 0)
  t.equal(b.report?.verified_pages, PAGES, 'every page verified')
  const { stats } = await floor.stop()
  const folioBytes = stats?.cache_folio_bytes
  t.equal(a.report?.folio_bytes, folioBytes, "the guest reports the server's fill unit")
  const byA = folios(reader, touchedPages(touched), folioBytes)
  const all = folios(reader, range(PAGES), folioBytes)
  t.ok(byA.filled.size < all.filled.size, `guest A touched ${byA.filled.size} of ${all.filled.size} folios`)
  t.equal(stats?.cache_guests, 2)
  t.equal(stats?.folio_fills, all.filled.size, 'each folio filled once, by whichever guest touched it first')
  t.equal(stats?.faults, all.filled.size + byA.zero.size + all.zero.size, 'one fault a filled folio, and per guest one per folio of zero pages')
  t.equal(stats?.cache_wakes, 0)
  t.equal(stats?.pages_copied, 0, 'nothing copied into a guest')
  t.equal(stats?.foreign_folios, 0)
  // Hits are kernel minor faults (a PMD or fault-around maps many pages), not one a page.
  t.ok(b.report!.minflt < PAGES / 8, `guest B: ${b.report?.minflt} minor faults for ${PAGES} pages`)
})

t.test('threads faulting inside one folio while it is filled all read its bytes', async t => {
  const { img, reader, socket, floor } = await setup(t, 12)
  // The first 1024 pages (two 2 MiB folios), every thread touching all of them from its own
  // start: four threads fault inside each folio at once.
  const g = await runGuest([
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
  ])
  t.equal(g.code, 0, g.stderr)
  t.equal(g.report?.mismatches, 0)
  const { stats } = await floor.stop()
  const all = folios(reader, range(PAGES / 4), stats?.cache_folio_bytes)
  t.equal(stats?.folio_fills, all.filled.size, 'each folio filled once')
  // Faults in a folio being filled that the server had not read yet are woken by the fill's
  // UFFDIO_WAKE (it covers the folio) and never reach it; the ones it had read are answered
  // by a wake alone (or, in a folio of zero pages, by ZEROPAGE again).
  const others = stats?.faults - stats?.folio_fills - stats?.cache_wakes
  if (all.zero.size === 0) t.equal(others, 0, `${stats?.faults} faults: ${stats?.folio_fills} fills, ${stats?.cache_wakes} wakes alone`)
  else t.ok(others >= all.zero.size, `${stats?.faults} faults: ${stats?.folio_fills} fills, ${stats?.cache_wakes} wakes alone, ${others} in zero folios`)
})

t.test("writes stay private; MADV_DONTNEED brings back the snapshot's page", async t => {
  const { img, socket, floor } = await setup(t, 13)
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
  const { stats } = await floor.stop()
  t.equal(stats?.foreign_folios, 0)
})

t.test('fork: the child shares the cache and reads the snapshot; the cache stays clean', async t => {
  const { img, socket, floor } = await setup(t, 14)
  const g = await runGuest(['--socket', socket, '--mib', String(MIB), '--map', 'cache', '--workload', 'sequential:0.25', '--verify', img.raw, '--fork'])
  t.equal(g.code, 0, g.stderr)
  t.equal(g.report?.child_mismatches, 0, 'the child read every page right, touched by the parent or not')
  t.equal(g.report?.after_mismatches, 0, 'and so did the parent after it')
  const again = await runGuest(['--socket', socket, '--mib', String(MIB), '--map', 'cache', '--workload', 'sequential', '--verify', img.raw])
  t.equal(again.report?.mismatches, 0)
  const { stats } = await floor.stop()
  t.equal(stats?.children, 1, 'the server was told of the child')
  t.equal(stats?.foreign_folios, 0, 'the child allocated nothing in the cache itself')
})

t.test('a process mapping the cache itself allocates zero folios in it: the server punches them out before the next guest', async t => {
  const { img, socket, floor } = await setup(t, 19)
  // A read fault on a hole of a private mapping of shmem allocates a zero folio in the file:
  // here the guest's mmap source, pointed at the server's own descriptor of the cache.
  const fdDir = `/proc/${floor.proc.pid}/fd`
  const cacheFd = readdirSync(fdDir).find(n => {
    try {
      return /\/cache \(deleted\)$|memfd:faultline-cache/.test(readlinkSync(`${fdDir}/${n}`))
    } catch {
      return false
    }
  })
  t.ok(cacheFd, "found the cache among the server's descriptors")
  const foreign = await runGuest(['--mib', String(MIB), '--source', `mmap:${fdDir}/${cacheFd}`, '--workload', 'sequential'])
  t.equal(foreign.code, 0, foreign.stderr)
  const g = await runGuest(['--socket', socket, '--mib', String(MIB), '--map', 'cache', '--workload', 'sequential', '--verify', img.raw])
  t.equal(g.code, 0, g.stderr)
  t.equal(g.report?.mismatches, 0, 'the next guest reads the snapshot, not those zeros')
  const { stats, stderr } = await floor.stop()
  t.equal(stats?.foreign_folios, (PAGES * 4096) / stats?.cache_folio_bytes, 'every folio the foreign reader allocated was punched out')
  t.equal(stats?.folio_fills, (PAGES * 4096) / stats?.cache_folio_bytes, 'and filled by the server for the guest')
  t.match(stderr, /folios of the decoded cache were allocated by a process the server does not serve/)
})

t.test('a page failing its check: its folio stays out of the cache, its pages are served one by one', async t => {
  const dir = scratchDir(t, 'fl-cache-')
  const img = await makeImage(dir, MIB, 15)
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
  const floor = await Floor.start(t, ['--socket', socket, '--snapshot', damaged, '--map', 'cache', '--once'])
  const list = join(dir, 'pages.txt')
  writeFileSync(list, `${bad - 1}\n${bad}\n`)
  const g = await runGuest(['--socket', socket, '--mib', String(MIB), '--map', 'cache', '--workload', `pages:${list}`, '--verify', img.raw, '--verify-each'])
  t.equal(g.code, 4, g.stderr)
  t.match(g.stderr, new RegExp(`^guest: SIGBUS at page ${bad}: `), 'the damaged page is poisoned')
  const r = await floor.exited
  t.match(r.stderr, new RegExp(`page ${bad} is corrupt: .*: folio \\d+ stays out of the cache, served page by page`))
  t.same(
    [r.stats?.folio_fills, r.stats?.pages_copied + r.stats?.pages_zeroed, r.stats?.pages_poisoned],
    [0, 1, 1],
    'its good neighbour was served into the guest alone, the damaged page poisoned, nothing cached',
  )
})

t.test('the cache only where both sides want it and the server can serve it', async t => {
  const dir = scratchDir(t, 'fl-cache-')
  const img = await makeImage(dir, 4, 16)
  const cases: Array<[string, string[], string[], string, string[]]> = [
    ['a snapshot server without --map cache', ['--snapshot', img.snap], ['--map', 'cache'], 'anonymous', []],
    ['a raw server', ['--raw', img.raw], ['--map', 'cache'], 'anonymous', []],
    ['a guest not asking', ['--snapshot', img.snap, '--map', 'cache'], [], 'anonymous', []],
    // Without CAP_SYS_PTRACE no EVENT_FORK, so a forked child would read the cache unregistered.
    [
      'a server that cannot take EVENT_FORK',
      ['--snapshot', img.snap, '--map', 'cache'],
      ['--map', 'cache'],
      'anonymous',
      ['setpriv', '--bounding-set', '-sys_ptrace', '--inh-caps', '-sys_ptrace'],
    ],
    // Without CAP_SYS_ADMIN no tmpfs of its own: a memfd of 4 KiB pages (shmem THP is off here).
    [
      'a server that cannot mount',
      ['--snapshot', img.snap, '--map', 'cache'],
      ['--map', 'cache'],
      'cache',
      ['setpriv', '--bounding-set', '-sys_admin', '--inh-caps', '-sys_admin'],
    ],
  ]
  for (const [name, floorArgs, guestArgs, granted, prefix] of cases) {
    const socket = join(dir, 's.sock')
    const floor = await Floor.start(t, ['--socket', socket, ...floorArgs, '--once'], prefix)
    const g = await runGuest(['--socket', socket, '--mib', '4', ...guestArgs, '--workload', 'sequential', '--verify', img.raw])
    t.equal(g.code, 0, `${name}: ${g.stderr}`)
    t.equal(g.report?.map, granted, `${name}: ${granted}`)
    t.equal(g.report?.mismatches, 0, `${name}: every page verified`)
    const r = await floor.exited
    if (name.includes('EVENT_FORK'))
      t.match(r.stderr, /serving a guest anonymous memory instead of the cache: UFFDIO_API: Operation not permitted with EVENT_FORK/)
    if (name.includes('mount')) {
      t.match(r.stderr, /decoded cache: a memfd \(no private tmpfs: fsopen\(tmpfs\): Operation not permitted\)/)
      t.equal(g.report?.folio_bytes, r.stats?.cache_folio_bytes)
    }
  }
})

t.test('the shim maps the cache over RAM mapped the way QEMU maps it', async t => {
  const { img, socket, floor } = await setup(t, 17)
  const probe = join(ROOT, 'native/build/shim-probe')
  const shim = join(ROOT, 'native/build/libfaultline-shim.so')
  const env = (map?: string) => ({
    ...process.env,
    LD_PRELOAD: shim,
    FAULTLINE_SOCKET: socket,
    FAULTLINE_RAM_SIZE: `${MIB}M`,
    ...(map === undefined ? {} : { FAULTLINE_MAP: map }),
  })
  for (const map of [undefined, 'cache', 'anonymous']) {
    const r = await runGuest(['--fixed', '--expect', img.raw], { binary: probe, env: env(map) })
    t.equal(r.code, 0, `FAULTLINE_MAP=${map ?? '(unset)'}: ${r.stderr}`)
    t.equal(r.report?.checksum, r.report?.expected, `FAULTLINE_MAP=${map ?? '(unset)'}: every byte of RAM is the image's`)
  }
  const bad = await runGuest(['--fixed'], { binary: probe, env: env('huge') })
  t.equal(bad.code, 2)
  t.equal(bad.stderr, 'faultline-shim: FAULTLINE_MAP must be anonymous or cache, got huge\n')
  const { stats } = await floor.stop()
  t.equal(stats?.guests, 3)
  t.equal(stats?.cache_guests, 2, 'by default and with FAULTLINE_MAP=cache the shim took the cache')
})

t.test('arguments that cannot work are refused in one line', async t => {
  const dir = scratchDir(t, 'fl-cache-')
  const img = await makeImage(dir, 1, 18)
  const guest = async (args: string[]) => (await runGuest(['--mib', '1', ...args])).stderr
  t.equal(await guest(['--map', 'huge', '--socket', 'x']), "guest: --map: expected anonymous or cache, got 'huge'\n")
  t.equal(await guest(['--map', 'cache', '--source', `mmap:${img.raw}`]), 'guest: --map cache: needs --source uffd and --handshake faultline\n')
  t.equal(await guest(['--map', 'cache', '--socket', 'x', '--handshake', 'firecracker']), 'guest: --map cache: needs --source uffd and --handshake faultline\n')
  t.equal(
    (await runFloor(['--socket', join(dir, 's'), '--raw', img.raw, '--map', 'cache'])).stderr,
    "uffd-floor: --map cache: needs --snapshot (the cache holds the snapshot's decoded pages)\n",
  )
  t.equal(
    (await runFloor(['--socket', join(dir, 's'), '--snapshot', img.snap, '--map', 'anonymous'])).stderr,
    "uffd-floor: --map: expected cache, got 'anonymous'\n",
  )
})
