// GuestMemory follows the guest's remove/unmap/remap events: checked against a page-by-page
// model over random event sequences (every snapshot page lives at most at one address, with
// the right state, and lookups by address and by page agree), plus the forked-child clone.
import t from 'tap'
import { ABSENT, DISCARDED, GuestMemory, PRESENT } from '../../src/server/guest-memory.js'

const PS = 4096
const BASE = 0x7f0000000000

/** The model: snapshot page -> [guest address, state], for the pages still mapped. */
type Model = Map<number, [number, number]>

function modelOf(regions: Array<{ start: number; pages: number; firstPage: number }>): Model {
  const m: Model = new Map()
  for (const r of regions) for (let i = 0; i < r.pages; i++) m.set(r.firstPage + i, [r.start + i * PS, ABSENT])
  return m
}

function check(t: { fail(message: string): boolean }, mem: GuestMemory, model: Model, step: string): boolean {
  const seen = new Set<number>()
  for (const r of mem.regions) {
    for (let i = 0; i < r.pages; i++) {
      const page = r.firstPage + i
      const want = model.get(page)
      if (!want) return t.fail(`${step}: page ${page} mapped at 0x${(r.start + i * PS).toString(16)} but unmapped in the model`)
      if (want[0] !== r.start + i * PS) return t.fail(`${step}: page ${page} at 0x${(r.start + i * PS).toString(16)}, model 0x${want[0].toString(16)}`)
      if (want[1] !== r.state[i]) return t.fail(`${step}: page ${page} state ${r.state[i]}, model ${want[1]}`)
      if (seen.has(page)) return t.fail(`${step}: page ${page} backed twice`)
      seen.add(page)
      if (mem.regionAt(r.start + i * PS) !== r) return t.fail(`${step}: regionAt disagrees for page ${page}`)
      if (mem.regionOfPage(page) !== r) return t.fail(`${step}: regionOfPage disagrees for page ${page}`)
    }
  }
  if (seen.size !== model.size) return t.fail(`${step}: ${seen.size} pages mapped, model has ${model.size}`)
  for (let i = 1; i < mem.regions.length; i++) {
    if (mem.regions[i - 1].end > mem.regions[i].start) return t.fail(`${step}: regions overlap or are out of order`)
  }
  return true
}

t.test('random remove/unmap/remap sequences match the page model', async t => {
  let seed = 7
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
  const int = (n: number) => Math.floor(random() * n)
  let steps = 0
  for (let round = 0; round < 200; round++) {
    const initial = [
      { start: BASE, pages: 64, firstPage: 0 },
      { start: BASE + 0x100000, pages: 32, firstPage: 100 },
    ]
    const mem = new GuestMemory(
      initial.map(r => ({ start: r.start, lengthBytes: r.pages * PS, snapshotOffset: r.firstPage * PS, pageSize: PS })),
      PS,
    )
    const model = modelOf(initial)
    for (let step = 0; step < 12; step++) {
      steps++
      // Ranges anywhere around the regions, often straddling an edge or a hole.
      const start = BASE + int(0x140) * PS
      const len = (1 + int(48)) * PS
      const op = int(4)
      if (op === 0) {
        const marked = mem.markRange(start, start + len, DISCARDED)
        let want = 0
        for (const v of model.values())
          if (v[0] >= start && v[0] < start + len) {
            v[1] = DISCARDED
            want++
          }
        if (marked !== want) t.fail(`discard marked ${marked}, model ${want}`)
      } else if (op === 1) {
        // Installing: what a session does to a page it served.
        const r = mem.regionAt(start)
        if (r) {
          const i = (start - r.start) / PS
          r.state[i] = PRESENT
          for (const v of model.values()) if (v[0] === start) v[1] = PRESENT
        }
      } else if (op === 2) {
        const cut = mem.unmap(start, start + len)
        let want = 0
        for (const [p, v] of model)
          if (v[0] >= start && v[0] < start + len) {
            model.delete(p)
            want++
          }
        if (cut !== want) t.fail(`unmap cut ${cut}, model ${want}`)
      } else {
        const to = BASE + 0x200000 + int(0x100) * PS
        mem.remap(start, to, len)
        for (const [p, v] of model) if (v[0] >= to && v[0] < to + len && !(v[0] >= start && v[0] < start + len)) model.delete(p)
        for (const v of model.values()) if (v[0] >= start && v[0] < start + len) v[0] += to - start
      }
      if (!check(t, mem, model, `round ${round} step ${step} (op ${op})`)) return
    }
  }
  t.pass(`${steps} events over 200 random sequences matched the model`)
})

t.test('a clone is a deep copy: the child and the parent change apart', async t => {
  const mem = new GuestMemory([{ start: BASE, lengthBytes: 16 * PS, snapshotOffset: 0, pageSize: PS }], PS)
  mem.regions[0].state[3] = PRESENT
  mem.markRange(BASE + 8 * PS, BASE + 10 * PS, DISCARDED)
  const child = mem.clone()
  t.same(child.countStates(), [13, 1, 2, 0, 0])
  child.remap(BASE, BASE + 0x100000, 4 * PS)
  child.regions[0].state[0] = PRESENT
  t.equal(mem.regions.length, 1, 'the parent still has its one region')
  t.equal(mem.regionAt(BASE)?.state[0], ABSENT, "the parent's states are its own")
  t.equal(child.regionAt(BASE + 0x100000 + 3 * PS)?.state[3], PRESENT, "the child's moved page kept its state")
  t.equal(child.regionAt(BASE), undefined, 'and left its old address')
  t.same(mem.countStates(), [13, 1, 2, 0, 0])
})

t.test('huge-page regions keep their guest page size through a split', async t => {
  const huge = 512 // 2 MiB guest pages over 4 KiB snapshot pages
  const mem = new GuestMemory([{ start: 0x7f0000000000, lengthBytes: 4 * 2 ** 21, snapshotOffset: 0, pageSize: 2 ** 21 }], PS)
  mem.unmap(0x7f0000000000 + 2 ** 21, 0x7f0000000000 + 2 * 2 ** 21)
  t.equal(mem.regions.length, 2)
  for (const r of mem.regions) t.equal(r.pagesPerGuestPage, huge)
  t.same(mem.ranges(), [
    { firstPage: 0, pageCount: huge },
    { firstPage: 2 * huge, pageCount: 2 * huge },
  ])
})
