// Resumes a checkpointed VM in one of three ways and times it from QEMU's launch to the
// guest's first answer and first checksum after `cont`: eager (RAM in the stream), mmap
// (private mapping of the RAM file, Knauth & Fetzer 2013), faultline (anonymous RAM served
// over userfaultfd).
import { existsSync } from 'node:fs'
import { VmError } from './errors.js'
import { ping, requestChecksum, type GuestChecksum } from './guest.js'
import type { GuestImage } from './image.js'
import { migrateFromFile, setMigrationCapabilities } from './migration.js'
import { faultlineEnv, QemuVm, type Accel, type RamBackend } from './qemu.js'

export type ResumeMode = 'eager' | 'mmap' | 'faultline'
export const RESUME_MODES: readonly ResumeMode[] = ['eager', 'mmap', 'faultline']

export interface FaultlineTarget {
  /** A page server already listening (faultline serve, or native/build/uffd-floor). */
  socketPath: string
  /** native/build/libfaultline-shim.so */
  shimPath: string
  /** Where guest RAM starts in the server's image; 0 for a whole-RAM snapshot. */
  offsetBytes?: number
}

export interface ResumeOptions {
  mode: ResumeMode
  image: GuestImage
  ramMiB: number
  workloadMiB?: number
  ramFile: string
  stateFile: string
  /** Needed by eager only. */
  eagerStateFile?: string
  /** Needed by faultline only. */
  faultline?: FaultlineTarget
  name?: string
  accel?: Accel
  /** Pin QEMU to these CPUs (taskset -c). */
  cpus?: string
  timeoutMs?: number
}

/** Milliseconds since QEMU was spawned. */
export interface ResumeTimings {
  qmpReadyMs: number
  /** migrate-incoming finished: device state (and for eager, all RAM) loaded. */
  stateLoadedMs: number
  /** `cont` answered: the guest is running. */
  runningMs: number
  /** The guest answered a ping (its memory not read yet): "resumed" as a user sees it. */
  firstReplyMs: number
  /** The guest's checksum line arrived: every workload page has been read once. */
  checksumMs: number
  /** From asking for the checksum to getting it: the workload, run on memory the resume
   * mode has to bring in. */
  workloadMs: number
}

export interface ResumeResult {
  mode: ResumeMode
  vm: QemuVm
  checksum: GuestChecksum
  timings: ResumeTimings
}

/** Launches the destination, loads state, continues it and asks for a checksum. The VM is
 * left running: the caller quits it (and compares the checksum). */
export async function resumeVm(options: ResumeOptions): Promise<ResumeResult> {
  const timeoutMs = options.timeoutMs ?? 300_000
  const plan = resumePlan(options)
  const vm = await QemuVm.launch({
    name: options.name ?? `resume-${options.mode}`,
    image: options.image,
    ramMiB: options.ramMiB,
    workloadMiB: options.workloadMiB,
    ram: plan.ram,
    env: plan.env,
    accel: options.accel,
    cpus: options.cpus,
    incoming: true,
  })
  try {
    await setMigrationCapabilities(vm, { ignoreShared: plan.ignoreShared })
    await migrateFromFile(vm, plan.stream, timeoutMs)
    const stateLoadedNs = now()
    await vm.qmp.execute('cont')
    const runningNs = now()
    const exited = vm.failOnExit('before the guest answered')
    const firstReplyNs = await Promise.race([ping(vm.console, timeoutMs), exited])
    const requestedNs = now()
    const checksum = await Promise.race([requestChecksum(vm.console, timeoutMs), exited])
    const ms = (t: number): number => (t - vm.launchedAtNs) / 1e6
    return {
      mode: options.mode,
      vm,
      checksum,
      timings: {
        qmpReadyMs: ms(vm.qmpReadyAtNs),
        stateLoadedMs: ms(stateLoadedNs),
        runningMs: ms(runningNs),
        firstReplyMs: ms(firstReplyNs),
        checksumMs: ms(checksum.atNs),
        workloadMs: (checksum.atNs - requestedNs) / 1e6,
      },
    }
  } catch (err) {
    vm.kill()
    throw err
  }
}

interface ResumePlan {
  ram: RamBackend
  env?: Record<string, string>
  ignoreShared: boolean
  stream: string
}

function resumePlan(o: ResumeOptions): ResumePlan {
  switch (o.mode) {
    case 'eager':
      if (!o.eagerStateFile) throw new VmError('eager resume: no stream with RAM (checkpoint with eagerStateFile)')
      // Anonymous RAM filled from the stream before the guest runs: QEMU's own restore.
      return { ram: { kind: 'ram' }, ignoreShared: false, stream: o.eagerStateFile }
    case 'mmap':
      requireFile(o.ramFile, 'mmap resume')
      // share=off: a private file mapping, so the guest's writes never reach the image.
      return { ram: { kind: 'file', path: o.ramFile, share: false }, ignoreShared: true, stream: o.stateFile }
    case 'faultline': {
      const f = o.faultline
      if (!f) throw new VmError('faultline resume: no page server given (socketPath, shimPath)')
      requireFile(f.shimPath, 'faultline resume (build native/ first)')
      if (!existsSync(f.socketPath)) throw new VmError(`faultline resume: no page server listening at ${f.socketPath}`)
      // Anonymous RAM, not shared: x-ignore-shared skips it only because the source's block
      // was shared; the destination expects no pages for it and the server provides them.
      return {
        ram: { kind: 'ram' },
        env: faultlineEnv({ shimPath: f.shimPath, socketPath: f.socketPath, ramBytes: o.ramMiB * 1024 * 1024, offsetBytes: f.offsetBytes }),
        ignoreShared: true,
        stream: o.stateFile,
      }
    }
  }
}

function requireFile(path: string, what: string): void {
  if (!existsSync(path)) throw new VmError(`${what}: ${path}: no such file`)
}

function now(): number {
  return Number(process.hrtime.bigint())
}
