// The session's fault handling in this process, without a guest: a scratch mapping of our own
// registered with a uffd of our own, faults reported to the session as the rehearsal reports
// them (Session.rehearseFault), and the memory then compared with the raw image page by page.
// What a policy adds to a fault, what it installs before the guest runs, zero pages.
import { readFileSync } from 'node:fs'
import t from 'tap'
import { EagerPolicy } from '../../src/policy/eager.js'
import type { FaultPolicy } from '../../src/policy/policy.js'
import { ReadaheadPolicy } from '../../src/policy/readahead.js'
import { Session } from '../../src/server/session.js'
import { K_FAULTS, K_PAGES, K_ZERO_PAGES } from '../../src/server/session-meters.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import * as uffd from '../../src/uffd/index.js'
import { makeImage, scratchDir } from '../e2e/harness.js'

const PS = 4096
/** Pages installed, every cause (K_PAGES + cause: fault, prefetch, background). */
const installed = (c: Float64Array) => c[K_PAGES] + c[K_PAGES + 1] + c[K_PAGES + 2]

async function scratchSession(t: { teardown(fn: () => unknown): void }, policy: FaultPolicy, mib = 1) {
  const dir = scratchDir(t, 'fl-session-')
  const img = await makeImage(dir, mib, 5)
  const raw = readFileSync(img.raw)
  const source = SnapshotReader.open(img.snap)
  const fd = uffd.Userfaultfd.create()
  const scratch = uffd.mapAnonymous(source.pageCount * PS)
  fd.api(0)
  fd.register(scratch.address, scratch.length)
  t.teardown(() => {
    uffd.unmap(scratch)
    fd.close()
    source.close()
  })
  const logs: string[] = []
  const session = new Session({
    uffd: fd,
    connectionFd: -1,
    stopFd: -1,
    source,
    policy,
    regions: [{ start: scratch.address, lengthBytes: scratch.length, snapshotOffset: 0, pageSize: PS }],
    canPoison: false,
    log: line => logs.push(line),
  })
  /** Pages [first, first+count) of the scratch memory that differ from the raw image, or are
   * not installed: those are not read (a read would wait for a fault nobody serves). */
  const mismatches = (first: number, count: number) => {
    const bad: Array<number | string> = []
    for (let p = first; p < first + count; p++) {
      if (!session.isResident(p)) {
        bad.push(`${p} absent`)
        continue
      }
      if (scratch.bytes.compare(raw, p * PS, (p + 1) * PS, p * PS, (p + 1) * PS) !== 0) bad.push(p)
    }
    return bad
  }
  const zeroInRaw = (first: number, count: number) => {
    let n = 0
    for (let p = first; p < first + count; p++) if (raw.subarray(p * PS, (p + 1) * PS).every(b => b === 0)) n++
    return n
  }
  return { session, scratch, source, mismatches, zeroInRaw, logs }
}

t.test("a fault installs its page and the policy's readahead, with the snapshot's bytes", async t => {
  const { session, scratch, mismatches, zeroInRaw } = await scratchSession(t, new ReadaheadPolicy(15))
  const c = session.meters.counters
  session.rehearseFault(scratch.address + 32 * PS + 123)
  t.equal(c[K_FAULTS], 1)
  t.equal(c[K_PAGES], 1, 'the faulting page, as a fault')
  t.equal(c[K_PAGES + 1], 15, 'the 15 after it, as prefetch')
  t.equal(c[K_ZERO_PAGES], zeroInRaw(32, 16), 'zero pages counted as zero pages (UFFDIO_ZEROPAGE)')
  for (let p = 32; p < 48; p++) t.ok(session.isResident(p), `page ${p} resident`)
  t.notOk(session.isResident(31))
  t.notOk(session.isResident(48))
  t.same(mismatches(32, 16), [], 'the 16 pages equal the raw image')

  // A fault on a page already there (another thread's, in a guest) is only woken: it is not
  // counted as a fault and the policy adds nothing.
  session.rehearseFault(scratch.address + 40 * PS)
  t.equal(c[K_FAULTS], 1, 'a fault on a resident page is not a new fault')
  t.equal(installed(c), 16)
  // The next page past the window faults and brings its own window.
  session.rehearseFault(scratch.address + 48 * PS)
  t.equal(c[K_FAULTS], 2)
  t.equal(installed(c), 32, 'pages 48..63')
  t.notOk(session.isResident(64))
  t.same(mismatches(48, 16), [])
})

t.test("readahead is clipped at the end of the guest's memory", async t => {
  const { session, scratch, source, mismatches } = await scratchSession(t, new ReadaheadPolicy(15))
  const last = source.pageCount - 1
  session.rehearseFault(scratch.address + last * PS)
  t.equal(installed(session.meters.counters), 1, 'only the last page: nothing exists past it')
  t.same(mismatches(last, 1), [])
})

t.test('eager installs every page before the guest runs', async t => {
  const { session, source, mismatches, zeroInRaw } = await scratchSession(t, new EagerPolicy())
  session.start()
  const c = session.meters.counters
  t.equal(installed(c), source.pageCount, 'every page installed by start()')
  t.equal(c[K_FAULTS], 0)
  t.equal(c[K_ZERO_PAGES], zeroInRaw(0, source.pageCount))
  t.same(mismatches(0, source.pageCount), [], 'all of memory equals the raw image')
})
