// Real QEMU through the LD_PRELOAD shim, cache-mapped: the test guest is checkpointed, then
// resumed with its RAM served by uffd-floor --snapshot --map cache (the shim asks for the cache
// by default and maps it over QEMU's RAM); the guest must print the checksum it printed before.
import t from 'tap'
import { join } from 'node:path'
import { DEFAULT_IMAGE_DIR, ensureGuestImage } from '../../src/vm/image.js'
import { resumeVm } from '../../src/vm/resume.js'
import { DEFAULT_SHIM } from '../../src/vm/resume-dir.js'
import { snapshotTestGuest } from '../../src/vm/snapshot-guest.js'
import { scratchDir } from '../e2e/harness.js'
import { Floor } from './floor.js'

const RAM_MIB = 128
const WORKLOAD_MIB = 32

t.test('QEMU resumes with the decoded cache mapped over its RAM, its memory intact', async t => {
  const work = scratchDir(t, 'fl-qemu-cache-')
  const image = await ensureGuestImage(DEFAULT_IMAGE_DIR, line => t.comment(line))
  const vm = await snapshotTestGuest({ dir: join(work, 'vm'), image, ramMiB: RAM_MIB, workloadMiB: WORKLOAD_MIB, eager: false, keepRaw: false })
  const socketPath = join(work, 'floor.sock')
  const floor = await Floor.start(t, ['--socket', socketPath, '--snapshot', vm.path('snapshot'), '--map', 'cache', '--once'])
  const r = await resumeVm({
    mode: 'faultline',
    name: 'resume-cache',
    image: vm.image,
    ramMiB: RAM_MIB,
    workloadMiB: WORKLOAD_MIB,
    ramFile: vm.path('ram'),
    stateFile: vm.path('state'),
    faultline: { socketPath, shimPath: DEFAULT_SHIM },
    accel: vm.guest.accel,
  })
  try {
    t.equal(r.checksum.hex, vm.guest.checksum.hex, "the guest's checksum after resume is the one it printed before")
  } finally {
    await r.vm.quit()
  }
  const { stats, stderr } = await floor.exited
  t.equal(stats?.cache_guests, 1, `QEMU got the cache (${stderr.trim().split('\n').pop()})`)
  t.ok(stats?.folio_fills > 0, `${stats?.folio_fills} folios filled, ${stats?.faults} faults`)
  t.equal(stats?.pages_poisoned, 0)
})
