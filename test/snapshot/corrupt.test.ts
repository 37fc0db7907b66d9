import t from 'tap'
import { appendFileSync, existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { FaultlineError } from '../../src/errors.js'
import { E, H, HEADER_SIZE, KIND_LZ4, KIND_RAW, SnapshotCorruptError, SnapshotFormatError } from '../../src/snapshot/format.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { extractSnapshot, verifySnapshot } from '../../src/snapshot/verify.js'
import { createSnapshot } from '../../src/snapshot/writer.js'
import { padded, patternImage, writeImage } from './fixtures/images.js'

// 20 pages: text, random, zero, text, random, zero, ...; page 19 is a partial text page.
const PS = 4096
const IMG = patternImage(PS, 19 * PS + 300, ['text', 'random', 'zero'])
const PAGES = 20

async function fresh(dir: string, name = 'mem.snap'): Promise<{ snap: string; bytes: Buffer }> {
  const raw = writeImage(dir, `${name}.raw`, IMG)
  const snap = join(dir, name)
  await createSnapshot(raw, snap, { chunkPages: 4 })
  return { snap, bytes: readFileSync(snap) }
}

const indexAt = (p: number) => HEADER_SIZE + 16 * p
const dataOffset = HEADER_SIZE + 16 * PAGES

/** Rewrite the index CRC and then the header CRC, so only the intended change is wrong. */
function fixCrcs(b: Buffer): Buffer {
  b.writeUInt32LE(crc32(b.subarray(HEADER_SIZE, dataOffset)), H.indexCrc)
  b.writeUInt32LE(crc32(b.subarray(0, H.crcCovered)), H.headerCrc)
  return b
}

function openError(path: string): Error {
  try {
    SnapshotReader.open(path).close()
  } catch (err) {
    return err as Error
  }
  throw new Error(`${path} opened without error`)
}

t.test('open rejects structural damage with precise one-line errors', async t => {
  const dir = t.testdir()
  const { snap, bytes } = await fresh(dir)
  const cases: Array<[string, (b: Buffer) => Buffer, RegExp]> = [
    ['bad magic', b => (b.write('XX', 0), b), /: not a faultline snapshot \(magic 585854534e415000, expected 464c54534e415000\)$/],
    ['bad version', b => (b.writeUInt32LE(7, H.version), b), /: unsupported snapshot format version 7 /],
    ['header crc', b => ((b[H.pageCount] ^= 1), b), /: header checksum mismatch \(stored 0x/],
    ['index crc', b => ((b[indexAt(3) + E.crc] ^= 0x10), b), /: index checksum mismatch \(stored 0x/],
    [
      'entry past end of data',
      b => (b.writeUIntLE(10 ** 9, indexAt(13) + E.offset, 6), fixCrcs(b)),
      /: index entry 13 points past end of data \(offset 1000000000 \+ length \d+ > data size \d+\)$/,
    ],
    [
      'entry not contiguous',
      b => (b.writeUIntLE(b.readUIntLE(indexAt(4) + E.offset, 6) + 1, indexAt(4) + E.offset, 6), fixCrcs(b)),
      /: index entry 4: offset \d+, expected \d+ \(stored pages must be contiguous, in page order\)$/,
    ],
    ['unknown kind', b => ((b[indexAt(6) + E.kind] = 3), fixCrcs(b)), /: index entry 6: unknown page kind 3$/],
    ['reserved byte', b => ((b[indexAt(6) + E.reserved] = 1), fixCrcs(b)), /: index entry 6: reserved byte is 1, expected 0$/],
    ['raw length', b => (b.writeUInt32LE(100, indexAt(1) + E.length), fixCrcs(b)), /: index entry 1: raw page with stored length 100, expected 4096$/],
    ['lz4 length', b => (b.writeUInt32LE(4096, indexAt(0) + E.length), fixCrcs(b)), /: index entry 0: LZ4 page with stored length 4096 \(must be 1\.\.4095\)$/],
    ['zero length', b => (b.writeUInt32LE(1, indexAt(2) + E.length), fixCrcs(b)), /: index entry 2: zero page with stored length 1$/],
    ['zero crc', b => (b.writeUInt32LE(1, indexAt(2) + E.crc), fixCrcs(b)), /: index entry 2: zero page with checksum 0x00000001, expected 0xc71c0011$/],
    [
      'kind changed: counts mismatch header',
      b => (
        b.writeBigUInt64LE(b.readBigUInt64LE(H.zeroPages) - 1n, H.zeroPages), b.writeBigUInt64LE(b.readBigUInt64LE(H.rawPages) + 1n, H.rawPages), fixCrcs(b)
      ),
      /: index has 6 zero, 8 lz4, 6 raw pages; header says 5, 8, 7$/,
    ],
    [
      'data size',
      b => (b.writeBigUInt64LE(b.readBigUInt64LE(H.dataSize) - 1n, H.dataSize), fixCrcs(b).subarray(0, b.length - 1)),
      /: index entry 19 points past end of data/,
    ],
    ['truncated data', b => b.subarray(0, b.length - 10), /: truncated: file is \d+ bytes, the snapshot it describes is \d+$/],
    ['truncated index', b => b.subarray(0, HEADER_SIZE + 50), /: truncated: file is 4146 bytes/],
    ['truncated header', b => b.subarray(0, 2000), /: truncated header: file is 2000 bytes, the header alone is 4096$/],
    ['trailing bytes', b => Buffer.concat([b, Buffer.from('junk')]), /: 4 unexpected bytes after the end of data/],
  ]
  for (const [name, damage, re] of cases) {
    const p = join(dir, `${name.replace(/\W+/g, '-')}.snap`)
    writeFileSync(p, damage(Buffer.from(bytes)))
    const err = openError(p)
    t.ok(err instanceof SnapshotFormatError, `${name}: SnapshotFormatError (${err.constructor.name})`)
    t.match(err.message, re, name)
    t.ok(err.message.startsWith(`${p}: `), `${name}: names the file`)
    t.notMatch(err.message, /\n/, `${name}: one line`)
  }
  t.ok(SnapshotReader.open(snap), 'the undamaged file opens')
})

t.test('open: files that are not snapshots', async t => {
  const dir = t.testdir({ 'empty.snap': '', 'text.snap': 'hello world, this is not a snapshot', adir: {} })
  t.equal(openError(join(dir, 'empty.snap')).message, `${join(dir, 'empty.snap')}: not a faultline snapshot (magic empty file, expected 464c54534e415000)`)
  t.match(openError(join(dir, 'text.snap')).message, /text\.snap: not a faultline snapshot \(magic 68656c6c6f20776f,/)
  t.equal(openError(join(dir, 'missing.snap')).message, `${join(dir, 'missing.snap')}: no such file or directory`)
  t.ok(openError(join(dir, 'missing.snap')) instanceof FaultlineError)
  t.match(openError(join(dir, 'adir')).message, /adir: (not a regular file|is a directory)$/)
})

t.test('a flipped data byte: exactly that page is corrupt', async t => {
  const dir = t.testdir()
  for (const [kind, page] of [
    [KIND_LZ4, 3],
    [KIND_RAW, 7],
  ] as const) {
    const { snap, bytes } = await fresh(dir, `flip-${page}.snap`)
    const r0 = SnapshotReader.open(snap)
    t.equal(r0.kindOf(page), kind)
    const at = dataOffset + r0.index.storedOffset(page) + Math.floor(r0.index.storedLength(page) / 2)
    r0.close()
    bytes[at] ^= 0x01
    writeFileSync(snap, bytes)

    const r = SnapshotReader.open(snap) // the index is intact: open succeeds
    t.teardown(() => r.close())
    const into = Buffer.alloc(PAGES * PS)
    const err = t.throws(() => r.readPages(page, 1, into, 0)) as SnapshotCorruptError
    t.ok(err instanceof SnapshotCorruptError, 'SnapshotCorruptError')
    t.equal(err.pageIndex, page)
    t.equal(err.file, snap)
    t.match(
      err.message,
      new RegExp(
        `^${snap.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: page ${page} is corrupt: (checksum mismatch \\(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\\)|LZ4 data malformed|decodes to)`,
      ),
    )
    // A run containing it fails on it; runs around it still read correctly.
    t.equal((t.throws(() => r.readPages(page - 2, 5, into, 0)) as SnapshotCorruptError).pageIndex, page)
    const want = padded(IMG, PS)
    r.readPages(0, page, into, 0)
    t.ok(into.subarray(0, page * PS).equals(want.subarray(0, page * PS)), 'pages before it')
    r.readPages(page + 1, PAGES - page - 1, into, 0)
    t.ok(into.subarray(0, (PAGES - page - 1) * PS).equals(want.subarray((page + 1) * PS)), 'pages after it')

    const v = verifySnapshot(snap)
    t.equal(v.ok, false)
    t.equal(v.corruptPages, 1)
    t.same(
      v.corrupt.map(c => c.page),
      [page],
    )
    t.equal(v.pagesChecked, PAGES)

    const out = join(dir, `flip-${page}.out`)
    t.throws(() => extractSnapshot(snap, out), { name: 'SnapshotCorruptError', pageIndex: page })
    t.notOk(existsSync(out), 'no output on failure')
    t.notOk(existsSync(`${out}.tmp`), 'no tmp file on failure')
  }
})

t.test('verify counts every corrupt page across steps', async t => {
  const dir = t.testdir()
  const { snap, bytes } = await fresh(dir)
  const r = SnapshotReader.open(snap)
  const stored = [0, 1, 3, 4, 18, 19].map(p => ({ p, at: dataOffset + r.index.storedOffset(p) + 5 }))
  r.close()
  for (const { at } of stored) bytes[at] ^= 0xff
  writeFileSync(snap, bytes)
  const v = verifySnapshot(snap)
  t.same(
    v.corrupt.map(c => c.page),
    [0, 1, 3, 4, 18, 19],
  )
  t.equal(v.corruptPages, 6)
  t.same([v.zeroPages, v.lz4Pages, v.rawPages], [6, 8, 6])
})

t.test('truncating after open: readPages fails cleanly', async t => {
  const dir = t.testdir()
  const { snap, bytes } = await fresh(dir)
  const r = SnapshotReader.open(snap)
  t.teardown(() => r.close())
  truncateSync(snap, bytes.length - 100)
  t.throws(() => r.readPages(19, 1, Buffer.alloc(PS), 0), { name: 'SnapshotFormatError', message: /truncated: unexpected end of file at byte \d+$/ })
  appendFileSync(snap, bytes.subarray(bytes.length - 100))
  const into = Buffer.alloc(PS)
  r.readPages(19, 1, into, 0)
  t.ok(into.equals(padded(IMG, PS).subarray(19 * PS)), 'reads again once restored')
})
