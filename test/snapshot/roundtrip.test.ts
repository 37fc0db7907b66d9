import t, { type Test } from 'tap'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { FaultlineError } from '../../src/errors.js'
import { HEADER_SIZE, KIND_LZ4, KIND_RAW, KIND_ZERO } from '../../src/snapshot/format.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { createSnapshot } from '../../src/snapshot/writer.js'
import { padded, patternImage, randomBytes, textBytes, writeImage, type Fill } from './fixtures/images.js'

/** Create a snapshot of `img`, open it, and check every page, one at a time and in runs. */
async function roundTrip(t: Test, img: Buffer, opts: { pageSize?: number; chunkPages?: number; blockBytes?: number } = {}) {
  const dir = t.testdir()
  const raw = writeImage(dir, 'mem.raw', img)
  const snap = join(dir, 'mem.snap')
  const progress: Array<[number, number]> = []
  const res = await createSnapshot(raw, snap, { ...opts, onProgress: (d, tot) => progress.push([d, tot]) })
  const r = SnapshotReader.open(snap)
  t.teardown(() => r.close())
  const ps = opts.pageSize ?? 4096
  const want = padded(img, ps)
  t.equal(r.pageSize, ps)
  t.equal(r.pageCount, Math.ceil(img.length / ps))
  t.equal(r.imageSizeBytes, img.length)
  t.equal(res.fileSizeBytes, statSync(snap).size)
  t.equal(res.fileSizeBytes, HEADER_SIZE + 16 * r.pageCount + res.header.dataSizeBytes)
  t.same(progress.at(-1), [img.length, img.length], 'progress ends at the image size')
  t.notOk(existsSync(`${snap}.tmp`), 'no tmp file left')
  // Whole image in one call.
  const all = Buffer.alloc(want.length, 0xaa)
  r.readPages(0, r.pageCount, all, 0)
  t.ok(all.equals(want), 'whole image decodes identically')
  // Page by page, into a dirty buffer at an offset.
  const one = Buffer.alloc(3 * ps, 0x55)
  let mismatches = 0
  for (let p = 0; p < r.pageCount; p++) {
    r.readPages(p, 1, one, ps)
    if (!one.subarray(ps, 2 * ps).equals(want.subarray(p * ps, (p + 1) * ps))) mismatches++
  }
  t.equal(mismatches, 0, 'every single page decodes identically')
  t.ok(one.subarray(0, ps).every(b => b === 0x55) && one.subarray(2 * ps).every(b => b === 0x55), 'bytes outside the target are untouched')
  // Runs of 5 (crossing chunk and block boundaries) at an unaligned offset.
  const runBuf = Buffer.alloc(5 * ps + 3)
  for (let p = 0; p < r.pageCount; p += 3) {
    const n = Math.min(5, r.pageCount - p)
    r.readPages(p, n, runBuf, 3)
    if (!runBuf.subarray(3, 3 + n * ps).equals(want.subarray(p * ps, (p + n) * ps))) mismatches++
  }
  t.equal(mismatches, 0, 'runs decode identically')
  return { r, res, snap, dir }
}

function expectedKinds(img: Buffer, ps: number): number[] {
  const w = padded(img, ps)
  const kinds: number[] = []
  for (let p = 0; p < w.length / ps; p++) kinds.push(w.subarray(p * ps, (p + 1) * ps).every(b => b === 0) ? KIND_ZERO : -1)
  return kinds
}

t.test('random image: every page stored raw', async t => {
  const img = randomBytes(16 * 4096, 42)
  const { r, res } = await roundTrip(t, img)
  t.equal(res.header.rawPages, 16)
  t.equal(res.header.lz4Pages, 0)
  t.equal(res.header.zeroPages, 0)
  t.equal(res.header.dataSizeBytes, 16 * 4096)
  for (let p = 0; p < 16; p++) t.equal(r.index.crcOf(p), crc32(img.subarray(p * 4096, (p + 1) * 4096)), `page ${p} crc`)
})

