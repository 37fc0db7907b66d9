// The chunk store over an in-memory object: ranged opening, single flight, merged GETs,
// priorities, failure and corruption handling, the bounded LRU disk cache and its reuse by
// the next run. Every figure asserted is computed from the snapshot's own layout.
import t from 'tap'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { checkEntry } from '../../src/store/chunk-cache.js'
import { InstallCause } from '../../src/policy/policy.js'
import { ChunkStore } from '../../src/store/chunk-store.js'
import { CHUNK_ABSENT, CHUNK_FAILED, CHUNK_READY, ENTRY_HEADER_SIZE } from '../../src/store/chunk-table.js'
import { RemoteStoreError } from '../../src/store/errors.js'
import * as uffd from '../../src/uffd/index.js'
import { MemoryRangeSource, settle, tempDir, testSnapshot } from './fixtures.js'

function eventFd(t: { teardown(fn: () => unknown): void }): { fd: number; signalled(): boolean } {
  const fd = uffd.createEventFd()
  t.teardown(() => uffd.closeFd(fd))
  const poll = new uffd.PollSet(1)
  poll.set(0, fd, uffd.POLLIN)
  return {
    fd,
    signalled: () => {
      const s = poll.wait(0) > 0
      if (s) uffd.drainEventFd(fd)
      return s
    },
  }
}

async function openStore(t: any, src: MemoryRangeSource, cacheDir: string, opts: { concurrency?: number; cacheSizeBytes?: number; maxGetBytes?: number } = {}) {
  const store = await ChunkStore.openSource(src, {
    cacheDir,
    cacheSizeBytes: opts.cacheSizeBytes ?? 64 * 2 ** 20,
    concurrency: opts.concurrency,
    maxGetBytes: opts.maxGetBytes,
  })
  t.teardown(() => store.close())
  return store
}

/** Chunks that have stored bytes (all-zero chunks are never fetched). */
function storedChunks(store: ChunkStore): number[] {
  const out: number[] = []
  for (let c = 0; c < store.layout.chunkCount; c++) if (store.layout.storedLength(c) > 0) out.push(c)
  return out
}

t.test('opening reads the header and index only, with ranged reads', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 8)
  const src = new MemoryRangeSource(snap.snapBytes)
  const store = await openStore(t, src, join(dir, 'cache'))
  const reader = SnapshotReader.open(snap.snap)
  t.teardown(() => reader.close())
  t.equal(store.snapshot.header.dataOffset, reader.header.dataOffset)
  t.ok(
    src.reads.every(([start, len]) => start + len <= reader.header.dataOffset || start === 0),
    'nothing past the index but the first read',
  )
  t.ok(src.reads.length <= 2, `${src.reads.length} reads`)
  t.equal(store.snapshot.objectSizeBytes, snap.snapBytes.length)
  for (let c = 0; c < store.layout.chunkCount; c++) {
    t.equal(store.table.state[c], store.layout.storedLength(c) === 0 ? CHUNK_READY : CHUNK_ABSENT, `chunk ${c} initial state`)
  }
})

t.test('an index larger than the first read takes a second ranged read, of exactly the rest', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 20, 2)
  const src = new MemoryRangeSource(snap.snapBytes)
  const store = await openStore(t, src, join(dir, 'cache'))
  const dataOffset = store.snapshot.header.dataOffset
  t.ok(dataOffset > 65536, `index ends at ${dataOffset}`)
  t.same(src.reads, [
    [0, 65536],
    [65536, dataOffset - 65536],
  ])
  t.equal(store.snapshot.bytesFetched, dataOffset)
  t.equal(store.snapshot.gets, 2)
})

