// A session's fill requests: a guest faulting again and again on a folio that is still queued
// (a sequential reader outrunning its fill) must not crowd the fault ring out, so that the
// first request for every next folio still gets in.
import t from 'tap'
import { DecodedCache, QUEUED, ZERO } from '../../src/cache/decoded-cache.js'
import { FillNotifier } from '../../src/cache/fill-notifier.js'
import { FILL_FAULT, FillQueue } from '../../src/cache/fill-queue.js'
import { FillRequests } from '../../src/server/fill-requests.js'
import { GuestMemory } from '../../src/server/guest-memory.js'
import { COUNTER_SLOTS } from '../../src/server/session-meters.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { makeImage, scratchDir } from '../e2e/harness.js'

t.test("repeated faults on a queued folio leave room for the next folios' first requests", async t => {
  const dir = scratchDir(t, 'fl-fill-requests-')
  const img = await makeImage(dir, 32, 7)
  const reader = SnapshotReader.open(img.snap)
  t.teardown(() => reader.close())
  const cache = DecodedCache.create(reader, { folios: 'huge' })
  t.teardown(() => cache.close())
  if (cache.folioPages === 1) {
    t.skip(`no huge folios here (${cache.info.why})`)
    return
  }
  // A ring as small as the folios: nothing pops it (no fill workers), as when they lag behind.
  const queue = FillQueue.allocate(cache.folioCount)
  const memory = new GuestMemory([{ start: 0x40000000, lengthBytes: img.sizeBytes, snapshotOffset: 0, pageSize: 4096 }], 4096)
  const fills = new FillRequests(cache, queue, FillNotifier.allocate(4), memory, new Float64Array(COUNTER_SLOTS))
  t.teardown(() => fills.close())
  const stored: number[] = []
  for (let f = 0; f < cache.folioCount; f++) if (cache.states.get(f) !== ZERO) stored.push(f)
  // A sequential reader: every page of each folio faults while the folio is still queued.
  for (const f of stored) {
    for (let p = 0; p < cache.folioPages; p++) fills.request(f * cache.folioPages + p, 1, FILL_FAULT)
  }
  t.same(
    stored.filter(f => cache.states.get(f) !== QUEUED),
    [],
    `all ${stored.length} stored folios are queued`,
  )
  t.ok(queue.room(FILL_FAULT) >= 0 && queue.room(FILL_FAULT) < queue.capacity, `the ring holds ${queue.capacity - queue.room(FILL_FAULT)} requests`)
})