t.test('zero image: nothing stored', async t => {
  const { r, res } = await roundTrip(t, Buffer.alloc(10 * 4096))
  t.equal(res.header.zeroPages, 10)
  t.equal(res.header.dataSizeBytes, 0)
  t.equal(res.fileSizeBytes, HEADER_SIZE + 160)
  t.equal(r.kindOf(9), KIND_ZERO)
})

t.test('text image: every page LZ4, well compressed', async t => {
  const img = textBytes(32 * 4096)
  const { r, res } = await roundTrip(t, img)
  t.equal(res.header.lz4Pages, 32)
  t.ok(res.header.dataSizeBytes < img.length / 2, `data ${res.header.dataSizeBytes} < half of ${img.length}`)
  for (let p = 0; p < 32; p++) {
    t.equal(r.kindOf(p), KIND_LZ4)
    t.ok(r.index.storedLength(p) > 0 && r.index.storedLength(p) < 4096)
  }
})

t.test('mixed image, size not a multiple of the page size, small blocks', async t => {
  const fills: Fill[] = ['zero', 'text', 'random', 'zero', 'random', 'text', 'text']
  const img = patternImage(4096, 40 * 4096 + 1000, fills)
  // blockBytes of 3 pages: many blocks, double buffering exercised, a partial last block.
  const { r, res } = await roundTrip(t, img, { blockBytes: 3 * 4096, chunkPages: 4 })
  t.equal(r.pageCount, 41)
  t.equal(res.header.chunkPages, 4)
  const kinds = expectedKinds(img, 4096)
  for (let p = 0; p < 40; p++) {
    const f = fills[p % fills.length]
    t.equal(r.kindOf(p), f === 'zero' ? KIND_ZERO : f === 'text' ? KIND_LZ4 : KIND_RAW, `page ${p} (${f})`)
    if (f === 'zero') t.equal(kinds[p], KIND_ZERO)
  }
  // Page 40 is 1000 random bytes + zero padding: LZ4 shrinks it.
  t.equal(r.kindOf(40), KIND_LZ4)
  const zeros = kinds.filter(k => k === KIND_ZERO).length
  t.equal(res.header.zeroPages, zeros)
  t.equal(res.header.zeroPages + res.header.lz4Pages + res.header.rawPages, 41)
  // Stored pages are contiguous, in page order.
  let pos = 0
  for (let p = 0; p < 41; p++) {
    t.equal(r.index.storedOffset(p), pos)
    pos += r.index.storedLength(p)
  }
  t.equal(pos, res.header.dataSizeBytes)
})

t.test('one-byte image', async t => {
  const { r, res } = await roundTrip(t, Buffer.from([7]))
  t.equal(r.pageCount, 1)
  t.equal(res.header.imageSizeBytes, 1)
  t.equal(r.kindOf(0), KIND_LZ4)
})

t.test('large page sizes', async t => {
  for (const pageSize of [16384, 65536]) {
    const img = patternImage(pageSize, 5 * pageSize + 17, ['text', 'random', 'zero'])
    const { r } = await roundTrip(t, img, { pageSize })
    t.same(
      [0, 1, 2, 3, 4, 5].map(p => r.kindOf(p)),
      [KIND_LZ4, KIND_RAW, KIND_ZERO, KIND_LZ4, KIND_RAW, KIND_ZERO],
      `kinds at ${pageSize}`,
    )
  }
})

t.test('readPages: alternating destination buffers, zero pages overwrite junk', async t => {
  const img = patternImage(4096, 8 * 4096, ['text', 'zero', 'random'])
  const { r } = await roundTrip(t, img)
  const a = Buffer.alloc(2 * 4096)
  const b = Buffer.alloc(2 * 4096)
  for (let i = 0; i < 20; i++) {
    const into = i % 2 ? a : b
    into.fill(0xff)
    const p = i % 7
    r.readPages(p, 2, into, 0)
    t.ok(into.equals(img.subarray(p * 4096, (p + 2) * 4096)), `pages ${p}-${p + 1} into ${i % 2 ? 'a' : 'b'}`)
  }
})