t.test('a truncated or over-long object is refused when opened, naming it', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 1)
  await t.rejects(
    ChunkStore.openSource(new MemoryRangeSource(snap.snapBytes.subarray(0, snap.snapBytes.length - 1)), { cacheDir: dir, cacheSizeBytes: 2 ** 30 }),
    /s3:\/\/test-bucket\/mem.snap: truncated: object is \d+ bytes, the snapshot it describes is \d+/,
  )
  await t.rejects(
    ChunkStore.openSource(new MemoryRangeSource(Buffer.concat([snap.snapBytes, Buffer.alloc(3)])), { cacheDir: dir, cacheSizeBytes: 2 ** 30 }),
    /3 unexpected bytes after the end of data/,
  )
})

t.test('single flight: a chunk asked for by several sessions is fetched once, all are told', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 8)
  const src = new MemoryRangeSource(snap.snapBytes)
  const store = await openStore(t, src, join(dir, 'cache'))
  const a = eventFd(t),
    b = eventFd(t)
  const c = storedChunks(store)[3]
  let release!: () => void
  src.gate = new Promise(r => {
    release = r
  })
  const before = src.reads.length
  store.request([c], InstallCause.Fault, a.fd)
  store.request([c], InstallCause.Prefetch, b.fd)
  store.request([c], InstallCause.Fault, a.fd)
  await settle()
  t.equal(store.table.state[c], 1, 'WANTED while in flight')
  t.notOk(a.signalled(), 'nobody told before the data is in')
  release()
  src.gate = undefined
  await store.idle()
  t.equal(src.reads.length - before, 1, 'one read for three requests')
  t.equal(store.table.state[c], CHUNK_READY)
  t.ok(a.signalled(), 'first session told')
  t.ok(b.signalled(), 'second session told')
  t.equal(store.stats.chunksFetched, 1)
  const file = readFileSync(join(store.cache.dir, `${c}.chunk`))
  t.equal(checkEntry(file, c, store.layout), undefined, 'the cache entry checks out')
  t.same(
    file.subarray(ENTRY_HEADER_SIZE),
    snap.snapBytes.subarray(store.snapshot.header.dataOffset + store.layout.storedStart(c), store.snapshot.header.dataOffset + store.layout.storedEnd(c)),
    "it holds the chunk's stored bytes",
  )
  store.request([c], InstallCause.Fault, b.fd)
  t.ok(b.signalled(), 'asking for a ready chunk is answered at once')
  t.equal(src.reads.length - before, 1, 'without a read')
})

t.test('queued neighbours are merged into one GET, up to maxGetBytes', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 8, 3)
  const src = new MemoryRangeSource(snap.snapBytes)
  const maxGetBytes = 256 * 1024
  const store = await openStore(t, src, join(dir, 'cache'), { concurrency: 1, maxGetBytes })
  const w = eventFd(t)
  const chunks = storedChunks(store).filter(c => c < 12)
  let release!: () => void
  src.gate = new Promise(r => {
    release = r
  })
  const before = src.reads.length
  store.request([chunks[0]], InstallCause.Fault, w.fd)
  await settle(5)
  store.request(chunks.slice(1), InstallCause.Background, w.fd)
  release()
  src.gate = undefined
  await store.idle()
  const reads = src.reads.slice(before)
  // Expected: chunk 0 alone (it took the slot first), then greedy runs of consecutive queued
  // chunks while the merged size stays within maxGetBytes.
  const expected: number[] = [store.layout.storedLength(chunks[0])]
  let run = 0,
    prev = -2
  for (const c of chunks.slice(1)) {
    const len = store.layout.storedLength(c)
    if (c === prev + 1 && run + len <= maxGetBytes) run += len
    else {
      if (run > 0) expected.push(run)
      run = len
    }
    prev = c
  }
  expected.push(run)
  t.same(
    reads.map(r => r[1]),
    expected,
    'GET sizes',
  )
  t.ok(reads.length < chunks.length, `${chunks.length} chunks in ${reads.length} GETs`)
  for (const c of chunks) t.equal(store.table.state[c], CHUNK_READY)
  t.equal(store.stats.chunkGets, reads.length)
})

