// Handshake validation against hostile input: each malformed handshake is refused with a
// HandshakeError naming what is wrong, and a fuzz of mutated handshakes shows that nothing
// else is ever thrown and nothing invalid is ever accepted. Also the /proc parsers the
// server uses to check that the regions are the guest's own, registered memory.
import t from 'tap'
import {
  cannotBecomeJson,
  checkRegionsMapped,
  checkRegionsRegistered,
  HandshakeError,
  MAX_REGIONS,
  parseHandshake,
  type GuestRegion,
  type SnapshotGeometry,
} from '../../src/server/handshake.js'

const SNAP: SnapshotGeometry = { pageSize: 4096, pageCount: 1024 } // a 4 MiB image
const BASE = 0x7f0000000000

const region = (o: Record<string, unknown> = {}) => ({ base_host_virt_addr: BASE, size: 65536, offset: 0, page_size: 4096, ...o })
const faultline = (regions: unknown[], extra: Record<string, unknown> = {}) => JSON.stringify({ version: 1, register: true, regions, ...extra })

function refusal(body: string): string {
  try {
    parseHandshake(body, SNAP)
  } catch (err) {
    if (!(err instanceof HandshakeError)) throw err
    return err.message
  }
  throw new Error(`accepted: ${body.slice(0, 200)}`)
}

t.test('both forms parse', async t => {
  const fc = parseHandshake(
    JSON.stringify([region(), region({ base_host_virt_addr: BASE + 65536, offset: 65536, page_size: undefined, page_size_kib: 4096 })]),
    SNAP,
  )
  t.equal(fc.form, 'firecracker')
  t.equal(fc.register, false)
  t.same(fc.regions[1], { start: BASE + 65536, lengthBytes: 65536, snapshotOffset: 65536, pageSize: 4096 })
  const fl = parseHandshake(faultline([region()]), SNAP)
  t.equal(fl.form, 'faultline')
  t.equal(fl.register, true)
  t.equal(parseHandshake(faultline([region()], { register: false }), SNAP).register, false)
  // The last byte of the image is fine; one page more is not.
  t.equal(parseHandshake(faultline([region({ offset: 4 * 2 ** 20 - 65536 })]), SNAP).regions[0].snapshotOffset, 4 * 2 ** 20 - 65536)
  // Huge guest pages over 4 KiB snapshot pages.
  t.equal(parseHandshake(faultline([region({ base_host_virt_addr: 0x7f0000200000, size: 2 ** 21, page_size: 2 ** 21 })]), SNAP).regions[0].pageSize, 2 ** 21)
})

