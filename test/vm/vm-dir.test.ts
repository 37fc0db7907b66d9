// vm.json: what a VM directory records, and the one-line errors for a damaged one.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseVmMetadata, VM_DIR_FORMAT, VM_FILES, VmDir, writeVmMetadata, type VmMetadata } from '../../src/vm/vm-dir.js'

const good: VmMetadata = {
  format: VM_DIR_FORMAT,
  createdAt: '2026-01-01T00:00:00.000Z',
  ramMiB: 256,
  workloadMiB: 160,
  checksum: { hex: '0123456789abcdef', pages: 40960 },
  cmdline: 'console=ttyS0',
  qemuVersion: 'QEMU emulator version 7.2.22',
  accel: 'tcg',
  stateBytes: 319750,
  snapshotBytes: 117518737,
  bootMs: 20000,
  checkpointMs: 3000,
}
const text = (changes: Record<string, unknown>) => JSON.stringify({ ...good, ...changes })

t.test('a valid vm.json round-trips', async t => {
  t.same(parseVmMetadata(JSON.stringify(good), 'vm.json'), good)
  t.equal(parseVmMetadata(text({ eagerStateBytes: 191159464 }), 'vm.json').eagerStateBytes, 191159464)
})

t.test('each damaged field is named', async t => {
  t.throws(() => parseVmMetadata('{', 'd/vm.json'), /^d\/vm.json: not valid JSON/)
  t.throws(() => parseVmMetadata('[]', 'vm.json'), /expected a JSON object/)
  t.throws(() => parseVmMetadata(text({ format: 'faultline-vm/2' }), 'vm.json'), /format is "faultline-vm\/2", expected "faultline-vm\/1"/)
  t.throws(() => parseVmMetadata(text({ ramMiB: 0 }), 'vm.json'), /ramMiB must be a positive integer, got 0/)
  t.throws(() => parseVmMetadata(text({ workloadMiB: 256 }), 'vm.json'), /workloadMiB 256 must be below ramMiB 256/)
  t.throws(() => parseVmMetadata(text({ checksum: { hex: 'xyz', pages: 1 } }), 'vm.json'), /checksum must be/)
  t.throws(() => parseVmMetadata(text({ accel: 'hvf' }), 'vm.json'), /accel must be "tcg" or "kvm", got "hvf"/)
  t.throws(() => parseVmMetadata(text({ cmdline: '' }), 'vm.json'), /cmdline must be a non-empty string/)
  t.throws(() => parseVmMetadata(text({ eagerStateBytes: -1 }), 'vm.json'), /eagerStateBytes must be a positive number/)
})

t.test('VmDir.open wants vm.json and the files every resume needs', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'fl-vmdir-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  t.throws(() => VmDir.open(dir), /not a VM directory \(no vm.json\): create one with faultline vm snapshot/)
  writeVmMetadata(dir, good)
  t.throws(() => VmDir.open(dir), new RegExp(`${VM_FILES.state}: missing from the VM directory`))
  for (const f of [VM_FILES.state, VM_FILES.snapshot, VM_FILES.kernel, VM_FILES.initrd]) writeFileSync(join(dir, f), 'x')
  const vm = VmDir.open(dir)
  t.equal(vm.ramBytes, 256 << 20)
  t.same(vm.image, { kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.cpio'), cmdline: 'console=ttyS0' })
  t.equal(vm.has('ram'), false)
  t.same(vm.files.sort(), [VM_FILES.state, VM_FILES.snapshot, VM_FILES.kernel, VM_FILES.initrd].map(f => join(dir, f)).sort())
  vm.update({ eagerStateBytes: 1234 })
  t.equal(VmDir.open(dir).guest.eagerStateBytes, 1234, 'update is written to vm.json')
})
