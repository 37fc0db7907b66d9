import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Progress } from '../../src/cli/progress.js'
import { formatBytes, formatDuration } from '../../src/util/format.js'
import { snapshotCommand } from '../../src/cli/snapshot.js'
import { FaultlineError, formatCliError } from '../../src/errors.js'
import { HEADER_SIZE } from '../../src/snapshot/format.js'
import { patternImage, writeImage } from '../snapshot/fixtures/images.js'

/** Run the command with captured stdout/stderr (not TTYs: no progress drawn). */
async function run(argv: string[], env: NodeJS.ProcessEnv = {}) {
  let stdout = ''
  let stderr = ''
  const code = await snapshotCommand(argv, {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env,
  })
  return { code, stdout, stderr }
}

// 10 pages + 100 bytes: zero, text, random, zero, ...; page 10 is 100 bytes of text (LZ4).
const IMG = patternImage(4096, 10 * 4096 + 100, ['zero', 'text', 'random'])

t.test('create, info, verify, extract', async t => {
  const dir = t.testdir()
  const raw = writeImage(dir, 'mem.raw', IMG)
  const snap = join(dir, 'mem.snap')
  const c = await run(['create', raw, snap, '--chunk-pages', '4'])
  t.equal(c.code, 0)
  t.equal(c.stderr, '')
  t.match(
    c.stdout,
    new RegExp(
      `^${escapeRegExp(snap)}: 11 pages of 4096 \\(zero 4, lz4 4, raw 3\\), 41060 -> \\d+ bytes \\(ratio \\d+\\.\\d\\d\\), \\d+\\.\\d\\d s, \\d+\\.\\d MB/s\\n$`,
    ),
  )

  const j = await run(['info', snap, '--json'])
  t.equal(j.code, 0)
  const info = JSON.parse(j.stdout)
  const fileSize = readFileSync(snap).length
  t.match(info, {
    file: snap,
    fileSizeBytes: fileSize,
    version: 1,
    pageSize: 4096,
    pageCount: 11,
    imageSizeBytes: 41060,
    indexOffset: HEADER_SIZE,
    dataOffset: HEADER_SIZE + 11 * 16,
    dataSizeBytes: fileSize - HEADER_SIZE - 11 * 16,
    pages: { zero: 4, lz4: 4, raw: 3 },
    checksum: 'crc32',
    compression: 'lz4-block',
    chunkPages: 4,
    chunkCount: 3,
  })
  t.equal(info.ratio, 41060 / fileSize)
  t.match(info.indexCrc, /^0x[0-9a-f]{8}$/)
  // Chunks: pages 0-3, 4-7, 8-10; stored bytes a chunk sum to the data size.
  t.ok(info.chunkStoredBytes.min <= info.chunkStoredBytes.median && info.chunkStoredBytes.median <= info.chunkStoredBytes.max)
  t.ok(info.chunkStoredBytes.max >= 4096 && info.chunkStoredBytes.max <= 4 * 4096)

  const h = await run(['info', snap])
  t.equal(h.code, 0)
  t.match(h.stdout, /^pages +zero 4 \(36\.4%\), lz4 4 \(36\.4%\), raw 3 \(27\.3%\)$/m)
  t.match(h.stdout, /^image +41060 bytes \(40\.1 KiB\), 11 pages of 4096 bytes$/m)
  t.match(h.stdout, /^checksums +crc32 per decoded page; index CRC 0x[0-9a-f]{8}; header CRC ok$/m)
  t.match(h.stdout, /^chunking +4 pages \(16\.0 KiB\) a chunk, 3 chunks; stored bytes a chunk: median \d+, max \d+$/m)
  t.match(h.stdout, new RegExp(`^ratio +${(41060 / fileSize).toFixed(3)} \\(image bytes / file bytes\\)$`, 'm'))

  const v = await run(['verify', snap])
  t.same(v, { code: 0, stdout: `${snap}: 11 pages checked (zero 4, lz4 4, raw 3), 0 corrupt\n`, stderr: '' })

  const out = join(dir, 'out.raw')
  const x = await run(['extract', snap, out])
  t.same(x, { code: 0, stdout: `${out}: 41060 bytes written from ${snap}\n`, stderr: '' })
  t.ok(readFileSync(out).equals(IMG), 'extracted image is byte-identical')
})

t.test('verify reports a corrupt page and exits 1', async t => {
  const dir = t.testdir()
  const snap = join(dir, 'mem.snap')
  await run(['create', writeImage(dir, 'mem.raw', IMG), snap])
  const b = readFileSync(snap)
  b[HEADER_SIZE + 11 * 16 + 10] ^= 0x40 // inside page 1, the first stored page
  writeFileSync(snap, b)
  const v = await run(['verify', snap])
  t.equal(v.code, 1)
  t.match(v.stdout, /^page 1: checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)\n/)
  t.match(v.stdout, /11 pages checked \(zero 4, lz4 4, raw 3\), 1 corrupt\n$/)
  t.equal(v.stderr, `faultline: ${snap}: 1 of 11 pages corrupt, first: page 1\n`)
  const j = await run(['verify', snap, '--json'])
  t.equal(j.code, 1)
  t.match(JSON.parse(j.stdout), { ok: false, corruptPages: 1, corrupt: [{ page: 1 }], pagesChecked: 11 })
  const x = await run(['extract', snap, join(dir, 'out')])
  t.equal(x.code, 1)
  t.match(x.stderr, /^faultline: .*mem\.snap: page 1 is corrupt: checksum mismatch/)
})

