// The session side of a remote snapshot, wired to a chunk store in the same thread: what it
// can read when, that what it reads is the image, and how it recovers when a cached chunk is
// evicted or corrupted on disk, or reports a chunk that could not be fetched.
import t from 'tap'
import { openSync, closeSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { ChunkStore } from '../../src/store/chunk-store.js'
import { CHUNK_ABSENT, CHUNK_READY, ENTRY_HEADER_SIZE } from '../../src/store/chunk-table.js'
import { isDeferredSource } from '../../src/store/deferred-source.js'
import { RemoteStoreError } from '../../src/store/errors.js'
import { RemotePageSource, type StoreRequest } from '../../src/store/remote-page-source.js'
import * as uffd from '../../src/uffd/index.js'
import { MemoryRangeSource, tempDir, testSnapshot } from './fixtures.js'

async function setup(t: any, mib = 4) {
  const dir = tempDir(t)
  const snap = await testSnapshot(dir, mib)
  const src = new MemoryRangeSource(snap.snapBytes)
  const store = await ChunkStore.openSource(src, { cacheDir: join(dir, 'cache'), cacheSizeBytes: 64 * 2 ** 20 })
  t.teardown(() => store.close())
  const readyFd = uffd.createEventFd()
  t.teardown(() => uffd.closeFd(readyFd))
  const posted: StoreRequest[] = []
  // What the page server does with a session's messages.
  const route = (m: StoreRequest) => {
    posted.push(m)
    if (m.type === 'fetch') store.request(m.chunks, m.priority, readyFd)
    else store.invalidate(m.chunk)
  }
  const source = new RemotePageSource(store.workerData(), readyFd, route)
  t.teardown(() => source.close())
  const reader = SnapshotReader.open(snap.snap)
  t.teardown(() => reader.close())
  return { dir, snap, src, store, source, reader, posted }
}

/** First chunk (at or after `from`) with stored bytes, and its page range. */
function storedChunk(store: ChunkStore, from = 0): { chunk: number; first: number; count: number } {
  for (let c = from; c < store.layout.chunkCount; c++) {
    if (store.layout.storedLength(c) > 0) return { chunk: c, first: store.layout.firstPage(c), count: store.layout.endPage(c) - store.layout.firstPage(c) }
  }
  throw new Error('no stored chunk')
}

t.test('pages are readable once their chunk is in, and read exactly as the local reader reads them', async t => {
  const { store, source, reader, posted, snap } = await setup(t)
  t.ok(isDeferredSource(source))
  t.notOk(isDeferredSource(reader), 'a local file is not deferred: its path is unchanged')
  const a = storedChunk(store),
    b = storedChunk(store, a.chunk + 1)
  t.equal(source.availablePages(a.first, a.count), 0)
  const into = Buffer.alloc(a.count * 4096)
  let stored = a.first
  while (source.kindOf(stored) === 0) stored++
  t.equal(source.tryReadPages(stored, 1, into, 0), false, 'a stored page cannot be read before its chunk is in')
  t.equal(store.table.state[a.chunk], CHUNK_ABSENT, 'and that changed nothing')
  source.request(a.first + 3, 70, 0)
  const spanned = [a.chunk, a.chunk + 1].filter(c => store.table.state[c] !== CHUNK_READY)
  t.same(
    posted.filter(m => m.type === 'fetch').map(m => Array.from((m as { chunks: Int32Array }).chunks)),
    [spanned],
    'one message for the chunks the run spans',
  )
  source.request(a.first, 1, 0)
  t.equal(posted.length, 1, 'asking again while it is coming sends nothing (and the early read sent nothing)')
  await store.idle()
  t.equal(source.availablePages(a.first, a.count), a.count)
  // A run across two chunks, compared with the local reader and with the raw image.
  const first = b.first - 5,
    count = 10
  source.request(first, count, 0)
  await store.idle()
  t.equal(source.availablePages(first, count), count)
  const remote = Buffer.alloc(count * 4096),
    local = Buffer.alloc(count * 4096)
  t.equal(source.tryReadPages(first, count, remote, 0), true)
  reader.readPages(first, count, local, 0)
  t.same(remote, local, 'same bytes as the local reader')
  t.same(remote, snap.rawBytes.subarray(first * 4096, (first + count) * 4096), 'same bytes as the image')
  t.equal(source.tryReadPages(a.first, a.count, into, 0), true)
  t.same(into, snap.rawBytes.subarray(a.first * 4096, (a.first + a.count) * 4096))
  t.ok(source.bytesRead > 0, `${source.bytesRead} stored bytes read from the cache`)
})

t.test('a fault on a chunk asked for as background work asks again, at fault priority', async t => {
  const { store, source, posted, src } = await setup(t)
  const a = storedChunk(store)
  let release!: () => void
  src.gate = new Promise(r => {
    release = r
  })
  source.request(a.first, 1, 2)
  source.request(a.first, 1, 2)
  source.request(a.first, 1, 0)
  source.request(a.first, 1, 1)
  t.same(
    posted.map(m => (m.type === 'fetch' ? [Array.from(m.chunks), m.priority] : m)),
    [
      [[a.chunk], 2],
      [[a.chunk], 0],
    ],
  )
  release()
  src.gate = undefined
  await store.idle()
  t.equal(source.availablePages(a.first, 1), 1)
})

t.test('a cached chunk corrupted on disk is dropped, fetched again, and then reads right', async t => {
  const { store, source, snap, src, posted } = await setup(t)
  const a = storedChunk(store)
  source.request(a.first, a.count, 0)
  await store.idle()
  const into = Buffer.alloc(a.count * 4096)
  t.equal(source.tryReadPages(a.first, a.count, into, 0), true)
  // Flip stored bytes in place (the session holds the file open).
  const fd = openSync(join(store.cache.dir, `${a.chunk}.chunk`), 'r+')
  writeSync(fd, Buffer.alloc(64, 0xa5), 0, 64, ENTRY_HEADER_SIZE + 16)
  closeSync(fd)
  const reads = src.reads.length
  t.equal(source.tryReadPages(a.first, a.count, into, 0), false, 'the page checksum catches it')
  t.equal(store.table.state[a.chunk], CHUNK_ABSENT)
  t.same(posted[posted.length - 1], { type: 'invalid', chunk: a.chunk })
  source.request(a.first, a.count, 0)
  await store.idle()
  t.equal(src.reads.length - reads, 1, 'fetched again')
  t.equal(store.stats.invalidations, 1)
  t.equal(source.tryReadPages(a.first, a.count, into, 0), true)
  t.same(into, snap.rawBytes.subarray(a.first * 4096, (a.first + a.count) * 4096))
})

t.test('a chunk evicted after it arrived is asked for again', async t => {
  const { store, source } = await setup(t)
  const a = storedChunk(store)
  source.request(a.first, 1, 0)
  await store.idle()
  t.equal(source.availablePages(a.first, 1), 1)
  // What eviction does: READY -> ABSENT, then the file goes.
  Atomics.compareExchange(store.table.state, a.chunk, CHUNK_READY, CHUNK_ABSENT)
  store.cache.remove(a.chunk)
  t.equal(source.availablePages(a.first, 1), 0)
  source.request(a.first, 1, 0)
  await store.idle()
  t.equal(source.availablePages(a.first, 1), 1, 'the generation told it its first answer was used up')
})

t.test('a chunk that could not be fetched is reported with the reason, and not retried by this session', async t => {
  const { store, source, src, posted } = await setup(t)
  const a = storedChunk(store)
  src.faults.push({
    kind: 'fail',
    error: new RemoteStoreError(
      src.url,
      'denied',
      'GET bytes=0-1: wrong credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (InvalidAccessKeyId, HTTP 403)',
    ),
  })
  t.equal(source.failure(a.first, 1), undefined, 'nothing failed before asking')
  source.request(a.first, 1, 0)
  await store.idle()
  t.equal(
    source.failure(a.first, 1),
    's3://test-bucket/mem.snap: GET bytes=0-1: wrong credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (InvalidAccessKeyId, HTTP 403)',
  )
  const sent = posted.length
  source.request(a.first, 1, 0)
  t.equal(posted.length, sent, 'no retry from the session that saw it fail')
  t.equal(source.availablePages(a.first, 1), 0)
})