t.test('hostile handshakes are refused with the reason', async t => {
  const cases: Array<[string, string, RegExp]> = [
    ['empty', '', /^handshake is not JSON \(0 bytes starting ""\)$/],
    ['not JSON', 'GET / HTTP/1.1\r\n', /^handshake is not JSON \(16 bytes starting "GET \/ HTTP\/1\.1\\r\\n"\)$/],
    ['truncated JSON', faultline([region()]).slice(0, 30), /^handshake is not JSON/],
    ['null', 'null', /^handshake must be a JSON array \(Firecracker\) or object \(faultline\)$/],
    ['a string', '"regions"', /^handshake must be a JSON array/],
    ['no version', JSON.stringify({ regions: [region()] }), /^handshake "version" must be 1, got undefined$/],
    ['version as a string', JSON.stringify({ version: '1', regions: [region()] }), /^handshake "version" must be 1, got "1"$/],
    ['register not boolean', faultline([region()], { register: 'yes' }), /^handshake "register" must be true or false$/],
    ['regions not an array', JSON.stringify({ version: 1, regions: { 0: region() } }), /^handshake "regions" must be an array$/],
    ['no regions (faultline)', faultline([]), /^handshake has no regions$/],
    ['no regions (Firecracker)', '[]', /^handshake has no regions$/],
    ['a region that is not an object', faultline([42]), /^region 0: expected an object$/],
    ['a region that is an array', JSON.stringify([[BASE, 4096, 0, 4096]]), /^region 0: expected an object$/],
    ['missing address', faultline([{ size: 4096, offset: 0, page_size: 4096 }]), /^region 0: missing "base_host_virt_addr"$/],
    ['missing page size', faultline([{ base_host_virt_addr: BASE, size: 4096, offset: 0 }]), /^region 0: missing "page_size_kib"$/],
    ['size as a string', faultline([region({ size: '4096' })]), /^region 0: "size" must be a non-negative integer, got "4096"$/],
    ['negative size', faultline([region({ size: -4096 })]), /^region 0: "size" must be a non-negative integer, got -4096$/],
    ['fractional offset', faultline([region({ offset: 4096.5 })]), /^region 0: "offset" must be a non-negative integer, got 4096\.5$/],
    [
      'address beyond 2^53',
      `[{"base_host_virt_addr":18446744073709551615,"size":4096,"offset":0,"page_size":4096}]`,
      /^region 0: "base_host_virt_addr" must be a non-negative integer, got 18446744073709552000$/,
    ],
    ['size 0', faultline([region({ size: 0 })]), /^region 0: size is 0$/],
    [
      'unaligned address',
      faultline([region({ base_host_virt_addr: BASE + 8 })]),
      /^region 0: address 0x7f0000000008 and size 65536 must be multiples of its page size 4096$/,
    ],
    ['unaligned size', faultline([region({ size: 5000 })]), /^region 0: address 0x7f0000000000 and size 5000 must be multiples of its page size 4096$/],
    ['unaligned offset', faultline([region({ offset: 512 })]), /^region 0: offset 512 is not a multiple of its page size 4096$/],
    ['page size not a power of two', faultline([region({ page_size: 12288 })]), /^region 0: page size 12288 does not fit the snapshot's 4096-byte pages$/],
    ["page size below the snapshot's", faultline([region({ page_size: 2048 })]), /^region 0: page size 2048 does not fit/],
    ['page size 0', faultline([region({ page_size: 0 })]), /^region 0: page size 0 does not fit/],
    ['page size 2 GiB', faultline([region({ page_size: 2 ** 31 })]), /^region 0: page size 2147483648 does not fit/],
    [
      'huge region, 4 KiB aligned only',
      faultline([region({ base_host_virt_addr: BASE + 4096, size: 2 ** 21, page_size: 2 ** 21 })]),
      /^region 0: address 0x7f0000001000 and size 2097152 must be multiples of its page size 2097152$/,
    ],
    [
      'past the user address space',
      faultline([region({ base_host_virt_addr: 2 ** 48 - 4096, size: 8192 })]),
      /^region 0: address range ends past the user address space$/,
    ],
    [
      "past the snapshot's end",
      faultline([region({ offset: 4 * 2 ** 20 - 4096, size: 8192 })]),
      /^region 0: offset 4190208 \+ size 8192 is past the snapshot's end \(4194304 bytes\)$/,
    ],
    ['bigger than the snapshot', faultline([region({ size: 8 * 2 ** 20 })]), /^region 0: offset 0 \+ size 8388608 is past the snapshot's end/],
    [
      'overlapping addresses',
      faultline([region(), region({ base_host_virt_addr: BASE + 4096, offset: 131072 })]),
      /^regions overlap at address 0x7f0000001000$/,
    ],
    ['the same region twice', faultline([region(), region()]), /^regions overlap at address 0x7f0000000000$/],
    [
      'overlapping snapshot ranges',
      faultline([region(), region({ base_host_virt_addr: BASE + 2 ** 20, offset: 4096 })]),
      /^regions overlap in the snapshot at offset 4096$/,
    ],
    [
      'too many regions (faultline)',
      faultline(Array.from({ length: MAX_REGIONS + 1 }, (_, i) => region({ base_host_virt_addr: BASE + i * 4096, size: 4096, offset: 0 }))),
      /^handshake has 1025 regions; at most 1024$/,
    ],
    ['too many regions (Firecracker)', JSON.stringify(Array.from({ length: MAX_REGIONS + 1 }, () => 0)), /^handshake has 1025 regions; at most 1024$/],
  ]
  for (const [name, body, expected] of cases) t.match(refusal(body), expected, name)
})

/** Deterministic PRNG (mulberry32) so a failing fuzz case can be replayed from its seed. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let z = seed
    z = Math.imul(z ^ (z >>> 15), z | 1)
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61)
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296
  }
}

/** What an accepted handshake must satisfy, whatever went in. */
function checkAccepted(regions: GuestRegion[]): string | undefined {
  const image = SNAP.pageCount * SNAP.pageSize
  for (const [i, r] of regions.entries()) {
    const ps = r.pageSize
    if (!(ps >= SNAP.pageSize && (ps & (ps - 1)) === 0)) return `region ${i}: page size ${ps}`
    if (!(r.lengthBytes > 0 && r.lengthBytes % ps === 0 && r.start % ps === 0 && r.snapshotOffset % ps === 0)) return `region ${i}: alignment`
    if (r.snapshotOffset + r.lengthBytes > image) return `region ${i}: past the image`
    for (const [j, q] of regions.entries()) {
      if (j <= i) continue
      if (r.start < q.start + q.lengthBytes && q.start < r.start + r.lengthBytes) return `regions ${i}, ${j}: addresses overlap`
      if (r.snapshotOffset < q.snapshotOffset + q.lengthBytes && q.snapshotOffset < r.snapshotOffset + r.lengthBytes)
        return `regions ${i}, ${j}: offsets overlap`
    }
  }
  return undefined
}

t.test('fuzz: mutated handshakes are refused with a HandshakeError or accepted valid', async t => {
  const random = rng(0x5eed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]
  const values = [
    0,
    1,
    4095,
    4096,
    8192,
    65536,
    2 ** 21,
    2 ** 30,
    2 ** 53,
    -1,
    -4096,
    0.5,
    1e308,
    NaN,
    '4096',
    null,
    true,
    [],
    {},
    BASE,
    BASE + 4096,
    4 * 2 ** 20,
  ]
  const fields = ['base_host_virt_addr', 'size', 'offset', 'page_size', 'page_size_kib', 'version', 'register', 'regions', '__proto__', 'constructor']
  let tried = 0,
    accepted = 0
  const refusedBy = new Map<string, number>()
  for (let i = 0; i < 20000; i++) {
    const n = 1 + Math.floor(random() * 4)
    const regions: Array<Record<string, unknown>> = Array.from({ length: n }, (_, k) =>
      region({ base_host_virt_addr: BASE + k * 2 ** 20, size: 4096 * (1 + Math.floor(random() * 64)), offset: k * 262144 }),
    )
    // Structured mutations: odd values in random fields...
    for (let m = Math.floor(random() * 3); m > 0; m--) pick(regions)[pick(fields)] = pick(values)
    let body = random() < 0.5 ? JSON.stringify(regions) : faultline(regions)
    // ...and byte-level ones: flips, cuts, insertions.
    if (random() < 0.3) {
      const b = Buffer.from(body)
      for (let m = 1 + Math.floor(random() * 3); m > 0; m--) {
        const at = Math.floor(random() * b.length)
        const op = random()
        if (op < 0.4) b[at] ^= 1 << Math.floor(random() * 8)
        else if (op < 0.7) body = b.subarray(0, at).toString('latin1')
        else b[at] = pick([0x22, 0x7b, 0x5d, 0x2c, 0x3a, 0x2d, 0x30, 0x00])
      }
      if (body.length === b.length) body = b.toString('latin1')
    }
    tried++
    let result
    try {
      result = parseHandshake(body, SNAP)
    } catch (err) {
      if (!(err instanceof HandshakeError)) {
        t.fail(`case ${i}: ${(err as Error).name} instead of a HandshakeError: ${(err as Error).message} for ${body.slice(0, 300)}`)
        continue
      }
      if (err.message.includes('\n')) t.fail(`case ${i}: a multi-line message`)
      const kind = err.message.replace(/\d+|0x[0-9a-f]+|"[^"]*"/g, '#').slice(0, 40)
      refusedBy.set(kind, (refusedBy.get(kind) ?? 0) + 1)
      continue
    }
    accepted++
    const bad = checkAccepted(result.regions)
    if (bad) t.fail(`case ${i}: accepted an invalid handshake (${bad}): ${body.slice(0, 300)}`)
  }
  t.ok(accepted > 1000 && tried - accepted > 1000, `both outcomes exercised: ${accepted} accepted, ${tried - accepted} refused`)
  t.ok(refusedBy.size >= 10, `${refusedBy.size} distinct refusal reasons`)
  t.comment(`fuzz: ${tried} handshakes tried, ${accepted} accepted (all valid), ${tried - accepted} refused with a HandshakeError (${refusedBy.size} kinds)`)
})

t.test('regions must be mapped in the guest (/proc/PID/maps)', async t => {
  const maps = [
    '7f0000000000-7f0000010000 rw-p 00000000 00:00 0',
    '7f0000010000-7f0000020000 rw-p 00000000 00:00 0 ', // adjacent: together they cover 128 KiB
    '7f0000030000-7f0000040000 r--p 00000000 08:01 1234 /usr/lib/libc.so.6',
    '',
  ].join('\n')
  const r = (start: number, lengthBytes: number): GuestRegion => ({ start, lengthBytes, snapshotOffset: 0, pageSize: 4096 })
  t.doesNotThrow(() => checkRegionsMapped([r(BASE, 0x20000)], maps), 'two adjacent mappings cover it')
  t.doesNotThrow(() => checkRegionsMapped([r(BASE + 0x30000, 0x10000)], maps))
  t.throws(() => checkRegionsMapped([r(BASE, 0x30000)], maps), { message: "region 0: 0x7f0000020000 is not mapped in the guest's address space" })
  t.throws(() => checkRegionsMapped([r(BASE + 0x10000, 0x10000), r(BASE + 0x28000, 0x1000)], maps), {
    message: "region 1: 0x7f0000028000 is not mapped in the guest's address space",
  })
  t.throws(() => checkRegionsMapped([r(0x1000, 0x1000)], maps), HandshakeError)
  t.throws(() => checkRegionsMapped([r(BASE, 0x1000)], ''), HandshakeError, 'a guest with no maps at all')
})

t.test('Firecracker-form regions must be registered (/proc/PID/smaps VmFlags um)', async t => {
  const smaps = (flags: string[]) =>
    flags
      .map((f, i) =>
        [
          `${(BASE + i * 0x10000).toString(16)}-${(BASE + (i + 1) * 0x10000).toString(16)} rw-p 00000000 00:00 0`,
          'Size:                 64 kB',
          'Rss:                   0 kB',
          `VmFlags: ${f}`,
        ].join('\n'),
      )
      .join('\n') + '\n'
  const r = (start: number, lengthBytes: number): GuestRegion => ({ start, lengthBytes, snapshotOffset: 0, pageSize: 4096 })
  t.doesNotThrow(() => checkRegionsRegistered([r(BASE, 0x20000)], smaps(['rd wr mr mw me ac um', 'rd wr mr mw me ac um'])))
  t.throws(() => checkRegionsRegistered([r(BASE, 0x20000)], smaps(['rd wr mr mw me ac um', 'rd wr mr mw me ac'])), {
    message: /^region 0: 0x7f0000010000 is not registered with the userfaultfd \(UFFDIO_REGISTER, missing mode\)/,
  })
  t.throws(() => checkRegionsRegistered([r(BASE, 0x10000)], smaps(['rd wr mr mw me ac uw'])), HandshakeError, 'write-protect mode is not missing mode')
  t.throws(() => checkRegionsRegistered([r(BASE, 0x10000)], smaps(['rd wr mr mw me ac umx'])), HandshakeError, 'a flag that only starts with um')
})

t.test('a prefix that cannot become JSON is refused at once', async t => {
  t.equal(cannotBecomeJson(''), false)
  t.equal(cannotBecomeJson('  \n'), false)
  t.equal(cannotBecomeJson('[{"base_host_virt_addr": 1'), false, 'a Firecracker handshake cut in two')
  t.equal(cannotBecomeJson('{"version":'), false)
  t.equal(cannotBecomeJson('hello'), true)
  t.equal(cannotBecomeJson('\u0000\u00ff'), true)
  t.equal(cannotBecomeJson('{"version":1,}\n'), true, 'a complete line that does not parse')
  t.equal(cannotBecomeJson('{"version":1}\n'), false, 'a complete line that parses (the caller parses it)')
})
