// The real-VM resume benchmark: the test guest checkpointed once per RAM size (kept in a
// cache directory), then resumed eagerly, through mmap, through faultline per policy and
// through the C floor handler, warm and cold page cache, pinned or not, interleaved per round.
import { existsSync } from 'node:fs'
import * as os from 'node:os'
import { join } from 'node:path'
import { UsageError } from '../errors.js'
import { createPolicy } from '../policy/registry.js'
import { ensureGuestImage } from '../vm/image.js'
import { defaultWorkloadMiB } from '../vm/qemu.js'
import { pinProcess, prepareVmDir, resumeVmDir, type VmDirResumeOptions, type VmDirResumeReport } from '../vm/resume-dir.js'
import type { ResumeMode } from '../vm/resume.js'
import { readQemuVersion, snapshotTestGuest } from '../vm/snapshot-guest.js'
import { VmDir } from '../vm/vm-dir.js'
import { benchMachine, type BenchMachine, dropPageCache, memAvailableBytes, warmPageCache, type ColdMethod } from './proc.js'
import type { CacheState } from './resume.js'

export type Pinning = 'unpinned' | 'pinned'

/** `eager`, `mmap`, `faultline:<policy>`, `uffd-c` or `uffd-c:<pages per fault>`. */
export const VM_DEFAULT_MODES = ['eager', 'mmap', 'faultline:ondemand', 'faultline:readahead:15']

export interface VmModePlan {
  label: string
  mode: ResumeMode
  options: Pick<VmDirResumeOptions, 'policy' | 'floor'>
}

/** What a mode label runs; throws on an unknown one. */
export function planMode(label: string): VmModePlan {
  if (label === 'eager' || label === 'mmap') return { label, mode: label, options: {} }
  if (label.startsWith('faultline:') && label.length > 'faultline:'.length) {
    return { label, mode: 'faultline', options: { policy: label.slice('faultline:'.length) } }
  }
  const floor = /^uffd-c(?::(\d+))?$/.exec(label)
  if (floor) {
    const batchPages = floor[1] === undefined ? 1 : Number(floor[1])
    if (batchPages < 1 || batchPages > 512) throw new UsageError(`--modes ${label}: pages per fault must be 1..512`)
    return { label, mode: 'faultline', options: { floor: { batchPages } } }
  }
  throw new UsageError(`--modes: unknown mode '${label}' (expected eager, mmap, faultline:<policy>, uffd-c or uffd-c:<pages>)`)
}

export interface VmSweepOptions {
  sizesMiB: number[]
  modes: string[]
  caches: CacheState[]
  pinnings: Pinning[]
  /** CPUs for the pinned runs (taskset -c): QEMU and this process with its server threads. */
  cpus?: string
  repeat: number
  /** One VM directory per size is kept here and reused (boot + checkpoint are the slow part). */
  checkpointDir: string
  imageDir: string
  /** Workload memory as a fraction of RAM (default 5/8, the guest's own default). */
  workloadFraction?: number
  cold: ColdMethod
  /** Memory kept free beyond what a size needs, bytes (default 2 GiB). */
  marginBytes?: number
  timeoutMs?: number
  log?: (line: string) => void
  onProgress?: (done: number, total: number) => void
  onSnapshotProgress?: (doneBytes: number, totalBytes: number) => void
}

export interface VmRunRecord {
  sizeMiB: number
  cache: CacheState
  pinning: Pinning
  mode: string
  round: number
  /** The guest resumed and printed the recorded checksum, twice. */
  ok: boolean
  error?: string
  /** ms since QEMU was started. */
  stateLoadedMs: number
  firstReplyMs: number
  checksumMs: number
  /** The workload (a checksum of its memory) right after resume, and again with all memory in. */
  workloadMs: number
  recheckMs: number
  /** uffd modes: faults served, pages installed, server thread CPU, stored bytes read. */
  faults?: number
  pagesInstalled?: number
  serverCpuMs?: number
  serviceP50Us?: number
  bytesRead?: number
}

export interface VmCheckpointRecord {
  sizeMiB: number
  dir: string
  reused: boolean
  workloadMiB: number
  bootMs: number
  checkpointMs: number
  snapshotBytes: number
  stateBytes: number
  eagerStateBytes?: number
}

export interface VmSweepResult {
  options: Omit<VmSweepOptions, 'log' | 'onProgress' | 'onSnapshotProgress'>
  machine: BenchMachine & { qemu: string }
  startedAt: string
  finishedAt: string
  checkpoints: VmCheckpointRecord[]
  runs: VmRunRecord[]
  skipped: { sizeMiB: number; reason: string }[]
}

