// Real QEMU, end to end: the test guest boots (TCG), fills memory and prints its checksum; it
// is checkpointed over QMP and resumed through faultline (the LD_PRELOAD shim hands QEMU's RAM
// to an in-process page server), through mmap and eagerly, and must print the same checksum.
// A VM faultline did not start is snapshotted over its own QMP socket and resumed from its
// own command line. A corrupted RAM image and a snapshot of the wrong size must fail.
// vm.test.ts runs this when QEMU and a guest kernel are installed.
import t from 'tap'
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createSnapshot } from '../../src/snapshot/writer.js'
import { decodeLearnedSet } from '../../src/trace/learned-set.js'
import { readTrace } from '../../src/trace/reader.js'
import { GuestConsole } from '../../src/vm/console.js'
import { resumeExternalVm, snapshotExternalVm } from '../../src/vm/external.js'
import { ping, requestChecksum } from '../../src/vm/guest.js'
import { DEFAULT_IMAGE_DIR, ensureGuestImage } from '../../src/vm/image.js'
import { migrateFromFile, setMigrationCapabilities } from '../../src/vm/migration.js'
import { buildQemuArgs, QemuVm } from '../../src/vm/qemu.js'
import { resumeVmDir } from '../../src/vm/resume-dir.js'
import { formatReport } from '../../src/cli/vm.js'
import { snapshotTestGuest } from '../../src/vm/snapshot-guest.js'
import { makeImage, scratchDir } from './harness.js'

// Small on purpose: boot time under TCG does not depend on it, the snapshot and the resumes do.
const RAM_MIB = 128
const WORKLOAD_MIB = 32
const PAGE = 4096

const work = scratchDir(t, 'fl-vm-')
const image = await ensureGuestImage(DEFAULT_IMAGE_DIR, line => t.comment(line))
const vm = await snapshotTestGuest({ dir: join(work, 'vm'), image, ramMiB: RAM_MIB, workloadMiB: WORKLOAD_MIB, eager: false, keepRaw: true })
const expected = vm.guest.checksum.hex

t.test('the snapshot holds the guest as it was', async t => {
  t.equal(vm.guest.checksum.pages, (WORKLOAD_MIB << 20) / PAGE, 'the workload checksummed all its pages')
  t.equal(readFileSync(vm.path('ram')).length, RAM_MIB << 20, 'raw RAM is the guest RAM size')
  t.ok(vm.guest.stateBytes > 0 && vm.guest.stateBytes < 4 << 20, `device state without RAM is small (${vm.guest.stateBytes} bytes)`)
  t.equal(vm.has('eagerState'), false)
})

for (const map of ['anonymous', 'cache'] as const) {
  t.test(`faultline (readahead:15, ${map} RAM) resumes it with its memory intact`, async t => {
    const trace = join(work, `resume-${map}.trace`)
    // The shim asks for the decoded cache unless FAULTLINE_MAP says otherwise; QEMU inherits it.
    const before = process.env.FAULTLINE_MAP
    process.env.FAULTLINE_MAP = map
    let r
    try {
      r = await resumeVmDir(vm, { mode: 'faultline', policy: 'readahead:15', tracePath: trace, recheck: true })
    } finally {
      if (before === undefined) delete process.env.FAULTLINE_MAP
      else process.env.FAULTLINE_MAP = before
    }
    t.equal(r.checksum, expected, 'first checksum after resume')
    t.equal(r.recheckHex, expected, 'second checksum')
    t.equal(r.match, true)
    t.equal(r.serverError, undefined)
    const s = r.session!
    t.equal(s.map, map, `QEMU's RAM was ${map}`)
    const installed = s.pagesInstalled[0] + s.pagesInstalled[1] + s.pagesInstalled[2]
    if (map === 'anonymous') {
      // QEMU's RAM started empty: every page the workload read came from the page server.
      t.ok(installed >= vm.guest.checksum.pages, `server installed ${installed} pages, the workload read ${vm.guest.checksum.pages}`)
      t.ok(s.faults > 0 && s.pagesInstalled[1] > 0, `faults ${s.faults}, prefetched ${s.pagesInstalled[1]}`)
    } else {
      // The cache started empty: what QEMU read came through faults that filled its folios.
      t.ok(
        s.faults > 0 && s.cache.foliosRequested > 0,
        `faults ${s.faults}, folios asked for ${s.cache.foliosRequested}, pages served privately ${s.cache.privatePages}`,
      )
    }
    const tr = readTrace(trace)
    let traced = 0
    for (let i = 0; i < tr.length; i++) traced += tr.count[i]
    t.equal(traced, installed, 'the trace records every page installed')
    t.ok(r.timings.firstReplyMs <= r.timings.checksumMs && r.timings.stateLoadedMs <= r.timings.runningMs)
  })
}

