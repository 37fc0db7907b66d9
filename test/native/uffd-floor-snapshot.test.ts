// uffd-floor --snapshot against the real guest: every page served from a faultline snapshot
// (stored pages decoded and COPYed, zero pages ZEROPAGEd, one fault a page or a batch), memory
// verified against the raw image, its counters held against the snapshot's index; a page that
// fails its check is poisoned (SIGBUS, never data); a damaged file is refused at start with the
// same message the TypeScript reader gives.
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { HEADER_SIZE, KIND_LZ4, KIND_ZERO } from '../../src/snapshot/format.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { makeImage, runGuest, scratchDir } from '../e2e/harness.js'
import { Floor, runFloor } from './floor.js'

const MIB = 16
const PAGES = MIB * 256

function touchedPages(path: string): number[] {
  const b = readFileSync(path)
  return Array.from({ length: b.length / 4 }, (_, i) => b.readUInt32LE(4 * i))
}

t.test('one page a fault: stored pages decoded and copied, zero pages zeroed, every page verified', async t => {
  const dir = scratchDir(t, 'fl-floor-')
  const img = await makeImage(dir, MIB, 5)
  const reader = SnapshotReader.open(img.snap)
  t.teardown(() => reader.close())
  for (const form of ['faultline', 'firecracker']) {
    const socket = join(dir, `${form}.sock`)
    const floor = await Floor.start(t, ['--socket', socket, '--snapshot', img.snap, '--once'])
    const touched = join(dir, `${form}.touched`)
    const g = await runGuest([
      '--socket',
      socket,
      '--mib',
      String(MIB),
      '--handshake',
      form,
      '--workload',
      'random:0.5',
      '--seed',
      '7',
      '--verify',
      img.raw,
      '--touched-out',
      touched,
    ])
    t.equal(g.code, 0, `${form}: ${g.stderr}`)
    t.equal(g.report?.mismatches, 0, `${form}: no page differs from the image`)
    t.equal(g.report?.verified_pages, PAGES / 2)
    const { stats } = await floor.exited
    const pages = touchedPages(touched)
    const zero = pages.filter(p => reader.kindOf(p) === KIND_ZERO)
    const storedBytes = pages.reduce((sum, p) => sum + reader.index.storedLength(p), 0)
    t.ok(zero.length > 0 && zero.length < pages.length, `${form}: the workload touched both kinds (${zero.length} zero pages)`)
    t.same(
      {
        source: stats?.source,
        faults: stats?.faults,
        copied: stats?.pages_copied,
        zeroed: stats?.pages_zeroed,
        poisoned: stats?.pages_poisoned,
        read: stats?.bytes_read,
      },
      { source: 'snapshot', faults: pages.length, copied: pages.length - zero.length, zeroed: zero.length, poisoned: 0, read: storedBytes },
      `${form}: one fault a page, each stored page read once and copied, each zero page zeroed`,
    )
  }
})

t.test('batches: the aligned block of --batch-pages pages is installed, at an offset, from four threads', async t => {
  const dir = scratchDir(t, 'fl-floor-')
  const img = await makeImage(dir, MIB, 6)
  const socket = join(dir, 's.sock')
  const batch = 16
  const offsetPages = 256
  const floor = await Floor.start(t, ['--socket', socket, '--snapshot', img.snap, '--batch-pages', String(batch), '--once'])
  const touched = join(dir, 'touched')
  const guestMiB = MIB - 1
  const g = await runGuest([
    '--socket',
    socket,
    '--mib',
    String(guestMiB),
    '--offset',
    `${offsetPages * 4}K`,
    '--workload',
    'random:0.3',
    '--threads',
    '4',
    '--verify',
    img.raw,
    '--touched-out',
    touched,
  ])
  t.equal(g.code, 0, g.stderr)
  t.equal(g.report?.mismatches, 0)
  const { stats } = await floor.exited
  const blocks = new Set(touchedPages(touched).map(p => Math.floor(p / batch)))
  const regionPages = guestMiB * 256
  const blockPages = [...blocks].reduce((sum, b) => sum + Math.min(batch, regionPages - b * batch), 0)
  t.equal(stats?.pages_copied + stats?.pages_zeroed, blockPages, 'every page of every touched block installed, once')
  t.ok(stats?.faults >= blocks.size && stats?.faults <= touchedPages(touched).length, `${stats?.faults} faults for ${blocks.size} blocks`)
})

/** Flips a byte inside stored page `page`'s data (the index stays valid). */
function damagePage(snap: Buffer, page: number): void {
  const dataOffset = Number(snap.readBigUInt64LE(48))
  const at = HEADER_SIZE + 16 * page
  snap[dataOffset + snap.readUIntLE(at, 6) + Math.floor(snap.readUInt32LE(at + 8) / 2)] ^= 0x5a
}