/** The checkpoint for `sizeMiB`, reused from `dir` when it matches (size, workload, and a
 * guest image no newer than it), else made again. */
async function ensureCheckpoint(o: VmSweepOptions, sizeMiB: number, needEager: boolean): Promise<VmCheckpointRecord> {
  const dir = join(o.checkpointDir, `${sizeMiB}M`)
  const workloadMiB = o.workloadFraction === undefined ? defaultWorkloadMiB(sizeMiB) : Math.floor(sizeMiB * o.workloadFraction)
  const image = await ensureGuestImage(o.imageDir, l => o.log?.(l))
  let vm: VmDir | undefined
  try {
    const old = existsSync(join(dir, 'vm.json')) ? VmDir.open(dir) : undefined
    if (old && old.guest.ramMiB === sizeMiB && old.guest.workloadMiB === workloadMiB) vm = old
  } catch (err) {
    o.log?.(`${dir}: not reusable (${(err as Error).message}), snapshotting again`)
  }
  const reused = vm !== undefined
  if (!vm) {
    o.log?.(`${sizeMiB} MiB: booting and checkpointing the guest into ${dir} (kept for later runs)`)
    vm = await snapshotTestGuest({
      dir,
      image,
      ramMiB: sizeMiB,
      workloadMiB,
      eager: needEager,
      keepRaw: true,
      log: l => o.log?.(`${sizeMiB} MiB: ${l}`),
      onProgress: o.onSnapshotProgress,
      timeoutMs: o.timeoutMs,
    })
  }
  const m = vm.guest
  return {
    sizeMiB,
    dir,
    reused,
    workloadMiB: m.workloadMiB,
    bootMs: m.bootMs,
    checkpointMs: m.checkpointMs,
    snapshotBytes: m.snapshotBytes,
    stateBytes: m.stateBytes,
    eagerStateBytes: m.eagerStateBytes,
  }
}

/** Files a mode reads while resuming: what a warm run reads once beforehand. */
function filesOf(vm: VmDir, plan: VmModePlan): string[] {
  const files = [vm.path('kernel'), vm.path('initrd')]
  if (plan.mode === 'eager') return [...files, vm.path('eagerState')]
  files.push(vm.path('state'))
  return [...files, plan.mode === 'mmap' || plan.options.floor ? vm.path('ram') : vm.path('snapshot')]
}

function failed(base: Omit<VmRunRecord, 'ok' | 'stateLoadedMs' | 'firstReplyMs' | 'checksumMs' | 'workloadMs' | 'recheckMs'>, error: string): VmRunRecord {
  return { ...base, ok: false, error, stateLoadedMs: NaN, firstReplyMs: NaN, checksumMs: NaN, workloadMs: NaN, recheckMs: NaN }
}

export function toRecord(
  base: Omit<VmRunRecord, 'ok' | 'stateLoadedMs' | 'firstReplyMs' | 'checksumMs' | 'workloadMs' | 'recheckMs'>,
  r: VmDirResumeReport,
): VmRunRecord {
  const t = r.timings
  const rec: VmRunRecord = {
    ...base,
    ok: r.match,
    stateLoadedMs: t.stateLoadedMs,
    firstReplyMs: t.firstReplyMs,
    checksumMs: t.checksumMs,
    workloadMs: t.workloadMs,
    recheckMs: r.recheckMs ?? NaN,
  }
  if (!r.match) rec.error = `checksum ${r.checksum}${r.recheckHex ? `/${r.recheckHex}` : ''}, recorded ${r.expected}`
  if (r.session) {
    const s = r.session
    Object.assign(rec, {
      faults: s.faults,
      pagesInstalled: s.pagesInstalled[0] + s.pagesInstalled[1] + s.pagesInstalled[2],
      serverCpuMs: Number.isFinite(s.cpuNs) ? s.cpuNs / 1e6 : undefined,
      serviceP50Us: s.latency.p50Ns / 1000,
      bytesRead: s.bytesRead,
    })
  } else if (r.floor) {
    const f = r.floor
    Object.assign(rec, {
      faults: f.faults,
      pagesInstalled: f.pages_copied,
      bytesRead: typeof f.bytes_read === 'number' ? f.bytes_read : undefined,
      serviceP50Us: f.service_median_ns === null ? undefined : f.service_median_ns / 1000,
    })
  }
  return rec
}

/** Runs the sweep: per size, its checkpoint, then `repeat` rounds of every (pinning, cache,
 * mode), the mode order rotated each round so no mode always runs right after another. */
