// A warm worker's rehearsal serves real pages of the snapshot into memory of its own through
// a uffd of its own, and leaves nothing behind (mapping, descriptors).
import { readdirSync, readFileSync } from 'node:fs'
import t from 'tap'
import { REHEARSAL_FAULTS, rehearseFaultPath } from '../../src/server/rehearsal.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { makeImage, scratchDir } from '../e2e/harness.js'

t.test("rehearsal installs the snapshot's bytes, then unmaps and closes everything", async t => {
  const dir = scratchDir(t, 'fl-rehearsal-')
  const img = await makeImage(dir, 8, 7)
  const raw = readFileSync(img.raw)
  const reader = SnapshotReader.open(img.snap)
  t.teardown(() => reader.close())
  const fds = readdirSync('/proc/self/fd').length
  const rounds: number[] = []
  const r = rehearseFaultPath(reader, (scratch, pages) => {
    let bad = 0
    for (let p = 0; p < pages; p++) {
      if (scratch.compare(raw, p * 4096, (p + 1) * 4096, p * 4096, (p + 1) * 4096) !== 0) bad++
    }
    rounds.push(bad)
  })
  t.equal(r.faults, REHEARSAL_FAULTS)
  t.equal(r.pages, 512)
  t.equal(rounds.length, REHEARSAL_FAULTS / 512, 'every round installed all of its pages')
  t.same(
    rounds,
    rounds.map(() => 0),
    "each round's memory equals the raw image, page for page",
  )
  t.equal(readdirSync('/proc/self/fd').length, fds, 'the rehearsal uffd is closed')
  const covering = readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter(line => {
      const [from, to] = line
        .split(' ')[0]
        .split('-')
        .map(h => parseInt(h, 16))
      return from <= r.scratchAddress && r.scratchAddress < to
    })
  t.same(covering, [], 'the scratch mapping is gone')
})

t.test('a snapshot smaller than the rehearsal window is rehearsed on what it has', async t => {
  const dir = scratchDir(t, 'fl-rehearsal-')
  const img = await makeImage(dir, 1, 3) // 256 pages
  const reader = SnapshotReader.open(img.snap)
  t.teardown(() => reader.close())
  const r = rehearseFaultPath(reader)
  t.equal(r.pages, 256)
  t.equal(r.faults, REHEARSAL_FAULTS)
})
