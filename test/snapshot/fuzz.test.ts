// Fuzz of the snapshot reader with corrupt files: random byte flips, truncations and
// extensions, bad index entries and header fields (checksums recomputed so they get past the
// CRCs), lengths that lie consistently, and damaged page data. Whatever the damage, opening
// either refuses with a one-line FaultlineError, or every page read afterwards is either the
// original page or a SnapshotCorruptError: never wrong data, never another kind of error.
// Both page codecs: this file runs with the native one and runs itself again with
// FAULTLINE_CODEC=npm (the codec is chosen when its module loads).
import t from 'tap'
import { fileURLToPath } from 'node:url'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { FaultlineError } from '../../src/errors.js'
import { E, H, HEADER_SIZE, KIND_LZ4, SnapshotCorruptError } from '../../src/snapshot/format.js'
import { pageCodecName } from '../../src/snapshot/native-codec.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { createSnapshot } from '../../src/snapshot/writer.js'
import { padded, patternImage, prng, writeImage } from './fixtures/images.js'

const PS = 4096
const PAGES = 40
const IMG = patternImage(PS, (PAGES - 1) * PS + 1000, ['text', 'random', 'zero', 'text', 'text'])
const EXPECTED = padded(IMG, PS)
const INDEX_END = HEADER_SIZE + 16 * PAGES

const entry = (p: number) => HEADER_SIZE + 16 * p

/** Recomputes the index CRC, then the header CRC, so only the intended damage remains. */
function fixCrcs(b: Buffer): Buffer {
  if (b.length >= INDEX_END) b.writeUInt32LE(crc32(b.subarray(HEADER_SIZE, INDEX_END)), H.indexCrc)
  b.writeUInt32LE(crc32(b.subarray(0, H.crcCovered)), H.headerCrc)
  return b
}

type Mutation = (b: Buffer, next: () => number) => Buffer

const MUTATIONS: Record<string, Mutation> = {
  'byte flips anywhere': (b, next) => {
    for (let n = 1 + (next() % 4); n > 0; n--) b[next() % b.length] ^= 1 << (next() % 8)
    return b
  },
  truncation: (b, next) => b.subarray(0, next() % b.length),
  extension: (b, next) => Buffer.concat([b, Buffer.alloc(1 + (next() % 5000), next() & 0xff)]),
  'index entry field, CRCs fixed': (b, next) => {
    const at = entry(next() % PAGES)
    const field = [E.offset, E.offset + 2, E.kind, E.reserved, E.length, E.length + 1, E.crc, E.crc + 3][next() % 8]
    b[at + field] = next() & 0xff
    return fixCrcs(b)
  },
  'header field, CRC fixed': (b, next) => {
    const fields = [
      H.version,
      H.headerSize,
      H.pageSize,
      H.chunkPages,
      H.pageCount,
      H.imageSize,
      H.indexOffset,
      H.dataOffset,
      H.dataSize,
      H.checksumAlgorithm,
      H.compression,
      H.flags,
      H.zeroPages,
      H.lz4Pages,
      H.rawPages,
      H.reserved,
    ]
    const at = fields[next() % fields.length] + (next() % 3)
    b[at] = next() & 0xff
    return fixCrcs(b)
  },
  'lengths that lie consistently, CRCs fixed': (b, next) => {
    // Move bytes from one LZ4 page's length to the next stored page's: still contiguous, the
    // data size still adds up, but neither page decodes from its bytes any more.
    for (let tries = 0; tries < 50; tries++) {
      const p = next() % (PAGES - 1)
      if (b[entry(p) + E.kind] !== KIND_LZ4 || b[entry(p + 1) + E.kind] !== KIND_LZ4) continue
      const len = b.readUInt32LE(entry(p) + E.length)
      const delta = 1 + (next() % Math.max(1, len - 1))
      if (len - delta < 1) continue
      b.writeUInt32LE(len - delta, entry(p) + E.length)
      b.writeUInt32LE(b.readUInt32LE(entry(p + 1) + E.length) + delta, entry(p + 1) + E.length)
      b.writeUIntLE(b.readUIntLE(entry(p + 1) + E.offset, 6) - delta, entry(p + 1) + E.offset, 6)
      return fixCrcs(b)
    }
    return b
  },
  'page data damaged': (b, next) => {
    for (let n = 1 + (next() % 8); n > 0; n--) b[INDEX_END + (next() % (b.length - INDEX_END))] ^= 1 + (next() % 255)
    return b
  },
  "page data replaced with another page's": (b, next) => {
    // Same length, valid LZ4, wrong content: only the page CRC can tell.
    const lens = Array.from({ length: PAGES }, (_, p) => [p, b.readUInt32LE(entry(p) + E.length)] as const)
    for (let tries = 0; tries < 50; tries++) {
      const [p] = lens[next() % PAGES]
      const [q] = lens[next() % PAGES]
      if (p === q || lens[p][1] === 0 || lens[p][1] !== lens[q][1] || b[entry(p) + E.kind] !== b[entry(q) + E.kind]) continue
      const from = INDEX_END + b.readUIntLE(entry(q) + E.offset, 6)
      const to = INDEX_END + b.readUIntLE(entry(p) + E.offset, 6)
      if (b.subarray(from, from + lens[q][1]).equals(b.subarray(to, to + lens[p][1]))) continue
      b.copy(b, to, from, from + lens[q][1])
      return b
    }
    // No two distinct pages of one length here: swap two raw pages' CRCs instead.
    const raws = lens.filter(([p]) => b[entry(p) + E.kind] === 2).map(([p]) => p)
    const [p, q] = [raws[0], raws[1]]
    const c = b.readUInt32LE(entry(p) + E.crc)
    b.writeUInt32LE(b.readUInt32LE(entry(q) + E.crc), entry(p) + E.crc)
    b.writeUInt32LE(c, entry(q) + E.crc)
    return fixCrcs(b)
  },
}

