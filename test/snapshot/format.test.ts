import t from 'tap'
import { crc32 } from 'node:zlib'
import { FaultlineError } from '../../src/errors.js'
import {
  H,
  HEADER_SIZE,
  MAGIC,
  SnapshotCorruptError,
  SnapshotFormatError,
  decodeHeader,
  decodeIndexEntry,
  encodeHeader,
  encodeIndexEntry,
  isValidPageSize,
  layoutFor,
  zeroPageCrc,
  type SnapshotHeader,
} from '../../src/snapshot/format.js'

function header(over: Partial<SnapshotHeader> = {}): SnapshotHeader {
  const pageCount = 10
  const { indexOffset, dataOffset } = layoutFor(pageCount)
  return {
    version: 1,
    headerSize: 4096,
    pageSize: 4096,
    chunkPages: 64,
    pageCount,
    imageSizeBytes: 9 * 4096 + 5,
    indexOffset,
    dataOffset,
    dataSizeBytes: 12345,
    indexCrc: 0xdeadbeef,
    checksumAlgorithm: 1,
    compression: 1,
    flags: 0,
    zeroPages: 3,
    lz4Pages: 5,
    rawPages: 2,
    ...over,
  }
}

/** Patch a header's bytes and fix its CRC, so only the patched field is wrong. */
function patched(h: SnapshotHeader, patch: (b: Buffer) => void, fixCrc = true): Buffer {
  const b = encodeHeader(h)
  patch(b)
  if (fixCrc) b.writeUInt32LE(crc32(b.subarray(0, H.crcCovered)), H.headerCrc)
  return b
}

t.test('header round trip and byte layout', async t => {
  const h = header()
  const b = encodeHeader(h)
  t.equal(b.length, HEADER_SIZE)
  t.equal(b.subarray(0, 8).toString('hex'), '464c54534e415000')
  t.equal(b.readUInt32LE(8), 1)
  t.equal(b.readUInt32LE(12), 4096)
  t.equal(b.readUInt32LE(16), 4096)
  t.equal(b.readUInt32LE(20), 64)
  t.equal(b.readBigUInt64LE(24), 10n)
  t.equal(b.readBigUInt64LE(32), BigInt(9 * 4096 + 5))
  t.equal(b.readBigUInt64LE(40), 4096n)
  t.equal(b.readBigUInt64LE(48), 4096n + 160n)
  t.equal(b.readBigUInt64LE(56), 12345n)
  t.equal(b.readUInt32LE(64), 0xdeadbeef)
  t.equal(b.readUInt32LE(68), 1)
  t.equal(b.readUInt32LE(72), 1)
  t.equal(b.readUInt32LE(76), 0)
  t.equal(b.readBigUInt64LE(80), 3n)
  t.equal(b.readBigUInt64LE(88), 5n)
  t.equal(b.readBigUInt64LE(96), 2n)
  t.equal(b.readUInt32LE(124), crc32(b.subarray(0, 124)))
  t.ok(b.subarray(104, 124).every(x => x === 0) && b.subarray(128).every(x => x === 0), 'reserved bytes zero')
  t.same(decodeHeader(b, 'mem.snap'), h)
})