t.test('priorities: a fault overtakes queued prefetch and background work, which leave slots free', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 16, 4)
  const src = new MemoryRangeSource(snap.snapBytes)
  const store = await openStore(t, src, join(dir, 'cache'), { concurrency: 4, maxGetBytes: 1 })
  const w = eventFd(t)
  const chunks = storedChunks(store)
  t.ok(chunks.length >= 30, 'enough chunks')
  let release!: () => void
  src.gate = new Promise(r => {
    release = r
  })
  const before = src.reads.length
  const bg = chunks.slice(0, 10),
    pf = chunks.slice(10, 20),
    fault = chunks[25]
  store.request(bg, InstallCause.Background, w.fd)
  await settle(5)
  t.equal(src.inflight, 2, 'background uses at most concurrency - 2 slots')
  store.request(pf, InstallCause.Prefetch, w.fd)
  await settle(5)
  t.equal(src.inflight, 3, 'prefetch at most concurrency - 1')
  store.request([fault], InstallCause.Fault, w.fd)
  await settle(5)
  t.equal(src.inflight, 4, 'a fault gets the last slot')
  release()
  src.gate = undefined
  await store.idle()
  const order = src.reads.slice(before).map(([start]) => chunks.find(c => store.snapshot.header.dataOffset + store.layout.storedStart(c) === start))
  t.equal(order.indexOf(fault), 3, 'the fault went out as soon as it came')
  t.same(order.slice(0, 4), [bg[0], bg[1], pf[0], fault], 'in flight first: two background, one prefetch, the fault')
  const lastPrefetch = Math.max(...pf.map(c => order.indexOf(c)))
  const firstQueuedBackground = Math.min(...bg.slice(2).map(c => order.indexOf(c)))
  t.ok(firstQueuedBackground > lastPrefetch, `queued background (from read ${firstQueuedBackground}) waited for all prefetch (up to read ${lastPrefetch})`)
  t.equal(src.maxInflight, 4, 'never more than concurrency')
  for (const c of [...bg, ...pf, fault]) t.equal(store.table.state[c], CHUNK_READY)
})

t.test('a slow GET holds one slot: other chunks arrive meanwhile', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 8)
  const src = new MemoryRangeSource(snap.snapBytes)
  const store = await openStore(t, src, join(dir, 'cache'), { concurrency: 2, maxGetBytes: 1 })
  const w = eventFd(t)
  const [slow, ...others] = storedChunks(store).slice(0, 6)
  let release!: () => void
  src.holds.set(
    store.snapshot.header.dataOffset + store.layout.storedStart(slow),
    new Promise(r => {
      release = r
    }),
  )
  store.request([slow], InstallCause.Fault, w.fd)
  store.request(others, InstallCause.Fault, w.fd)
  while (!others.every(c => store.table.state[c] === CHUNK_READY)) await new Promise(r => setTimeout(r, 5))
  t.equal(store.table.state[slow], 1, 'the slow chunk is still coming')
  t.ok(w.signalled(), 'its waiters heard of the others')
  release()
  await store.idle()
  t.equal(store.table.state[slow], CHUNK_READY)
})

t.test('a failed fetch marks the chunk FAILED, tells the waiters why, and a later request tries again', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 4)
  const src = new MemoryRangeSource(snap.snapBytes)
  const store = await openStore(t, src, join(dir, 'cache'))
  const w = eventFd(t)
  const c = storedChunks(store)[1]
  src.faults.push({ kind: 'fail', error: new RemoteStoreError(src.url, 'missing', 'GET bytes=1-2: no such object (NoSuchKey, HTTP 404)') })
  const gen0 = store.table.gen[c]
  store.request([c], InstallCause.Fault, w.fd)
  await store.idle()
  t.equal(store.table.state[c], CHUNK_FAILED)
  t.equal(store.table.gen[c], gen0 + 1, 'the answer bumps the generation')
  t.ok(w.signalled())
  t.equal(store.table.lastError(), 's3://test-bucket/mem.snap: GET bytes=1-2: no such object (NoSuchKey, HTTP 404)')
  t.equal(store.stats.failures, 1)
  store.request([c], InstallCause.Fault, w.fd)
  await store.idle()
  t.equal(store.table.state[c], CHUNK_READY, 'a new request retried it')
  t.ok(w.signalled())
})

