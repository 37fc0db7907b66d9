// A VM directory: one checkpointed guest as faultline keeps it. vm.json (what was saved and,
// for the test guest, the checksum it printed), the device state, guest RAM as a faultline
// snapshot, and optionally the raw RAM (mmap) and QEMU's own stream with RAM (eager).
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { VmError } from './errors.js'
import type { GuestImage } from './image.js'
import type { Accel } from './qemu.js'

export const VM_DIR_FORMAT = 'faultline-vm/1'

/** File names inside a VM directory. */
export const VM_FILES = {
  meta: 'vm.json',
  /** Guest RAM as a faultline snapshot: what `faultline serve` and the faultline resume use. */
  snapshot: 'mem.snap',
  /** Raw guest RAM (the source's memory-backend-file): the mmap resume maps it. Optional:
   * extracted from mem.snap when missing. */
  ram: 'ram.img',
  /** Device state without RAM (x-ignore-shared): the mmap and faultline resumes load it. */
  state: 'state.bin',
  /** QEMU's ordinary stream, device state and RAM: the eager resume. Optional. */
  eagerState: 'state-eager.bin',
  /** Copies of the guest's kernel and initramfs: the destination QEMU needs the same ones
   * (their ROM sizes are part of the machine), and a rebuilt image must not break old dirs. */
  kernel: 'vmlinuz',
  initrd: 'initrd.cpio',
} as const

/** vm.json of faultline's test guest (`faultline vm snapshot --ram`). */
export interface VmMetadata {
  format: typeof VM_DIR_FORMAT
  kind?: 'test-guest'
  createdAt: string
  ramMiB: number
  /** Memory the guest's workload filled (its fl.mib). */
  workloadMiB: number
  /** What the workload printed right before the checkpoint: a resumed guest must print it again. */
  checksum: { hex: string; pages: number }
  /** The kernel command line it booted with (without fl.mib). */
  cmdline: string
  /** `qemu-system-x86_64 --version`'s first line: a destination must be the same QEMU. */
  qemuVersion: string
  accel: Accel
  stateBytes: number
  snapshotBytes: number
  eagerStateBytes?: number
  /** Launch to the boot checksum, and the checkpoint itself (device state, eager stream,
   * snapshot compression), ms. */
  bootMs: number
  checkpointMs: number
}

/** vm.json of a VM faultline did not boot (`faultline vm snapshot --qmp`): no checksum, and
 * only its owner knows its command line. */
export interface ExternalVmMetadata {
  format: typeof VM_DIR_FORMAT
  kind: 'external'
  createdAt: string
  ramMiB: number
  /** Its memory backend's id: the destination's memory-backend-ram must use the same. */
  ramId: string
  sourceRamFile: string
  qemuVersion: string
  stateBytes: number
  snapshotBytes: number
  checkpointMs: number
}

export type AnyVmMetadata = VmMetadata | ExternalVmMetadata

