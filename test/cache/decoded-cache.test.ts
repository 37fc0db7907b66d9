// The decoded cache and its fill workers: every folio filled holds exactly the image's bytes,
// all-zero folios are never stored, a corrupt page leaves its folio unstored, and a bounded
// cache evicts (punches holes) to stay within its bound.
import { openSync, readFileSync, readSync, writeSync, closeSync, fstatSync } from 'node:fs'
import t from 'tap'
import { DecodedCache, PRESENT, UNSERVABLE, ZERO } from '../../src/cache/decoded-cache.js'
import { FillPool } from '../../src/cache/fill-pool.js'
import { FILL_BACKGROUND, FILL_FAULT } from '../../src/cache/fill-queue.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { CopySourceBuffer } from '../../src/uffd/index.js'
import { makeImage, scratchDir, waitUntil } from '../e2e/harness.js'

function cacheBytes(cache: DecodedCache, folio: number): Buffer {
  const out = Buffer.alloc(cache.folioBytes)
  readSync(cache.fd, out, 0, out.length, folio * cache.folioBytes)
  return out
}

for (const folios of ['huge', 'small'] as const) {
  t.test(`${folios} folios: a fill pool fills every folio with the image's bytes`, async t => {
    const dir = scratchDir(t, 'fl-cache-')
    const img = await makeImage(dir, 16, 5)
    const raw = readFileSync(img.raw)
    const reader = SnapshotReader.open(img.snap)
    t.teardown(() => reader.close())
    const cache = DecodedCache.create(reader, { folios })
    t.teardown(() => cache.close())
    t.comment(`cache: ${cache.info.backing}, ${cache.folioBytes} byte folios: ${cache.info.why}`)
    if (folios === 'small') t.equal(cache.folioBytes, 4096)
    else if (process.getuid?.() === 0) t.equal(cache.folioBytes, 2 * 2 ** 20, 'root gets huge folios')
    const pool = FillPool.start({ snapshotPath: img.snap, cache, workers: 2 })
    t.teardown(() => pool.close())
    let expected = 0
    for (let f = 0; f < cache.folioCount; f++) {
      if (cache.states.get(f) === ZERO) continue
      expected++
      if (cache.markQueued(f)) pool.queue.push(f, f % 2 === 0 ? FILL_FAULT : FILL_BACKGROUND)
    }
    t.ok(await waitUntil(() => cache.counts().presentFolios === expected, 60000), `${expected} folios filled`)
    let bad = 0,
      notPresent = 0
    for (let f = 0; f < cache.folioCount; f++) {
      const start = f * cache.folioBytes
      const want = raw.subarray(start, Math.min(raw.length, start + cache.folioBytes))
      if (cache.states.get(f) === ZERO) {
        if (want.some(b => b !== 0)) bad++
        continue
      }
      if (cache.states.get(f) !== PRESENT) notPresent++
      if (cacheBytes(cache, f).compare(want, 0, want.length, 0, want.length) !== 0) bad++
    }
    t.equal(notPresent, 0, 'every non-zero folio is present')
    t.equal(bad, 0, 'every folio equals the image')
    const st = fstatSync(cache.fd)
    t.equal(st.blocks * 512, expected * cache.folioBytes, 'zero folios take no memory')
    const totals = pool.totals()
    t.equal(totals.foliosFilled, expected)
    t.ok(totals.foliosByPriority[0] > 0 && totals.foliosByPriority[2] > 0, 'both priorities were served')
  })
}

t.test('a corrupt page leaves its folio unstored; the others fill', async t => {
  const dir = scratchDir(t, 'fl-cache-')
  const img = await makeImage(dir, 8, 9)
  let reader = SnapshotReader.open(img.snap)
  // Damage one stored page's data in the file: its CRC no longer matches.
  const victim = [...Array(reader.pageCount).keys()].find(p => p > 600 && reader.kindOf(p) === 1)!
  const offset = reader.header.dataOffset + reader.index.runStart(victim)
  reader.close()
  const fd = openSync(img.snap, 'r+')
  writeSync(fd, Buffer.from('CORRUPT!'), 0, 8, offset)
  closeSync(fd)
  reader = SnapshotReader.open(img.snap)
  t.teardown(() => reader.close())
  const cache = DecodedCache.create(reader, { folios: 'small' })
  t.teardown(() => cache.close())
  const staging = Buffer.alloc(cache.folioBytes)
  t.equal(cache.fill(cache.folioOf(victim), reader, staging), 'unservable')
  t.equal(cache.states.get(cache.folioOf(victim)), UNSERVABLE)
  t.match(cache.lastError?.message, /checksum|LZ4/)
  const other = victim + 1
  t.equal(cache.fill(cache.folioOf(other), reader, staging), cache.states.get(cache.folioOf(other)) === ZERO ? 'zero' : 'filled')
})

t.test('a bounded cache evicts to stay within its bound, and reads of evicted folios fail', async t => {
  const dir = scratchDir(t, 'fl-cache-')
  const img = await makeImage(dir, 8, 11)
  const reader = SnapshotReader.open(img.snap)
  t.teardown(() => reader.close())
  const cache = DecodedCache.create(reader, { folios: 'small', limitBytes: 64 * 4096 })
  t.teardown(() => cache.close())
  const staging = Buffer.alloc(cache.folioBytes)
  let filled = 0
  for (let f = 0; f < cache.folioCount && filled < 200; f++) if (cache.fill(f, reader, staging) === 'filled') filled++
  t.equal(filled, 200)
  const counts = cache.counts()
  t.ok(counts.presentFolios <= 64, `${counts.presentFolios} folios held, bound 64`)
  t.ok(counts.evictions >= 136, `${counts.evictions} evictions`)
  t.equal(fstatSync(cache.fd).blocks * 512, counts.presentBytes, 'evicted folios take no memory')
  const raw = readFileSync(img.raw)
  const into = new CopySourceBuffer(4096)
  let present = 0,
    absent = 0,
    wrong = 0
  for (let f = 0; f < cache.folioCount; f++) {
    const ok = cache.readPresent(f, 1, into.address)
    if (cache.states.get(f) === PRESENT) {
      present++
      if (!ok || into.buffer.compare(raw, f * 4096, (f + 1) * 4096) !== 0) wrong++
    } else if (!ok) absent++
  }
  t.equal(wrong, 0, `${present} present folios read back as the image`)
  t.equal(present, counts.presentFolios)
  t.ok(absent > 100, `${absent} evicted or zero folios refused`)
})
