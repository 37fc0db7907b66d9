// Snapshots a running VM whose RAM is a shared file: stop it, save device state without RAM
// (RAM file + ~0.3 MB of state), and optionally a full stream with RAM for the eager resume.
import { rmSync, statSync } from 'node:fs'
import { VmError } from './errors.js'
import { ERROR_LINE, waitForBootChecksum, type GuestChecksum } from './guest.js'
import type { GuestImage } from './image.js'
import { migrateFromFile, migrateToFile, setMigrationCapabilities, type MigrationResult } from './migration.js'
import { QemuVm, type Accel, type QemuLaunchOptions } from './qemu.js'

export interface VmCheckpoint {
  /** Raw guest RAM image (the source's memory-backend-file). */
  ramFile: string
  ramBytes: number
  /** Device state only (x-ignore-shared): for the mmap and faultline resumes. */
  stateFile: string
  stateBytes: number
  /** Device state plus RAM, QEMU's ordinary stream: for the eager resume. */
  eagerStateFile?: string
  eagerStateBytes?: number
  stateMs: number
  eagerStateMs?: number
}

export interface CheckpointOptions {
  stateFile: string
  eagerStateFile?: string
  timeoutMs?: number
}

/** Stops the VM and writes its device state (x-ignore-shared: the RAM file holds RAM).
 * With `eagerStateFile`, also writes a full stream with RAM for the same instant: QEMU
 * refuses a second `migrate` from a VM paused by the first ("Can't migrate the vm that was
 * paused due to previous migration"), so a helper QEMU loads the checkpoint the mmap way
 * and migrates again without x-ignore-shared. The source stays paused and should be quit. */
export async function checkpointVm(vm: QemuVm, options: CheckpointOptions): Promise<VmCheckpoint> {
  const ram = vm.options.ram
  if (ram.kind !== 'file' || !ram.share) {
    throw new VmError(
      `${vm.name}: a checkpoint needs RAM in a shared memory-backend-file (share=on), not ${ram.kind === 'file' ? 'share=off' : 'anonymous memory'}`,
    )
  }
  const timeoutMs = options.timeoutMs ?? 120_000
  await vm.qmp.execute('stop')
  await setMigrationCapabilities(vm, { ignoreShared: true })
  const state = await migrateToFile(vm, options.stateFile, timeoutMs)
  const eager = options.eagerStateFile ? await writeEagerStream(vm.options, ram.path, options.stateFile, options.eagerStateFile, timeoutMs) : undefined
  return {
    ramFile: ram.path,
    ramBytes: statSync(ram.path).size,
    stateFile: options.stateFile,
    stateBytes: state.sizeBytes,
    stateMs: state.durationMs,
    eagerStateFile: options.eagerStateFile,
    eagerStateBytes: eager?.sizeBytes,
    eagerStateMs: eager?.durationMs,
  }
}

/** Re-emits a checkpoint as QEMU's ordinary stream (device state and every RAM page) by
 * loading it into a paused helper VM (private mapping of the RAM file) and migrating that. */
export async function writeEagerStream(
  source: QemuLaunchOptions,
  ramFile: string,
  stateFile: string,
  eagerStateFile: string,
  timeoutMs: number,
): Promise<MigrationResult> {
  const helper = await QemuVm.launch({
    ...source,
    name: 'eager-stream-writer',
    ram: { kind: 'file', path: ramFile, share: false },
    env: undefined,
    incoming: true,
  })
  try {
    await setMigrationCapabilities(helper, { ignoreShared: true })
    await migrateFromFile(helper, stateFile, timeoutMs)
    await setMigrationCapabilities(helper, { ignoreShared: false })
    return await migrateToFile(helper, eagerStateFile, timeoutMs)
  } finally {
    await helper.quit()
  }
}

export interface BootOptions {
  image: GuestImage
  ramMiB: number
  workloadMiB?: number
  /** Created (or overwritten) by QEMU: becomes the checkpoint's RAM image. */
  ramFile: string
  accel?: Accel
  timeoutMs?: number
}

/** Boots a source VM with RAM in a shared file and waits for the workload's first checksum. */
export async function bootSource(options: BootOptions): Promise<{ vm: QemuVm; checksum: GuestChecksum; bootMs: number }> {
  // A fresh inode: QEMU reuses an existing file, which some other process may still map.
  rmSync(options.ramFile, { force: true })
  const vm = await QemuVm.launch({
    name: 'source',
    image: options.image,
    ramMiB: options.ramMiB,
    workloadMiB: options.workloadMiB,
    ram: { kind: 'file', path: options.ramFile, share: true },
    accel: options.accel,
  })
  try {
    const timeoutMs = options.timeoutMs ?? 300_000
    const checksum = await Promise.race([
      waitForBootChecksum(vm.console, timeoutMs),
      vm.failOnExit('while the guest booted'),
      vm.console.waitForLine(ERROR_LINE, { timeoutMs, fromIndex: 0 }).then(m => Promise.reject(new VmError(`source: the workload failed: ${m.match[1]}`))),
    ])
    return { vm, checksum, bootMs: (checksum.atNs - vm.launchedAtNs) / 1e6 }
  } catch (err) {
    vm.kill()
    throw err
  }
}