t.test('data that fails its page checksums is fetched once more; twice bad fails naming the page', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 4)
  const src = new MemoryRangeSource(snap.snapBytes)
  const store = await openStore(t, src, join(dir, 'cache'))
  const w = eventFd(t)
  const [c1, c2] = storedChunks(store).filter(c => store.layout.storedLength(c) > 8192)
  src.faults.push({ kind: 'corrupt' })
  store.request([c1], InstallCause.Fault, w.fd)
  await store.idle()
  t.equal(store.table.state[c1], CHUNK_READY, 'one bad transfer is survived')
  t.equal(store.stats.corruptFetches, 1)
  src.faults.push({ kind: 'corrupt' }, { kind: 'corrupt' })
  store.request([c2], InstallCause.Fault, w.fd)
  await store.idle()
  t.equal(store.table.state[c2], CHUNK_FAILED)
  t.match(store.table.lastError(), /^s3:\/\/test-bucket\/mem.snap: page \d+ is corrupt: /)
  t.notOk(existsSync(join(store.cache.dir, `${c2}.chunk`)), 'nothing bad reaches the cache')
})

t.test('the cache stays within its size, evicting the least recently used chunk', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 16, 5)
  const src = new MemoryRangeSource(snap.snapBytes)
  const probe = await openStore(t, src, join(dir, 'probe'))
  const min = 2 * (1 + 1) * (probe.layout.maxStoredBytes + 4096)
  await probe.close()
  const capacity = min + 64 * 1024
  const store = await openStore(t, src, join(dir, 'cache'), { concurrency: 1, cacheSizeBytes: capacity })
  const w = eventFd(t)
  const chunks = storedChunks(store)
  const hot = chunks[0]
  let maxBytes = 0
  for (const c of chunks) {
    store.request([c], InstallCause.Fault, w.fd)
    await store.idle()
    t.equal(store.table.state[c], CHUNK_READY, `chunk ${c} ready`)
    store.table.touch(hot) // a guest keeps reading the hot chunk
    maxBytes = Math.max(maxBytes, store.cache.bytes)
  }
  t.ok(maxBytes <= capacity, `cache peaked at ${maxBytes} of ${capacity} bytes`)
  t.ok(store.stats.cache.evictions > 0, `${store.stats.cache.evictions} evictions`)
  t.equal(store.table.state[hot], CHUNK_READY, 'the hot chunk survived every eviction')
  t.equal(store.table.state[chunks[1]], CHUNK_ABSENT, 'an old cold chunk went')
  t.notOk(existsSync(join(store.cache.dir, `${chunks[1]}.chunk`)), 'and its file')
  t.equal(store.table.state[chunks[chunks.length - 1]], CHUNK_READY, 'the newest stayed')
})