t.test('a page failing its check is poisoned, never served', async t => {
  const dir = scratchDir(t, 'fl-floor-')
  const img = await makeImage(dir, MIB, 8)
  const reader = SnapshotReader.open(img.snap)
  // An LZ4 page with a stored neighbour before it, in the same block of 4.
  let bad = 4
  while (!(bad % 4 !== 0 && reader.kindOf(bad) === KIND_LZ4 && reader.kindOf(bad - 1) !== KIND_ZERO)) bad++
  reader.close()
  const snap = readFileSync(img.snap)
  damagePage(snap, bad)
  const damaged = join(dir, 'damaged.snap')
  writeFileSync(damaged, snap)
  const list = join(dir, 'pages.txt')
  writeFileSync(list, `${bad - 1}\n${bad}\n${bad + 1}\n`)

  // The kernel lets a server poison whether or not the guest's UFFDIO_API asked for POISON,
  // so Firecracker-form guests get SIGBUS too.
  for (const form of ['faultline', 'firecracker']) {
    for (const batch of [1, 4]) {
      const name = `${form} form, batch ${batch}`
      const socket = join(dir, `${form}${batch}.sock`)
      const floor = await Floor.start(t, ['--socket', socket, '--snapshot', damaged, '--batch-pages', String(batch), '--once'])
      const g = await runGuest([
        '--socket',
        socket,
        '--mib',
        String(MIB),
        '--handshake',
        form,
        '--workload',
        `pages:${list}`,
        '--verify',
        img.raw,
        '--verify-each',
      ])
      t.equal(g.code, 4, `${name}: the guest died of SIGBUS (${g.stderr.trim()})`)
      t.match(g.stderr, new RegExp(`^guest: SIGBUS at page ${bad}: the page server poisoned it`), `${name}: at the damaged page`)
      const r = await floor.exited
      t.match(
        r.stderr,
        new RegExp(`uffd-floor: ${damaged}: page ${bad} is corrupt: (checksum mismatch|LZ4 data malformed|decodes to)`),
        `${name}: the server names the page`,
      )
      t.equal(r.stats?.pages_poisoned, 1, `${name}: one page poisoned`)
      // Batch 4: the good neighbour's fault installed the block, the damaged page poisoned in it.
      t.equal(r.stats?.faults, batch === 1 ? 2 : 1, `${name}: ${r.stats?.faults} faults`)
      // The pages after it in the block race the guest's exit on SIGBUS: at least those before.
      const served = r.stats?.pages_copied + r.stats?.pages_zeroed
      if (batch === 1) t.equal(served, 1, `${name}: the good page served`)
      else t.ok(served >= bad % 4 && served <= 3, `${name}: the good pages before it served (${served} of 3)`)
    }
  }
})

/** Rewrites the index and header checksums after an edit, so only the edit is wrong. */
function resealed(b: Buffer): Buffer {
  const pageCount = Number(b.readBigUInt64LE(24))
  b.writeUInt32LE(crc32(b.subarray(HEADER_SIZE, HEADER_SIZE + 16 * pageCount)), 64)
  b.writeUInt32LE(crc32(b.subarray(0, 124)), 124)
  return b
}

t.test("a damaged snapshot is refused at start, in the TypeScript reader's words", async t => {
  const dir = scratchDir(t, 'fl-floor-')
  const img = await makeImage(dir, 1, 9)
  const good = readFileSync(img.snap)
  const firstOf = (kind: number) => {
    for (let p = 0; ; p++) if (good[HEADER_SIZE + 16 * p + 6] === kind) return HEADER_SIZE + 16 * p
  }
  const cases: Array<[string, (b: Buffer) => Buffer]> = [
    ['empty', () => Buffer.alloc(0)],
    ['short', b => b.subarray(0, 100)],
    ['truncated', b => b.subarray(0, b.length - 100)],
    ['trailing bytes', b => Buffer.concat([b, Buffer.alloc(10)])],
    [
      'bad magic',
      b => {
        b[0] ^= 1
        return b
      },
    ],
    [
      'version',
      b => {
        b[8] = 2
        return b
      },
    ],
    [
      'header checksum',
      b => {
        b[24] ^= 1
        return b
      },
    ],
    [
      'index checksum',
      b => {
        b[HEADER_SIZE + 20] ^= 1
        return b
      },
    ],
    ['page size', b => resealed((b.writeUInt32LE(3000, 16), b))],
    ['page count', b => resealed((b.writeBigUInt64LE(b.readBigUInt64LE(24) + 1n, 24), b))],
    ['flags', b => resealed((b.writeUInt32LE(1, 76), b))],
    ['unknown kind', b => resealed(((b[firstOf(KIND_LZ4) + 6] = 7), b))],
    ['zero page with data', b => resealed((b.writeUInt32LE(1, firstOf(KIND_ZERO) + 8), b))],
    ['reserved entry byte', b => resealed(((b[firstOf(KIND_LZ4) + 7] = 1), b))],
  ]
  for (const [name, damage] of cases) {
    const path = join(dir, `${name.replace(/ /g, '-')}.snap`)
    writeFileSync(path, damage(Buffer.from(good)))
    let expected = ''
    try {
      SnapshotReader.open(path).close()
    } catch (err) {
      expected = (err as Error).message
    }
    t.not(expected, '', `${name}: the TypeScript reader refuses it`)
    const r = await runFloor(['--socket', join(dir, 'x.sock'), '--snapshot', path])
    t.equal(r.code, 2, `${name}: exit 2`)
    t.equal(r.stderr, `uffd-floor: --snapshot: ${expected}\n`, `${name}: one line, the same words`)
  }
  const both = await runFloor(['--socket', join(dir, 'x.sock'), '--snapshot', img.snap, '--raw', img.raw])
  t.equal(both.stderr, 'uffd-floor: give one of --raw RAW or --snapshot SNAP\n')
  const missing = await runFloor(['--socket', join(dir, 'x.sock'), '--snapshot', join(dir, 'nope.snap')])
  t.match(missing.stderr, /^uffd-floor: --snapshot: .*nope\.snap: cannot open: No such file or directory\n$/)
})

t.test("a region past the snapshot's image is refused", async t => {
  const dir = scratchDir(t, 'fl-floor-')
  const img = await makeImage(dir, 4, 10)
  const socket = join(dir, 's.sock')
  const floor = await Floor.start(t, ['--socket', socket, '--snapshot', img.snap, '--once'])
  const g = await runGuest(['--socket', socket, '--mib', '4', '--offset', '4K'])
  t.equal(g.code, 2)
  t.equal(g.stderr, "guest: server refused: region 0: offset 4096 + size 4194304 is past the snapshot's end (4194304 bytes)\n")
  await floor.stop()
})
