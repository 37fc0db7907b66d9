// The on-disk chunk cache on its own: entries written whole and checked, bounded in bytes with
// least recently used chunks evicted first (other snapshots' entries before any), adopted from
// an earlier run and verified before use, one server per directory.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { ChunkCache, checkEntry } from '../../src/store/chunk-cache.js'
import { CHUNK_ABSENT, CHUNK_READY, ChunkLayout, ChunkTable, ENTRY_HEADER_SIZE } from '../../src/store/chunk-table.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { makeImage, scratchDir } from '../e2e/harness.js'

const ID = 'a'.repeat(24)
const OTHER_ID = 'b'.repeat(24)

async function setup(t: { teardown(fn: () => unknown): void }) {
  const dir = scratchDir(t, 'fl-chunk-cache-')
  const img = await makeImage(dir, 1, 9) // 256 pages: 4 chunks of 64
  const reader = SnapshotReader.open(img.snap)
  t.teardown(() => reader.close())
  const layout = new ChunkLayout(reader.index)
  const snap = readFileSync(img.snap)
  const dataOffset = reader.header.dataOffset
  const stored = (c: number) => snap.subarray(dataOffset + layout.storedStart(c), dataOffset + layout.storedEnd(c))
  const root = join(dir, 'cache')
  const open = (capacityBytes: number, table = ChunkTable.create(layout.chunkCount), id = ID) => {
    const cache = ChunkCache.open({ root, snapshotId: id, source: 's3://b/k', capacityBytes, layout, table })
    t.teardown(() => cache.close())
    return { cache, table }
  }
  const entryBytes = (c: number) => ENTRY_HEADER_SIZE + layout.storedLength(c)
  return { layout, stored, root, open, entryBytes }
}

t.test("an entry is the chunk's stored bytes behind a checked header", async t => {
  const { layout, stored, open, entryBytes } = await setup(t)
  t.equal(layout.chunkCount, 4)
  const { cache } = open(1 << 30)
  await cache.put(1, stored(1))
  t.ok(cache.has(1))
  t.ok(cache.isVerified(1), 'written in this run: verified')
  t.notOk(cache.has(0))
  t.equal(cache.bytes, entryBytes(1))
  const file = readFileSync(cache.pathOf(1))
  t.equal(checkEntry(file, 1, layout), undefined, 'header and CRC check out')
  t.same(file.subarray(ENTRY_HEADER_SIZE), stored(1))
  t.match(checkEntry(file, 2, layout), /./, "the same file is not chunk 2's entry")
  t.same(
    readdirSync(cache.dir).filter(n => n.endsWith('.tmp')),
    [],
    'no temporary file left',
  )
})

t.test('over its size it evicts the least recently used ready chunk first', async t => {
  const { stored, open, entryBytes } = await setup(t)
  // Room for chunks 0, 1 and 2 but not a fourth (slack: capacity / 16).
  const capacity = entryBytes(0) + entryBytes(1) + entryBytes(2) + Math.floor(entryBytes(3) / 2)
  const { cache, table } = open(capacity)
  for (const c of [0, 1, 2]) {
    await cache.put(c, stored(c))
    Atomics.store(table.state, c, CHUNK_READY)
  }
  table.touch(1)
  table.touch(0)
  table.touch(2) // 1 is now the least recently used
  await cache.put(3, stored(3))
  t.notOk(cache.has(1), 'chunk 1 evicted')
  t.equal(Atomics.load(table.state, 1), CHUNK_ABSENT, 'and marked absent before its file went')
  t.ok(cache.has(0) && cache.has(2) && cache.has(3))
  t.ok(cache.bytes <= capacity)
  t.equal(cache.stats.evictions, 1)
})

t.test('entries of an earlier run are adopted, then verified before use; a bad one is dropped', async t => {
  const { stored, open, root } = await setup(t)
  const first = open(1 << 30)
  await first.cache.put(0, stored(0))
  await first.cache.put(2, stored(2))
  const path2 = first.cache.pathOf(2)
  first.cache.close()
  // Damage chunk 2's data, same size: adopted by name and size, caught by its CRC.
  const bytes = readFileSync(path2)
  bytes[ENTRY_HEADER_SIZE + 5] ^= 0xff
  writeFileSync(path2, bytes)
  writeFileSync(join(root, ID, '7.chunk'), 'not a chunk of this snapshot')
  const { cache } = open(1 << 30)
  t.equal(cache.stats.adopted, 2)
  t.equal(cache.stats.rejected, 1, 'the entry for a chunk the snapshot does not have is deleted at once')
  t.notOk(existsSync(join(root, ID, '7.chunk')))
  t.notOk(cache.isVerified(0), 'adopted entries are not trusted yet')
  t.equal(await cache.verify(0), true)
  t.ok(cache.isVerified(0))
  t.equal(await cache.verify(2), false, 'the damaged entry fails its check')
  t.notOk(cache.has(2))
  t.equal(cache.stats.rejected, 2)
})

t.test("another snapshot's entries go first when room is needed", async t => {
  const { stored, open, entryBytes } = await setup(t)
  const other = open(1 << 30, undefined, OTHER_ID)
  await other.cache.put(0, stored(0))
  await other.cache.put(3, stored(3))
  other.cache.close()
  const otherEntries = [join(other.cache.dir, '0.chunk'), join(other.cache.dir, '3.chunk')]
  t.ok(otherEntries.every(e => existsSync(e)))
  // Room for this snapshot's chunks 1 and 2 (and the slack eviction leaves, capacity / 16),
  // not for them and the other snapshot's entry too.
  const capacity = Math.ceil(((entryBytes(1) + entryBytes(2)) * 16) / 15) + 1
  t.ok(capacity < entryBytes(0) + entryBytes(3) + entryBytes(1) + entryBytes(2), 'all four do not fit')
  const { cache } = open(capacity)
  await cache.put(1, stored(1))
  await cache.put(2, stored(2))
  t.ok(otherEntries.filter(e => existsSync(e)).length < 2, "the other snapshot's entries were evicted (oldest first, as many as needed)")
  t.ok(cache.has(1) && cache.has(2), "this snapshot's entries stay")
})

t.test("one server per cache directory; a dead owner's lock is taken over", async t => {
  const { open } = await setup(t)
  const { cache } = open(1 << 30)
  t.equal(readFileSync(join(cache.dir, 'lock'), 'utf8'), `${process.pid}\n`)
  t.throws(() => open(1 << 30), { name: 'ChunkCacheError', message: /in use by another faultline server \(pid \d+\); give each server its own --cache-dir$/ })
  cache.close()
  t.notOk(existsSync(join(cache.dir, 'lock')), 'close releases it')
  writeFileSync(join(cache.dir, 'lock'), '999999999\n') // no such process
  const again = open(1 << 30)
  t.equal(readFileSync(join(again.cache.dir, 'lock'), 'utf8'), `${process.pid}\n`)
})