const CODEC = process.env.FAULTLINE_CODEC === 'npm' ? 'npm' : 'native'

t.test(`corrupt snapshots (${CODEC} codec): refused at open, or every page read is right or an error`, async t => {
  t.equal(pageCodecName, CODEC, `the reader decodes with the ${CODEC} codec`)
  const dir = t.testdir()
  const raw = writeImage(dir, 'mem.raw', IMG)
  const snap = join(dir, 'mem.snap')
  await createSnapshot(raw, snap, { chunkPages: 4 })
  const original = readFileSync(snap)
  t.equal(original.length > INDEX_END, true)
  const reader = SnapshotReader.open(snap)
  const page = Buffer.alloc(PS)
  for (let p = 0; p < PAGES; p++) {
    reader.readPages(p, 1, page, 0)
    if (!page.equals(EXPECTED.subarray(p * PS, (p + 1) * PS))) t.fail(`the intact snapshot reads page ${p} wrong`)
  }
  reader.close()

  const next = prng(0xfa17)
  const perKind: Record<string, { tried: number; refusedAtOpen: number; corruptReads: number; intact: number }> = {}
  const into = Buffer.alloc(PAGES * PS)
  const path = join(dir, 'bad.snap')
  let tried = 0
  for (let round = 0; round < 250; round++) {
    for (const [kind, mutate] of Object.entries(MUTATIONS)) {
      const stats = (perKind[kind] ??= { tried: 0, refusedAtOpen: 0, corruptReads: 0, intact: 0 })
      const bad = mutate(Buffer.from(original), next)
      writeFileSync(path, bad)
      stats.tried++
      tried++
      let r: SnapshotReader
      try {
        r = SnapshotReader.open(path)
      } catch (err) {
        if (!(err instanceof FaultlineError)) t.fail(`${kind}, round ${round}: open threw ${(err as Error).name}: ${(err as Error).message}`)
        else if (!err.message.startsWith(path) || err.message.includes('\n')) t.fail(`${kind}: message does not name the file on one line: ${err.message}`)
        stats.refusedAtOpen++
        continue
      }
      let corrupt = 0
      try {
        // Every page alone, then the whole image in random runs, as faults and prefetches do.
        for (let p = 0; p < PAGES; p++) corrupt += readChecked(t, r, p, 1, into, `${kind}, round ${round}`)
        for (let p = 0; p < PAGES; ) {
          const n = Math.min(PAGES - p, 1 + (next() % 9))
          corrupt += readChecked(t, r, p, n, into, `${kind}, round ${round}`)
          p += n
        }
      } finally {
        r.close()
      }
      if (corrupt > 0) stats.corruptReads++
      else stats.intact++
    }
  }
  for (const [kind, s] of Object.entries(perKind)) {
    t.ok(
      s.refusedAtOpen + s.corruptReads > 0,
      `${kind}: damage was detected (${s.refusedAtOpen} at open, ${s.corruptReads} at a read, ${s.intact} read intact)`,
    )
  }
  // Damage the CRCs cannot miss: every data flip hits a stored page, which then fails to
  // decode or fails its checksum.
  t.equal(perKind['page data damaged'].intact, 0, 'no damaged page data ever read as intact')
  t.equal(perKind["page data replaced with another page's"].intact, 0, "no page with another page's data read as intact")
  t.equal(perKind['lengths that lie consistently, CRCs fixed'].intact, 0, 'no lying length read as intact')
  t.comment(
    `fuzz: ${tried} corrupt snapshots tried; ` +
      Object.entries(perKind)
        .map(([k, s]) => `${k}: ${s.refusedAtOpen} refused at open, ${s.corruptReads} with a corrupt page reported, ${s.intact} read intact`)
        .join('; '),
  )
})

/** Reads pages [first, first+count) and checks each is the original unless the read threw a
 * SnapshotCorruptError; returns 1 if it did. */
function readChecked(t: { fail(m: string): void }, r: SnapshotReader, first: number, count: number, into: Buffer, where: string): number {
  try {
    r.readPages(first, count, into, 0)
  } catch (err) {
    if (err instanceof SnapshotCorruptError) return 1
    if (err instanceof FaultlineError && /truncated|unexpected end/.test(err.message)) return 1
    t.fail(`${where}: readPages(${first}, ${count}) threw ${(err as Error).name}: ${(err as Error).message}`)
    return 1
  }
  for (let i = 0; i < count; i++) {
    const p = first + i
    if (!into.subarray(i * PS, (i + 1) * PS).equals(EXPECTED.subarray(p * PS, (p + 1) * PS))) {
      t.fail(`${where}: page ${p} read without an error but its data is wrong`)
    }
  }
  return 0
}

if (CODEC === 'native') {
  t.spawn(
    process.execPath,
    [...process.execArgv, fileURLToPath(import.meta.url)],
    { env: { ...process.env, FAULTLINE_CODEC: 'npm' } },
    'the same fuzz through the npm codec (FAULTLINE_CODEC=npm)',
  )
}
