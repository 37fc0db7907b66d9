// Boots the test guest, waits for its memory checksum and checkpoints it into a VM directory:
// device state over QMP, RAM compressed into a faultline snapshot, optionally QEMU's eager
// stream, and vm.json with the checksum a resumed guest must print again.
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { createSnapshot } from '../snapshot/writer.js'
import { bootSource, checkpointVm } from './checkpoint.js'
import { VmError } from './errors.js'
import { requestChecksum } from './guest.js'
import type { GuestImage } from './image.js'
import { defaultWorkloadMiB, type Accel } from './qemu.js'
import { VM_DIR_FORMAT, VM_FILES, VmDir, writeVmMetadata, type VmMetadata } from './vm-dir.js'

export interface SnapshotGuestOptions {
  dir: string
  image: GuestImage
  ramMiB: number
  /** Memory the workload fills; default 5/8 of the RAM. */
  workloadMiB?: number
  /** Also write QEMU's stream with RAM (the eager resume): one more QEMU run. */
  eager: boolean
  /** Keep the raw RAM file (the mmap resume maps it; else extracted from mem.snap on use). */
  keepRaw: boolean
  accel?: Accel
  timeoutMs?: number
  log?: (line: string) => void
  /** Snapshot compression progress, raw bytes done of total. */
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

/** The smallest guest the test image runs in: the Debian kernel and its initramfs need
 * about 80 MiB besides the workload. */
export const MIN_RAM_MIB = 96

export async function snapshotTestGuest(o: SnapshotGuestOptions): Promise<VmDir> {
  const log = o.log ?? (() => {})
  const workloadMiB = o.workloadMiB ?? defaultWorkloadMiB(o.ramMiB)
  if (!Number.isInteger(o.ramMiB) || o.ramMiB < MIN_RAM_MIB)
    throw new VmError(`--ram: ${o.ramMiB} MiB is too small for the test guest (at least ${MIN_RAM_MIB} MiB)`)
  if (!Number.isInteger(workloadMiB) || workloadMiB < 1 || workloadMiB > o.ramMiB - 64) {
    throw new VmError(`--workload-mib: ${workloadMiB} must be from 1 to ${o.ramMiB - 64} (the guest kernel needs the rest of ${o.ramMiB} MiB)`)
  }
  mkdirSync(o.dir, { recursive: true })
  // A directory is valid only once vm.json is written, last: remove the old one first.
  rmSync(join(o.dir, VM_FILES.meta), { force: true })
  for (const f of [VM_FILES.ram, VM_FILES.eagerState, VM_FILES.snapshot, VM_FILES.state]) rmSync(join(o.dir, f), { force: true })
  const path = (f: keyof typeof VM_FILES): string => join(o.dir, VM_FILES[f])
  const qemuVersion = readQemuVersion()

  log(`booting a ${o.ramMiB} MiB guest (${o.accel ?? 'tcg'}), its workload filling ${workloadMiB} MiB`)
  const src = await bootSource({ image: o.image, ramMiB: o.ramMiB, workloadMiB, ramFile: path('ram'), accel: o.accel, timeoutMs: o.timeoutMs })
  let checkpointStart: number
  try {
    log(`guest checksum ${src.checksum.hex} over ${src.checksum.pages} pages, ${(src.bootMs / 1000).toFixed(1)} s after launch`)
    // A checksum that changes by itself would make every later comparison meaningless.
    const again = await Promise.race([requestChecksum(src.vm.console, o.timeoutMs ?? 300_000), src.vm.failOnExit('while checksumming again')])
    if (again.hex !== src.checksum.hex) throw new VmError(`source: the guest's checksum changed on its own (${src.checksum.hex}, then ${again.hex})`)
    checkpointStart = performance.now()
    log(o.eager ? "saving device state, then QEMU's stream with RAM (eager)" : 'saving device state')
    const cp = await checkpointVm(src.vm, { stateFile: path('state'), eagerStateFile: o.eager ? path('eagerState') : undefined, timeoutMs: o.timeoutMs })
    await src.vm.quit()
    log(`compressing ${o.ramMiB} MiB of RAM into ${path('snapshot')}`)
    const snap = await createSnapshot(path('ram'), path('snapshot'), { onProgress: o.onProgress })
    copyFileSync(o.image.kernel, path('kernel'))
    copyFileSync(o.image.initrd, path('initrd'))
    if (!o.keepRaw) rmSync(path('ram'))
    const meta: VmMetadata = {
      format: VM_DIR_FORMAT,
      createdAt: new Date().toISOString(),
      ramMiB: o.ramMiB,
      workloadMiB,
      checksum: { hex: src.checksum.hex, pages: src.checksum.pages },
      cmdline: o.image.cmdline,
      qemuVersion,
      accel: o.accel ?? 'tcg',
      stateBytes: cp.stateBytes,
      snapshotBytes: snap.fileSizeBytes,
      eagerStateBytes: cp.eagerStateBytes,
      bootMs: Math.round(src.bootMs),
      checkpointMs: Math.round(performance.now() - checkpointStart),
    }
    writeVmMetadata(o.dir, meta)
  } finally {
    src.vm.kill()
  }
  return VmDir.open(o.dir)
}

/** `qemu-system-x86_64 --version`'s first line. */
export function readQemuVersion(binary = 'qemu-system-x86_64'): string {
  try {
    return execFileSync(binary, ['--version'], { encoding: 'utf8' }).split('\n')[0].trim()
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new VmError(
      code === 'ENOENT' ? `${binary}: not found: apt-get install qemu-system-x86` : `${binary} --version: ${(err as Error).message.split('\n')[0]}`,
    )
  }
}