/** Checks a parsed vm.json; `where` names the file in errors. Pure, for tests. */
export function parseVmMetadata(text: string, where: string): AnyVmMetadata {
  let raw: Record<string, unknown>
  try {
    raw = JSON.parse(text) as Record<string, unknown>
  } catch (err) {
    throw new VmError(`${where}: not valid JSON (${(err as Error).message})`)
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new VmError(`${where}: expected a JSON object`)
  if (raw.format !== VM_DIR_FORMAT) throw new VmError(`${where}: format is ${JSON.stringify(raw.format)}, expected "${VM_DIR_FORMAT}"`)
  const positive = (name: string): number => {
    const v = raw[name]
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new VmError(`${where}: ${name} must be a positive integer, got ${JSON.stringify(v)}`)
    return v
  }
  const text_ = (name: string): string => {
    const v = raw[name]
    if (typeof v !== 'string' || v === '') throw new VmError(`${where}: ${name} must be a non-empty string, got ${JSON.stringify(v)}`)
    return v
  }
  if (raw.kind === 'external') {
    const id = text_('ramId')
    return {
      format: VM_DIR_FORMAT,
      kind: 'external',
      createdAt: text_('createdAt'),
      ramMiB: positive('ramMiB'),
      ramId: id,
      sourceRamFile: text_('sourceRamFile'),
      qemuVersion: text_('qemuVersion'),
      stateBytes: positive('stateBytes'),
      snapshotBytes: positive('snapshotBytes'),
      checkpointMs: Number(raw.checkpointMs) || 0,
    }
  }
  if (raw.kind !== undefined && raw.kind !== 'test-guest')
    throw new VmError(`${where}: kind must be "test-guest" or "external", got ${JSON.stringify(raw.kind)}`)
  const cs = raw.checksum as { hex?: unknown; pages?: unknown } | undefined
  if (!cs || typeof cs.hex !== 'string' || !/^[0-9a-f]{16}$/.test(cs.hex) || typeof cs.pages !== 'number' || !Number.isInteger(cs.pages) || cs.pages <= 0) {
    throw new VmError(`${where}: checksum must be {"hex": 16 hex digits, "pages": N}, got ${JSON.stringify(raw.checksum)}`)
  }
  const ramMiB = positive('ramMiB')
  const workloadMiB = positive('workloadMiB')
  if (workloadMiB >= ramMiB) throw new VmError(`${where}: workloadMiB ${workloadMiB} must be below ramMiB ${ramMiB}`)
  if (raw.accel !== 'tcg' && raw.accel !== 'kvm') throw new VmError(`${where}: accel must be "tcg" or "kvm", got ${JSON.stringify(raw.accel)}`)
  const eager = raw.eagerStateBytes
  if (eager !== undefined && (typeof eager !== 'number' || eager <= 0))
    throw new VmError(`${where}: eagerStateBytes must be a positive number, got ${JSON.stringify(eager)}`)
  return {
    format: VM_DIR_FORMAT,
    createdAt: text_('createdAt'),
    ramMiB,
    workloadMiB,
    checksum: { hex: cs.hex, pages: cs.pages },
    cmdline: text_('cmdline'),
    qemuVersion: text_('qemuVersion'),
    accel: raw.accel,
    stateBytes: positive('stateBytes'),
    snapshotBytes: positive('snapshotBytes'),
    eagerStateBytes: eager as number | undefined,
    bootMs: Number(raw.bootMs) || 0,
    checkpointMs: Number(raw.checkpointMs) || 0,
  }
}

export class VmDir {
  readonly dir: string
  readonly meta: AnyVmMetadata

  private constructor(dir: string, meta: AnyVmMetadata) {
    this.dir = dir
    this.meta = meta
  }

  /** Opens a directory `faultline vm snapshot` wrote; its vm.json, device state and snapshot
   * must be there (the raw RAM and the eager stream are optional). */
  static open(dir: string): VmDir {
    const abs = resolve(dir)
    const metaPath = join(abs, VM_FILES.meta)
    if (!existsSync(metaPath)) throw new VmError(`${dir}: not a VM directory (no ${VM_FILES.meta}): create one with faultline vm snapshot --dir ${dir}`)
    const vm = new VmDir(abs, parseVmMetadata(readFileSync(metaPath, 'utf8'), metaPath))
    const needed = vm.meta.kind === 'external' ? [VM_FILES.state, VM_FILES.snapshot] : [VM_FILES.state, VM_FILES.snapshot, VM_FILES.kernel, VM_FILES.initrd]
    for (const f of needed) {
      if (!existsSync(join(abs, f))) throw new VmError(`${join(dir, f)}: missing from the VM directory: snapshot it again`)
    }
    return vm
  }

  path(file: keyof typeof VM_FILES): string {
    return join(this.dir, VM_FILES[file])
  }

  has(file: keyof typeof VM_FILES): boolean {
    return existsSync(this.path(file))
  }

  /** The test guest's metadata; a VM snapshotted over --qmp has none of it. */
  get guest(): VmMetadata {
    if (this.meta.kind === 'external') {
      throw new VmError(
        `${this.dir}: holds a VM snapshotted over QMP, not the test guest: resume it with your own command line (faultline vm resume --dir ${this.dir} -- qemu-system-x86_64 ...)`,
      )
    }
    return this.meta
  }

  /** The guest image the checkpoint needs at the destination (the dir's own copies). */
  get image(): GuestImage {
    return { kernel: this.path('kernel'), initrd: this.path('initrd'), cmdline: this.guest.cmdline }
  }

  get ramBytes(): number {
    return this.meta.ramMiB * 1024 * 1024
  }

  /** Every file a resume may read: what a cold-cache run drops from the page cache. */
  get files(): string[] {
    return (Object.keys(VM_FILES) as (keyof typeof VM_FILES)[]).filter(f => f !== 'meta' && this.has(f)).map(f => this.path(f))
  }

  /** Records that an optional file (the eager stream) has been added since. */
  update(changes: Partial<VmMetadata>): void {
    const meta = { ...this.guest, ...changes }
    writeVmMetadata(this.dir, meta)
    Object.assign(this.meta, changes)
  }
}

/** Writes vm.json through a temporary file: a directory with a vm.json is a complete one. */
export function writeVmMetadata(dir: string, meta: AnyVmMetadata): void {
  const path = join(dir, VM_FILES.meta)
  writeFileSync(`${path}.tmp`, JSON.stringify(meta, null, 2) + '\n')
  renameSync(`${path}.tmp`, path)
}