export async function runVmSweep(o: VmSweepOptions): Promise<VmSweepResult> {
  const plans = o.modes.map(planMode)
  for (const p of plans) if (p.options.policy) await createPolicy(p.options.policy)
  if (o.pinnings.includes('pinned') && !o.cpus) throw new UsageError('pinned runs need --cpus LIST')
  const startedAt = new Date().toISOString()
  const loadAvgStart = os.loadavg()
  const runs: VmRunRecord[] = []
  const checkpoints: VmCheckpointRecord[] = []
  const skipped: VmSweepResult['skipped'] = []
  const total = o.sizesMiB.length * o.repeat * o.pinnings.length * o.caches.length * plans.length
  let done = 0
  const allCpus = `0-${os.cpus().length - 1}`
  const margin = o.marginBytes ?? 2 ** 31
  for (const sizeMiB of o.sizesMiB) {
    // QEMU holds the whole guest RAM, and a warm run keeps the files it reads cached.
    const need = sizeMiB * 2 ** 20 * 2 + margin
    if (memAvailableBytes() < need) {
      skipped.push({ sizeMiB, reason: `needs ${(need / 2 ** 30).toFixed(1)} GiB available, ${(memAvailableBytes() / 2 ** 30).toFixed(1)} GiB are` })
      o.log?.(`${sizeMiB} MiB: skipped (${skipped[skipped.length - 1].reason})`)
      done += total / o.sizesMiB.length
      continue
    }
    let cp: VmCheckpointRecord
    let vm: VmDir
    try {
      cp = await ensureCheckpoint(
        o,
        sizeMiB,
        plans.some(p => p.mode === 'eager'),
      )
      checkpoints.push(cp)
      vm = VmDir.open(cp.dir)
      for (const p of plans) await prepareVmDir(vm, p.mode, { ...p.options, log: o.log, timeoutMs: o.timeoutMs })
    } catch (err) {
      skipped.push({ sizeMiB, reason: `checkpoint failed: ${(err as Error).message}` })
      o.log?.(`${sizeMiB} MiB: skipped (${skipped[skipped.length - 1].reason})`)
      done += total / o.sizesMiB.length
      continue
    }
    for (let round = 0; round < o.repeat; round++) {
      for (const pinning of o.pinnings) {
        if (pinning === 'pinned') pinProcess(o.cpus!)
        try {
          for (const cache of o.caches) {
            for (let k = 0; k < plans.length; k++) {
              const plan = plans[(k + round) % plans.length]
              const base = { sizeMiB, cache, pinning, mode: plan.label, round }
              let rec: VmRunRecord
              try {
                if (cache === 'warm') for (const f of filesOf(vm, plan)) warmPageCache(f)
                const r = await resumeVmDir(vm, {
                  mode: plan.mode,
                  ...plan.options,
                  recheck: true,
                  timeoutMs: o.timeoutMs,
                  cpus: pinning === 'pinned' ? o.cpus : undefined,
                  beforeLaunch: cache === 'cold' ? () => dropPageCache(o.cold, vm.files) : undefined,
                })
                rec = toRecord(base, r)
              } catch (err) {
                rec = failed(base, (err as Error).message)
              }
              runs.push(rec)
              o.log?.(
                `${sizeMiB} MiB ${cache} ${pinning} ${plan.label.padEnd(22)} round ${round + 1}: ` +
                  (rec.error && !Number.isFinite(rec.checksumMs)
                    ? `FAILED: ${rec.error}`
                    : `first reply ${rec.firstReplyMs.toFixed(0)} ms, checksum ${rec.checksumMs.toFixed(0)} ms (workload ${rec.workloadMs.toFixed(0)} ms, again ${rec.recheckMs.toFixed(0)} ms)${rec.ok ? '' : ` MISMATCH ${rec.error}`}`),
              )
              o.onProgress?.(++done, total)
            }
          }
        } finally {
          if (pinning === 'pinned') pinProcess(allCpus)
        }
      }
    }
  }
  let qemu = ''
  try {
    qemu = readQemuVersion()
  } catch {
    /* every run failed and says why */
  }
  return {
    options: {
      sizesMiB: o.sizesMiB,
      modes: o.modes,
      caches: o.caches,
      pinnings: o.pinnings,
      cpus: o.cpus,
      repeat: o.repeat,
      checkpointDir: o.checkpointDir,
      imageDir: o.imageDir,
      workloadFraction: o.workloadFraction,
      cold: o.cold,
      marginBytes: o.marginBytes,
      timeoutMs: o.timeoutMs,
    },
    machine: { ...benchMachine(loadAvgStart), qemu },
    startedAt,
    finishedAt: new Date().toISOString(),
    checkpoints,
    runs,
    skipped,
  }
}