t.test('readPages: range checks and closed reader', async t => {
  const { r } = await roundTrip(t, textBytes(4 * 4096))
  const into = Buffer.alloc(4 * 4096)
  t.throws(() => r.readPages(3, 2, into, 0), RangeError, 'past the last page')
  t.throws(() => r.readPages(-1, 1, into, 0), RangeError)
  t.throws(() => r.readPages(0, 4, into, 1), RangeError, 'past the end of into')
  t.throws(() => r.readPages(0.5, 1, into, 0), RangeError)
  r.readPages(0, 0, into, 0)
  r.close()
  t.throws(() => r.readPages(0, 1, into, 0), /reader is closed/)
  r.close() // idempotent
})

t.test('48-bit offsets: an index past 4 GiB of data', async t => {
  // Parse an index (no data needed) whose stored offsets cross 2^32.
  const { SnapshotIndex } = await import('../../src/snapshot/snapshot-index.js')
  const { encodeIndexEntry, layoutFor } = await import('../../src/snapshot/format.js')
  const ps = 65536
  const pages = 65537
  const idx = Buffer.alloc(pages * 16)
  for (let p = 0; p < pages; p++) encodeIndexEntry(idx, p * 16, { offset: p * ps, kind: KIND_RAW, length: ps, crc: 0 })
  const { indexOffset, dataOffset } = layoutFor(pages)
  const header = {
    version: 1,
    headerSize: 4096,
    pageSize: ps,
    chunkPages: 64,
    pageCount: pages,
    imageSizeBytes: pages * ps,
    indexOffset,
    dataOffset,
    dataSizeBytes: pages * ps,
    indexCrc: crc32(idx),
    checksumAlgorithm: 1,
    compression: 1,
    flags: 0,
    zeroPages: 0,
    lz4Pages: 0,
    rawPages: pages,
  }
  const ix = SnapshotIndex.parse('big.snap', header, idx)
  t.equal(ix.storedOffset(65536), 2 ** 32)
  t.equal(ix.runEnd(65536), 2 ** 32 + ps)
  t.same(ix.entry(65536), { offset: 2 ** 32, kind: KIND_RAW, length: ps, crc: 0 })
})

t.test('createSnapshot rejects bad inputs with one-line errors', async t => {
  const dir = t.testdir({ 'empty.raw': '', sub: {} })
  const raw = writeImage(dir, 'mem.raw', textBytes(4096))
  const snap = join(dir, 'x.snap')
  await t.rejects(createSnapshot(join(dir, 'empty.raw'), snap), { message: `${join(dir, 'empty.raw')}: raw image is empty, nothing to snapshot` })
  await t.rejects(createSnapshot(join(dir, 'missing.raw'), snap), { message: `${join(dir, 'missing.raw')}: no such file or directory` })
  await t.rejects(createSnapshot(join(dir, 'sub'), snap), { message: `${join(dir, 'sub')}: not a regular file` })
  await t.rejects(createSnapshot(raw, snap, { pageSize: 1000 }), { message: 'page size 1000: must be a power of two from 4096 to 65536' })
  await t.rejects(createSnapshot(raw, snap, { pageSize: 131072 }), FaultlineError)
  await t.rejects(createSnapshot(raw, snap, { chunkPages: 0 }), { message: /^chunk pages 0: / })
  await t.rejects(createSnapshot(raw, raw), {
    message: `${raw}: is the same file as the raw image ${raw}; refusing to overwrite an input (choose another output path)`,
  })
  await t.rejects(createSnapshot(raw, join(dir, 'nodir', 'x.snap')), {
    message: `${join(dir, 'nodir', 'x.snap')}: cannot create a temporary file in ${join(dir, 'nodir')}: no such file or directory`,
  })
  t.same(readdirSync(dir).sort(), ['empty.raw', 'mem.raw', 'sub'], 'no snapshot or tmp file left behind')
})