t.test('entries of other snapshot versions count against the size and go first', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 8, 6)
  const src = new MemoryRangeSource(snap.snapBytes)
  const cacheDir = join(dir, 'cache')
  const old = join(cacheDir, '0123456789abcdef01234567')
  mkdirSync(old, { recursive: true })
  for (let i = 0; i < 4; i++) writeFileSync(join(old, `${i}.chunk`), Buffer.alloc(1024 * 1024))
  const probe = await openStore(t, new MemoryRangeSource(snap.snapBytes, 's3://test-bucket/probe.snap'), join(dir, 'probe'))
  // Room for the old entries and three of the six chunks fetched below.
  const capacity =
    4 * 1024 * 1024 +
    storedChunks(probe)
      .slice(0, 3)
      .reduce((n, c) => n + ENTRY_HEADER_SIZE + probe.layout.storedLength(c), 0)
  t.ok(capacity >= 2 * 2 * (probe.layout.maxStoredBytes + 4096), 'a size the store accepts')
  await probe.close()
  const store = await openStore(t, src, cacheDir, { concurrency: 1, cacheSizeBytes: capacity })
  t.equal(store.cache.bytes, 4 * 1024 * 1024, "the old version's entries are counted")
  const w = eventFd(t)
  for (const c of storedChunks(store).slice(0, 6)) {
    store.request([c], InstallCause.Fault, w.fd)
    await store.idle()
    t.ok(store.cache.bytes <= capacity, `within ${capacity} bytes after chunk ${c}`)
  }
  t.ok(store.stats.cache.evictions > 0)
  t.notOk(existsSync(join(old, '0.chunk')), "the old version's oldest entry went first")
  for (const c of storedChunks(store).slice(0, 6)) t.equal(store.table.state[c], CHUNK_READY, `chunk ${c} of the current version stayed`)
})

t.test('a cache smaller than the chunks in flight is refused', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 4)
  await t.rejects(
    ChunkStore.openSource(new MemoryRangeSource(snap.snapBytes), { cacheDir: dir, cacheSizeBytes: 1024 * 1024, concurrency: 8 }),
    /--cache-size 1048576: too small for s3:\/\/test-bucket\/mem.snap: at least \d+ bytes/,
  )
})

t.test('the next run adopts the cache: good entries after a CRC check, a corrupted one is fetched again', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 4)
  const cacheDir = join(dir, 'cache')
  const first = await openStore(t, new MemoryRangeSource(snap.snapBytes), cacheDir)
  const w = eventFd(t)
  const chunks = storedChunks(first).slice(0, 4)
  first.request(chunks, InstallCause.Fault, w.fd)
  await first.idle()
  const entryDir = first.cache.dir
  await first.close()
  t.notOk(existsSync(join(entryDir, 'lock')), 'closing unlocks')
  const bad = join(entryDir, `${chunks[1]}.chunk`)
  const bytes = readFileSync(bad)
  bytes[ENTRY_HEADER_SIZE + 10] ^= 0xff
  writeFileSync(bad, bytes)

  const src = new MemoryRangeSource(snap.snapBytes)
  const second = await openStore(t, src, cacheDir)
  t.equal(second.cache.dir, entryDir, 'same snapshot, same directory')
  t.equal(second.stats.cache.adopted, 4)
  t.equal(second.table.state[chunks[0]], CHUNK_ABSENT, 'adopted entries are not served before their check')
  const before = src.reads.length
  second.request(chunks.slice(0, 2), InstallCause.Fault, w.fd)
  await second.idle()
  t.equal(second.table.state[chunks[0]], CHUNK_READY)
  t.equal(second.table.state[chunks[1]], CHUNK_READY)
  t.equal(second.stats.chunksFromDisk, 1, 'the good entry came from disk')
  t.equal(second.stats.cache.rejected, 1, 'the corrupted one failed its CRC')
  t.equal(src.reads.length - before, 1, 'and was fetched again')
  t.equal(checkEntry(readFileSync(bad), chunks[1], second.layout), undefined, 'rewritten good')
})

t.test('one server per cache directory', async t => {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, 1)
  await openStore(t, new MemoryRangeSource(snap.snapBytes), join(dir, 'cache'))
  await t.rejects(
    ChunkStore.openSource(new MemoryRangeSource(snap.snapBytes), { cacheDir: join(dir, 'cache'), cacheSizeBytes: 2 ** 30 }),
    /--cache-dir .*: in use by another faultline server \(pid \d+\); give each server its own --cache-dir/,
  )
})
