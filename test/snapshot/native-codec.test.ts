// The native page codec (liblz4 + ISA-L CRC-32 in one call a run) against the npm one (lz4
// binding + zlib's CRC-32, page by page): same pages out, same errors for damaged data.
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, truncateSync } from 'node:fs'
import { join } from 'node:path'
import { PageDecoder } from '../../src/snapshot/decoder.js'
import { KIND_LZ4, KIND_RAW, SnapshotCorruptError } from '../../src/snapshot/format.js'
import { CODEC_LIBRARY, CODEC_PACKAGES, codecNotice, pageCodecName, selectCodec } from '../../src/snapshot/native-codec.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { createSnapshot } from '../../src/snapshot/writer.js'
import { padded, patternImage, writeImage } from './fixtures/images.js'

const PS = 4096
const PAGES = 61
const IMG = padded(patternImage(PS, PAGES * PS - 1000, ['text', 'random', 'zero', 'text', 'zero']), PS)

async function open(t: Test): Promise<{ reader: SnapshotReader; file: Buffer }> {
  const dir = t.testdir()
  const snap = join(dir, 'mem.snap')
  await createSnapshot(writeImage(dir, 'mem.raw', IMG), snap, { chunkPages: 8 })
  const reader = SnapshotReader.open(snap)
  t.teardown(() => reader.close())
  return { reader, file: readFileSync(snap) }
}

function decode(codec: 'native' | 'npm', reader: SnapshotReader, data: Buffer, first: number, count: number, into: Buffer, at: number): void {
  const index = reader.index
  const start = reader.header.dataOffset + index.runStart(first)
  new PageDecoder(index, codec).decodeRun(first, count, data, start, into, at)
}

function failure(fn: () => void): SnapshotCorruptError {
  try {
    fn()
  } catch (err) {
    if (err instanceof SnapshotCorruptError) return err
    throw err
  }
  throw new Error('decoded damaged data without an error')
}

const codecUrl = new URL('../../src/snapshot/native-codec.ts', import.meta.url).href
const probe = `import(${JSON.stringify(codecUrl)}).then(m => console.log(m.pageCodecName), e => console.log('ERR ' + e.message))`

function codecWith(env: string | undefined): string {
  return execFileSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', probe], {
    env: { ...process.env, FAULTLINE_CODEC: env },
    encoding: 'utf8',
  }).trim()
}

t.test('FAULTLINE_CODEC picks the codec when the module loads: native unless told, unknown ones refused', async t => {
  t.ok(existsSync(CODEC_LIBRARY), `${CODEC_LIBRARY} not built: apt-get install ${CODEC_PACKAGES} && make -C native (npm test as root installs them)`)
  t.equal(pageCodecName, process.env.FAULTLINE_CODEC === 'npm' ? 'npm' : 'native')
  t.equal(codecWith(undefined), 'native')
  t.equal(codecWith(''), 'native')
  t.equal(codecWith('npm'), 'npm')
  t.equal(codecWith('native'), 'native')
  t.match(codecWith('zstd'), /^ERR FAULTLINE_CODEC=zstd: expected native or npm$/)
})

t.test('without the native library built, the npm codec stands in, and says how to get the native one', async t => {
  t.equal(selectCodec(undefined, false), 'npm')
  t.equal(selectCodec('', false), 'npm')
  t.equal(selectCodec(undefined, true), 'native')
  t.equal(selectCodec('native', false), 'native', 'asked for: loading it then fails with the fix')
  t.equal(selectCodec('npm', true), 'npm')
  t.throws(() => selectCodec('zstd', true), { code: 'FL_ERR_USAGE' })
  t.match(
    codecNotice(undefined, 'npm'),
    /^page codec: npm lz4 \(.*native\/build\/libfaultline-codec\.so was not built\); for the faster native one: apt-get install liblz4-dev libisal-dev && make -C native$/,
  )
  t.equal(codecNotice('npm', 'npm'), undefined, 'chosen on purpose: nothing to say')
  t.equal(codecNotice(undefined, 'native'), undefined)
})