t.test('errors are one line, name the file or argument, exit 1 or 2', async t => {
  const dir = t.testdir({ 'text.snap': 'not a snapshot at all' })
  const raw = writeImage(dir, 'mem.raw', IMG)
  const cases: Array<[string[], number, string | RegExp]> = [
    [[], 2, 'faultline: snapshot: missing subcommand (create, info, verify, extract, push); see faultline snapshot --help'],
    [['frobnicate'], 2, 'faultline: snapshot: unknown subcommand "frobnicate" (create, info, verify, extract, push)'],
    [['create', raw], 2, /^faultline: snapshot create: missing SNAP \(usage: faultline snapshot create RAW SNAP/],
    [['info'], 2, /^faultline: snapshot info: missing SNAP \(usage: /],
    [['info', 'a', 'b'], 2, /^faultline: snapshot info: unexpected argument "b" \(usage: /],
    [['extract', 'a'], 2, /^faultline: snapshot extract: missing OUT /],
    [['verify', 'x', '--bogus'], 2, /^faultline: snapshot verify: Unknown option '--bogus' \(usage: /],
    [['create', raw, 'x.snap', '--page-size'], 2, /^faultline: snapshot create: Option '--page-size <value>' argument missing/],
    [['create', raw, 'x.snap', '--page-size', '4k'], 2, 'faultline: --page-size "4k": not a whole number'],
    [['create', raw, 'x.snap', '--page-size', '5000'], 2, 'faultline: --page-size 5000: must be a power of two from 4096 to 65536'],
    [['create', raw, 'x.snap', '--chunk-pages', '0'], 2, 'faultline: --chunk-pages 0: must be from 1 to 65536'],
    [['create', join(dir, 'nope.raw'), join(dir, 'x.snap')], 1, `faultline: ${join(dir, 'nope.raw')}: no such file or directory`],
    [['info', join(dir, 'nope.snap')], 1, `faultline: ${join(dir, 'nope.snap')}: no such file or directory`],
    [['info', join(dir, 'text.snap')], 1, `faultline: ${join(dir, 'text.snap')}: not a faultline snapshot (magic 6e6f74206120736e, expected 464c54534e415000)`],
    [['verify', raw], 1, /^faultline: .*mem\.raw: not a faultline snapshot \(magic /],
    [['extract', raw, join(dir, 'o')], 1, /^faultline: .*mem\.raw: not a faultline snapshot/],
  ]
  for (const [argv, code, want] of cases) {
    const r = await run(argv)
    const label = argv.join(' ') || '(none)'
    t.equal(r.code, code, `${label}: exit ${code}`)
    t.equal(r.stdout, '', `${label}: nothing on stdout`)
    t.match(r.stderr, /^faultline: [^\n]+\n$/, `${label}: one line`)
    t.notMatch(r.stderr, /\bat .+:\d+:\d+/, `${label}: no stack`)
    if (typeof want === 'string') t.equal(r.stderr, `${want}\n`, label)
    else t.match(r.stderr, want, label)
  }
})

t.test('help and FAULTLINE_DEBUG', async t => {
  const h = await run(['--help'])
  t.equal(h.code, 0)
  t.match(h.stdout, /^usage:\n {2}faultline snapshot create RAW SNAP \[--page-size N\] \[--chunk-pages N\]\n/)
  t.same(await run(['info', '--help']), { code: 0, stdout: 'usage: faultline snapshot info SNAP|s3://BUCKET/KEY [--json] [--endpoint URL]\n', stderr: '' })
  const d = await run(['info', '/nonexistent/x.snap'], { FAULTLINE_DEBUG: '1' })
  t.equal(d.code, 1)
  t.match(d.stderr, /^faultline: \/nonexistent\/x\.snap: no such file or directory\nFaultlineError: .*\n\s+at /)
  t.equal(formatCliError(new Error('two\nlines'), {}), 'faultline: two')
  t.equal(formatCliError(new FaultlineError('x.snap: bad'), {}), 'faultline: x.snap: bad')
})

// Progress lives in src/cli/progress.ts; its tests sit here (test/cli/progress.test.ts was
// outside this change's files).
t.test('progress: silent unless a TTY, throttled, percent / MB/s / ETA', async t => {
  let written = ''
  const silent = new Progress('x', 100, { stream: { isTTY: false, write: (s: string) => (written += s) } })
  silent.update(50)
  silent.done()
  silent.clear()
  t.equal(written, '', 'nothing written to a non-TTY')
  t.equal(silent.enabled, false)

  let now = 0
  const frames: string[] = []
  const p = new Progress('create mem.snap', 100e6, { stream: { isTTY: true, write: (s: string) => frames.push(s) }, now: () => now })
  now = 50
  p.update(10e6)
  t.same(frames, ['\r\x1b[2Kcreate mem.snap  10.0%  200.0 MB/s  ETA --'], 'first update draws; ETA waits for 0.2 s of data')
  now = 120
  p.update(20e6)
  t.equal(frames.length, 1, 'throttled: 70 ms after the last draw')
  now = 500
  p.update(50e6)
  t.equal(frames[1], '\r\x1b[2Kcreate mem.snap  50.0%  100.0 MB/s  ETA 1s')
  now = 1000
  p.update(75e6, 200e6)
  t.equal(frames[2], '\r\x1b[2Kcreate mem.snap  37.5%  75.0 MB/s  ETA 2s', 'total can change')
  now = 2000
  p.done()
  t.equal(frames[3], '\r\x1b[2Kcreate mem.snap  71.5 MiB in 2.0 s (37.5 MB/s)\n')
  p.clear()
  t.equal(frames.length, 4, 'clear after done writes nothing')
  t.same([formatDuration(59.4), formatDuration(61), formatDuration(3725)], ['59s', '1:01', '1:02:05'])
  t.same([formatBytes(512), formatBytes(1536), formatBytes(5 * 2 ** 30)], ['512 B', '1.5 KiB', '5.0 GiB'])
})

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
}