t.test('decodeHeader rejects each inconsistency with a precise message', async t => {
  const h = header()
  const cases: Array<[string, Buffer, RegExp]> = [
    ['bad magic', patched(h, b => b.write('ELF', 0, 'latin1')), /^mem\.snap: not a faultline snapshot \(magic 454c46534e415000, expected 464c54534e415000\)$/],
    ['empty file', Buffer.alloc(0), /^mem\.snap: not a faultline snapshot \(magic empty file/],
    ['short header', encodeHeader(h).subarray(0, 100), /^mem\.snap: truncated header: file is 100 bytes/],
    [
      'version 2',
      patched(h, b => b.writeUInt32LE(2, H.version), false),
      /^mem\.snap: unsupported snapshot format version 2 \(this faultline reads version 1\)$/,
    ],
    [
      'header crc',
      patched(h, b => b.writeUInt32LE(128, H.chunkPages), false),
      /^mem\.snap: header checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)$/,
    ],
    ['header size', patched(h, b => b.writeUInt32LE(8192, H.headerSize)), /header size is 8192, expected 4096$/],
    ['page size not a power of two', patched(h, b => b.writeUInt32LE(6000, H.pageSize)), /page size 6000 is not a power of two from 4096 to 65536$/],
    ['page size too big', patched(h, b => b.writeUInt32LE(131072, H.pageSize)), /page size 131072 is not/],
    ['page size too small', patched(h, b => b.writeUInt32LE(2048, H.pageSize)), /page size 2048 is not/],
    ['chunk pages 0', patched(h, b => b.writeUInt32LE(0, H.chunkPages)), /chunk pages 0 is not in 1\.\.65536$/],
    [
      'no pages',
      patched(header({ pageCount: 0, imageSizeBytes: 0, ...layoutFor(0), zeroPages: 0, lz4Pages: 0, rawPages: 0 }), () => {}),
      /snapshot has no pages/,
    ],
    [
      'page count vs image size',
      patched(h, b => b.writeBigUInt64LE(20000n, H.imageSize)),
      /page count 10 does not match image size 20000 \(5 pages of 4096\)$/,
    ],
    ['index offset', patched(h, b => b.writeBigUInt64LE(4100n, H.indexOffset)), /index offset 4100, expected 4096$/],
    ['data offset', patched(h, b => b.writeBigUInt64LE(4096n, H.dataOffset)), /data offset 4096, expected 4256$/],
    ['data size', patched(h, b => b.writeBigUInt64LE(10n * 4096n + 1n, H.dataSize)), /data size 40961 exceeds 10 uncompressed pages$/],
    ['huge field', patched(h, b => b.writeBigUInt64LE(2n ** 60n, H.dataSize)), /header field data size is too large/],
    ['checksum algorithm', patched(h, b => b.writeUInt32LE(2, H.checksumAlgorithm)), /unknown page checksum algorithm 2$/],
    ['compression', patched(h, b => b.writeUInt32LE(9, H.compression)), /unknown compression 9$/],
    ['flags', patched(h, b => b.writeUInt32LE(1, H.flags)), /unknown flags 0x00000001$/],
    ['kind counts', patched(h, b => b.writeBigUInt64LE(4n, H.rawPages)), /page kind counts 3\+5\+4 do not add up to 10 pages$/],
    ['reserved (crc-covered)', patched(h, b => (b[110] = 1)), /reserved header bytes are not zero$/],
    ['reserved (after crc)', patched(h, b => (b[4000] = 1)), /reserved header bytes are not zero$/],
  ]
  for (const [name, buf, re] of cases) {
    t.throws(() => decodeHeader(buf, 'mem.snap'), re, name)
    try {
      decodeHeader(buf, 'mem.snap')
    } catch (err) {
      t.ok(err instanceof SnapshotFormatError && err instanceof FaultlineError, `${name}: SnapshotFormatError`)
      t.equal((err as SnapshotFormatError).file, 'mem.snap')
      t.notMatch((err as Error).message, /\n/, `${name}: one line`)
    }
  }
})

t.test('index entries: 48-bit offset, kind, length, crc', async t => {
  const b = Buffer.alloc(32, 0xee)
  encodeIndexEntry(b, 16, { offset: 2 ** 48 - 1, kind: 2, length: 65536, crc: 0xffffffff })
  t.equal(b.subarray(16).toString('hex'), 'ffffffffffff' + '02' + '00' + '00000100' + 'ffffffff')
  t.same(decodeIndexEntry(b, 16), { offset: 2 ** 48 - 1, kind: 2, length: 65536, crc: 0xffffffff })
  encodeIndexEntry(b, 0, { offset: 0x123456789a, kind: 1, length: 77, crc: 5 })
  t.equal(b.subarray(0, 16).toString('hex'), '9a78563412000100' + '4d000000' + '05000000')
  t.same(decodeIndexEntry(b, 0), { offset: 0x123456789a, kind: 1, length: 77, crc: 5 })
})

t.test('helpers and error classes', async t => {
  t.same([4096, 8192, 65536, 4095, 6144, 131072, 0, 4096.5].map(isValidPageSize), [true, true, true, false, false, false, false, false])
  t.equal(zeroPageCrc(4096), crc32(Buffer.alloc(4096)))
  t.equal(zeroPageCrc(4096), 0xc71c0011, 'CRC-32/ISO-HDLC of 4096 zero bytes')
  t.equal(MAGIC.toString('latin1'), 'FLTSNAP\0')
  const e = new SnapshotCorruptError('mem.snap', 812, 'checksum mismatch')
  t.equal(e.message, 'mem.snap: page 812 is corrupt: checksum mismatch')
  t.equal(e.name, 'SnapshotCorruptError')
  t.equal(e.pageIndex, 812)
  const f = new SnapshotFormatError('mem.snap', 'index entry 812 points past end of data')
  t.equal(f.message, 'mem.snap: index entry 812 points past end of data')
  t.equal(f.name, 'SnapshotFormatError')
})

t.test('lz4: the native binding, never the pure-JS fallback', async t => {
  const { lz4 } = await import('../../src/snapshot/lz4.js')
  const c = lz4()
  for (const fn of [c.encodeBlock, c.decodeBlock, c.encodeBound]) t.match(Function.prototype.toString.call(fn), /\[native code\]/)
  t.equal(lz4(), c, 'loaded once')
  // Round trip one page through the offsets the writer and reader use.
  const page = Buffer.from('faultline '.repeat(410).slice(0, 4096))
  const out = Buffer.alloc(8192)
  const n = c.encodeBlock(page, out, 100, 100 + 4095)
  t.ok(n > 0 && n < 200, `compressed to ${n} bytes`)
  const back = Buffer.alloc(4096)
  t.equal(c.decodeBlock(out, back, 100, 100 + n), 4096)
  t.ok(back.equals(page))
  const { randomBytes } = await import('./fixtures/images.js')
  t.equal(c.encodeBlock(randomBytes(4096), out, 0, 4095), 0, 'an incompressible page does not fit in pageSize - 1: stored raw')
})