t.test("faultline maps its decoded cache over QEMU's RAM; with --learn a second resume prefetches what the first used", async t => {
  const learn = join(work, 'learn')
  mkdirSync(learn)
  const first = await resumeVmDir(vm, { mode: 'faultline', learnDir: learn })
  t.equal(first.match, true, 'first resume: checksum intact')
  t.equal(first.session!.map, 'cache', "the shim mapped the server's decoded cache over QEMU's RAM (the default)")
  t.equal(first.policy, 'ondemand', 'nothing learned yet: ondemand')
  t.equal(first.learnedSet, undefined)
  t.match(formatReport(vm, first), /guest RAM: the server's decoded cache mapped over it by the shim/, 'and vm resume says so')
  const second = await resumeVmDir(vm, { mode: 'faultline', learnDir: learn })
  t.equal(second.match, true, 'second resume: checksum intact')
  t.match(second.policy, /^learned:/, `the second resume prefetched the learned set (${second.policy})`)
  t.match(formatReport(vm, second), /--learn: prefetched the set learned for this snapshot/)
  const f1 = first.session!.faults,
    f2 = second.session!.faults
  t.comment(
    `faults: ${f1} first, ${f2} with the learned set; workload ${first.timings.workloadMs.toFixed(0)} ms, then ${second.timings.workloadMs.toFixed(0)} ms`,
  )
  // The learned set goes to the fill workers as prefetch requests that race QEMU: how many of
  // its touches still fault depends on how fast folios fill (fresh huge pages are slow on this
  // VM), so what is checked is that every folio of the set was asked for; the faults are reported.
  const set = decodeLearnedSet(readFileSync(second.learnedSet!), second.learnedSet!)
  const pagesPerFolio = 512 // 2 MiB folios; with 4 KiB ones each page is a folio, more requests
  const folios = new Set(set.sessions[0].pages.map(p => Math.floor(p / pagesPerFolio))).size
  t.ok(second.session!.cache.foliosRequested >= folios, `the ${folios} folios of the learned set were asked for (${second.session!.cache.foliosRequested})`)
})

t.test('mmap (the seed) resumes it with its memory intact', async t => {
  const r = await resumeVmDir(vm, { mode: 'mmap' })
  t.equal(r.checksum, expected)
  t.equal(r.match, true)
  t.equal(r.session, undefined)
})

t.test("eager resumes it, writing QEMU's stream with RAM first", async t => {
  const r = await resumeVmDir(vm, { mode: 'eager' })
  t.equal(r.checksum, expected)
  t.ok(vm.has('eagerState') && vm.guest.eagerStateBytes! > vm.guest.stateBytes, 'the stream with RAM was written and recorded')
})

t.test('a VM of your own: snapshot over its QMP socket, resume from your command line', async t => {
  // "Your" VM: the test guest restored with its RAM in a shared file (what --qmp needs) and a
  // second QMP socket standing for yours, running. No second boot needed.
  const ext = join(work, 'ext')
  mkdirSync(ext)
  copyFileSync(vm.path('ram'), join(ext, 'ram.img'))
  const userQmp = join(ext, 'user-qmp.sock')
  const base = { name: 'user-vm', image: vm.image, ramMiB: RAM_MIB, workloadMiB: WORKLOAD_MIB }
  const src = await QemuVm.launch({
    ...base,
    ram: { kind: 'file', path: join(ext, 'ram.img'), share: true },
    incoming: true,
    extraArgs: ['-qmp', `unix:${userQmp},server=on,wait=off`],
  })
  t.teardown(() => src.kill())
  await setMigrationCapabilities(src, { ignoreShared: true })
  await migrateFromFile(src, vm.path('state'), 60_000)
  await src.qmp.execute('cont')
  await ping(src.console, 60_000)
  const dir = await snapshotExternalVm({ qmpPath: userQmp, dir: join(ext, 'vm') })
  await src.quit()
  t.equal(dir.meta.kind, 'external')
  t.equal(dir.meta.ramMiB, RAM_MIB, 'RAM size read from the backend over QMP')
  t.throws(() => dir.guest, /holds a VM snapshotted over QMP/)

  // Its command line with anonymous RAM of the same id; faultline adds -incoming and the shim.
  const command = ['qemu-system-x86_64', ...buildQemuArgs({ ...base, ram: { kind: 'ram' } }, join(ext, 'unused-qmp.sock'))]
  const r = await resumeExternalVm(dir, { command, policy: 'readahead:15', stdio: 'pipe' })
  r.child.stderr!.resume()
  const guest = new GuestConsole('user-vm', r.child.stdout!, r.child.stdin!)
  const c = await requestChecksum(guest, 120_000)
  t.equal(c.hex, expected, 'the resumed guest prints the checksum of the original boot')
  guest.send('quit\n') // the workload exits and the guest powers off
  const end = await r.finished
  t.equal(end.code, 0, 'QEMU exited when the guest powered off')
  const s = end.session!
  if (s.map === 'cache')
    t.ok(s.faults > 0 && s.cache.foliosRequested > 0, `its RAM came from the page server's decoded cache (${s.cache.foliosRequested} folios asked for)`)
  else t.ok(s.pagesInstalled[0] + s.pagesInstalled[1] >= vm.guest.checksum.pages, 'its RAM came from the page server')
})

t.test('a corrupted RAM image gives another checksum (the check can fail)', async t => {
  // Corrupt the workload's text pages only (pages of words and spaces: nothing else in the
  // guest looks like that), so the kernel stays intact and the guest must answer.
  const raw = readFileSync(vm.path('ram'))
  let corrupted = 0
  for (let off = 0; off < raw.length; off += PAGE) {
    let text = 0
    for (let i = off; i < off + PAGE; i++) {
      const b = raw[i]
      if ((b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || b === 0x20 || b === 0x0a) text++
    }
    if (text < PAGE - 16) continue
    for (let i = off + PAGE / 2; i < off + PAGE; i++) {
      if (raw[i] >= 0x61 && raw[i] <= 0x7a) {
        raw[i] -= 0x20
        corrupted++
        break
      }
    }
  }
  t.ok(corrupted > vm.guest.checksum.pages / 4, `corrupted ${corrupted} text pages`)
  const bad = join(work, 'bad.raw')
  writeFileSync(bad, raw)
  await createSnapshot(bad, join(work, 'bad.snap'))
  const r = await resumeVmDir(vm, { mode: 'faultline', snapshotPath: join(work, 'bad.snap') })
  t.equal(r.match, false)
  t.not(r.checksum, expected, `guest printed ${r.checksum}, recorded ${expected}`)
})

t.test('a snapshot smaller than guest RAM is refused and QEMU stops', async t => {
  const small = await makeImage(work, 16, 3, 'small')
  await t.rejects(
    resumeVmDir(vm, { mode: 'faultline', snapshotPath: small.snap, timeoutMs: 60_000 }),
    /server refused: region 0: offset 0 \+ size 134217728 is past the snapshot's end/,
  )
})