t.test('both codecs decode every run to the image, at any destination offset', async t => {
  const { reader, file } = await open(t)
  for (const [first, count, at] of [
    [0, PAGES, 0],
    [3, 17, 5],
    [8, 8, 0],
    [60, 1, 2],
    [2, 1, 0],
    [40, 21, 1],
  ]) {
    for (const codec of ['native', 'npm'] as const) {
      const into = Buffer.alloc((at + count) * PS, 0xaa)
      decode(codec, reader, file, first, count, into, at * PS)
      t.ok(into.subarray(at * PS).equals(IMG.subarray(first * PS, (first + count) * PS)), `${codec}: pages ${first}..${first + count - 1} at slot ${at}`)
      t.ok(
        into.subarray(0, at * PS).every(b => b === 0xaa),
        `${codec}: nothing written before slot ${at}`,
      )
    }
  }
})

t.test('damaged data: both codecs stop at the same page, and a CRC mismatch reads the same', async t => {
  const { reader, file } = await open(t)
  const index = reader.index
  const kinds = [KIND_LZ4, KIND_RAW]
  for (const kind of kinds) {
    let page = 0
    while (index.kindOf(page) !== kind) page++
    // One byte in the middle of its stored data: LZ4 may fail to parse or decode to wrong
    // bytes (then the CRC catches it); raw data always reaches the CRC.
    const bad = Buffer.from(file)
    bad[reader.header.dataOffset + index.storedOffset(page) + (index.storedLength(page) >> 1)] ^= 0x5a
    const errors = (['native', 'npm'] as const).map(codec => failure(() => decode(codec, reader, bad, 0, PAGES, Buffer.alloc(PAGES * PS), 0)))
    for (const e of errors)
      t.match(
        e.message,
        new RegExp(`page ${page} is corrupt: (LZ4 data malformed at byte \\d+|decodes to \\d+ bytes|checksum mismatch)`),
        `kind ${kind}: ${e.message}`,
      )
    if (kind === KIND_RAW) t.equal(errors[0].message, errors[1].message, 'the same stored and computed CRC')
    else t.equal(/checksum/.test(errors[0].message), /checksum/.test(errors[1].message), 'the same kind of failure')
  }
  // A stored page cut short decodes to fewer bytes or fails to parse, never passes.
  let page = 0
  while (index.kindOf(page) !== KIND_LZ4) page++
  const bad = Buffer.from(file)
  bad.fill(0, reader.header.dataOffset + index.storedOffset(page), reader.header.dataOffset + index.storedOffset(page) + index.storedLength(page))
  for (const codec of ['native', 'npm'] as const) {
    t.match(
      failure(() => decode(codec, reader, bad, page, 1, Buffer.alloc(PS), 0)).message,
      new RegExp(`page ${page} is corrupt: `),
      `${codec}: zeroed LZ4 data`,
    )
  }
})

t.test('a run that does not fit its buffers is refused before any native code runs', async t => {
  const { reader, file } = await open(t)
  const start = reader.header.dataOffset + reader.index.runStart(0)
  // (The npm path bounds every page view itself.)
  const d = new PageDecoder(reader.index, 'native')
  t.throws(() => d.decodeRun(0, PAGES, file, start, Buffer.alloc(PAGES * PS - 1), 0), RangeError, 'destination one byte short')
  t.throws(() => d.decodeRun(0, 2, file, start, Buffer.alloc(PS), 0), RangeError, 'two pages into one')
  t.throws(() => d.decodeRun(0, PAGES, file.subarray(0, file.length - 1), start, Buffer.alloc(PAGES * PS), 0), RangeError, 'source one byte short')
  t.throws(() => d.decodeRun(PAGES - 1, 2, file, start, Buffer.alloc(2 * PS), 0), RangeError, 'past the last page')
  t.doesNotThrow(() => d.decodeRun(0, 0, file, start, Buffer.alloc(0), 0), 'an empty run')
})

t.test('a snapshot cut short while open: the read says where the file ended', async t => {
  const dir = t.testdir()
  const snap = join(dir, 'mem.snap')
  await createSnapshot(writeImage(dir, 'mem.raw', IMG), snap, { chunkPages: 8 })
  const reader = SnapshotReader.open(snap)
  t.teardown(() => reader.close())
  const end = reader.header.dataOffset + reader.index.runStart(PAGES - 1) + 10
  truncateSync(snap, end)
  const into = Buffer.alloc(PS)
  t.throws(() => reader.readPages(PAGES - 1, 1, into, 0), new RegExp(`truncated: unexpected end of file at byte ${end}$`))
  t.doesNotThrow(() => reader.readPages(0, 1, into, 0), 'pages before the cut still read')
  t.ok(into.equals(IMG.subarray(0, PS)))
})
