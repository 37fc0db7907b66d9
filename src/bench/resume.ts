// The resume benchmark: the same native guest and workload resumed every way faultline is
// compared with (eager read, eager LZ4, mmap demand paging, faultline per policy, the C floor
// handler), over guest RAM sizes, working sets, access patterns and cold/warm page cache,
// with every run's costs taken from /proc of each process involved.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs'
import * as os from 'node:os'
import { join } from 'node:path'
import { UsageError } from '../errors.js'
import { BUILTIN_POLICIES, createPolicy } from '../policy/registry.js'
import { writeSyntheticImage } from '../snapshot/synthetic-image.js'
import { createSnapshot } from '../snapshot/writer.js'
import { runGuestProcess, type GuestReport } from './guest.js'
import { cachedBytes, dropPageCache, memAvailableBytes, warmPageCache, type ColdMethod } from './proc.js'
import { startFaultlineServer, startFloorServer, type RunningServer, type ServerCost } from './servers.js'


export type CacheState = 'cold' | 'warm'
export type AccessPattern = 'sequential' | 'random'

export interface Workload {
  pattern: AccessPattern
  /** Fraction of guest RAM touched, 0..1. */
  fraction: number
}

/** `random:0.05` and the like: the guest's --workload argument. */
export function workloadArg(w: Workload): string {
  return `${w.pattern}:${w.fraction}`
}

/** `random 5%`: how tables name a workload. */
export function workloadLabel(w: Workload): string {
  return `${w.pattern} ${+(w.fraction * 100).toFixed(2)}%`
}

/** The modes every sweep knows; `faultline:<policy>` for any policy besides. */
export const BASE_MODES = ['eager', 'eager-lz4', 'mmap', 'uffd-c'] as const

/** Every built-in mode: the baselines plus faultline with each built-in policy that needs no
 * argument (`eager` is the eager-lz4 baseline). */
export async function defaultModes(): Promise<string[]> {
  const policies: string[] = []
  for (const name of Object.keys(BUILTIN_POLICIES)) {
    if (name === 'eager') continue
    try { await createPolicy(name); policies.push(`faultline:${name}`) } catch { /* needs arguments */ }
  }
  return ['eager', 'eager-lz4', 'mmap', ...policies, 'uffd-c']
}

export function checkMode(mode: string): void {
  if ((BASE_MODES as readonly string[]).includes(mode)) return
  if (mode.startsWith('faultline:') && mode.length > 'faultline:'.length) return
  throw new UsageError(`--modes: unknown mode '${mode}' (expected ${BASE_MODES.join(', ')} or faultline:<policy>)`)
}

/** The faultline policy a mode runs, or undefined for modes without a faultline server. */
export function policyOf(mode: string): string | undefined {
  if (mode === 'eager-lz4') return 'eager'
  return mode.startsWith('faultline:') ? mode.slice('faultline:'.length) : undefined
}

export interface SweepOptions {
  sizesMiB: number[]
  workloads: Workload[]
  modes: string[]
  caches: CacheState[]
  repeat: number
  /** Where synthetic images and snapshots are kept between runs (generated once). */
  imageDir: string
  cold: ColdMethod
  /** Pin guest and server to these CPUs (taskset -c). */
  cpus?: string
  /** Guests check every touched page against the raw image (not timed). */
  verify: boolean
  seed: number
  /** Environment for faultline servers (FAULTLINE_FFI...). */
  serverEnv?: NodeJS.ProcessEnv
  /** Memory kept free beyond what a size needs, bytes (default 1 GiB). */
  marginBytes?: number
  log?: (line: string) => void
  /** Called while a synthetic image and its snapshot are generated (first use of a size). */
  onImageProgress?: (sizeMiB: number, doneBytes: number, totalBytes: number) => void
  /** Called after each run with the guest RAM resumed so far and in all. */
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

export interface RunRecord {
  sizeMiB: number
  workload: string
  cache: CacheState
  mode: string
  /** Which repetition: runs of one round are interleaved (every mode once, then again). */
  round: number
  /** From the start of resume: until the guest's first touched page was readable. */
  firstAccessNs: number
  resumeNs: number
  workloadNs: number
  /** resume + workload. */
  totalNs: number
  /** Bytes read from storage by every process of the run (guest + server; /proc/PID/io). */
  storageReadBytes: number
  guestReadBytes: number
  serverReadBytes: number | null
  /** Bytes through read(2)-like calls, cached or not (guest + server). */
  logicalReadBytes: number
  serverCpuNs: number | null
  guestCpuNs: number
  serverPeakRssBytes: number | null
  guestPeakRssBytes: number
  /** Page faults: served by the uffd server, or (eager, mmap) taken by the guest. */
  faults: number
  guestMajorFaults: number
  guestMinorFaults: number
  /** Server-side service time of one fault, median and p99 (uffd modes). */
  serviceP50Ns: number | null
  serviceP99Ns: number | null
  pagesInstalled: number | null
  verifiedPages: number
  mismatches: number
  /** Bytes of the raw image and of the snapshot in the page cache as the run began. */
  rawCachedBytes: number | null
  snapCachedBytes: number | null
}

export interface Skipped { sizeMiB?: number; mode?: string; reason: string }

export interface SweepResult {
  options: Omit<SweepOptions, 'log' | 'onProgress' | 'onImageProgress'>
  machine: { kernel: string; cpus: number; memTotalBytes: number; node: string; loadAvgStart: number[]; loadAvgEnd: number[] }
  startedAt: string
  finishedAt: string
  runs: RunRecord[]
  skipped: Skipped[]
}

export interface ImagePair { raw: string; snap: string; sizeBytes: number; snapBytes: number }

/** The synthetic image of `mib` MiB and its snapshot under `dir`, generated on first use and
 * reused afterwards (written under temporary names, so a half-written file is never reused). */
export async function ensureImage(dir: string, mib: number, seed: number, onProgress?: (done: number, total: number) => void): Promise<ImagePair> {
  mkdirSync(dir, { recursive: true })
  const sizeBytes = mib * 2 ** 20
  const raw = join(dir, `synthetic-${mib}MiB-seed${seed}.raw`)
  const snap = join(dir, `synthetic-${mib}MiB-seed${seed}.snap`)
  if (!existsSync(raw) || statSync(raw).size !== sizeBytes) {
    rmSync(snap, { force: true })
    writeSyntheticImage(`${raw}.tmp`, sizeBytes, { seed, onProgress: (d, t) => onProgress?.(d / 2, t) })
    renameSync(`${raw}.tmp`, raw)
  }
  if (!existsSync(snap)) {
    await createSnapshot(raw, `${snap}.tmp`, { onProgress: (d: number, t: number) => onProgress?.(t / 2 + d / 2, t) })
    renameSync(`${snap}.tmp`, snap)
  }
  return { raw, snap, sizeBytes, snapBytes: statSync(snap).size }
}

interface RunContext {
  image: ImagePair
  sizeMiB: number
  workload: Workload
  cache: CacheState
  round: number
  socketPath: string
  opts: SweepOptions
}

/** One resume of one guest in one mode; throws if the guest or its server fails. */
export async function runOnce(mode: string, ctx: RunContext): Promise<RunRecord> {
  const { image, opts } = ctx
  const guestArgs = ['--mib', String(ctx.sizeMiB), '--workload', workloadArg(ctx.workload), '--seed', String(opts.seed)]
  if (opts.verify) guestArgs.push('--verify', image.raw)
  let server: RunningServer | undefined
  const policy = policyOf(mode)
  if (mode === 'eager') guestArgs.push('--source', `eager:${image.raw}`)
  else if (mode === 'mmap') guestArgs.push('--source', `mmap:${image.raw}`)
  else if (mode === 'uffd-c') server = await startFloorServer({ rawPath: image.raw, socketPath: ctx.socketPath, cpus: opts.cpus })
  else if (policy !== undefined) {
    server = await startFaultlineServer({ snapshotPath: image.snap, socketPath: ctx.socketPath, policy, cpus: opts.cpus, env: opts.serverEnv })
  } else throw new UsageError(`unknown mode '${mode}'`)
  if (server) guestArgs.push('--socket', ctx.socketPath)
  // The server is up (snapshot index in memory, like a daemon waiting for guests): only now
  // is the cache emptied, so a cold run reads page data cold.
  if (ctx.cache === 'cold') dropPageCache(opts.cold, [image.raw, image.snap])
  const rawCached = cachedBytes(image.raw) ?? null
  const snapCached = cachedBytes(image.snap) ?? null
  let guest: GuestReport
  let cost: ServerCost | undefined
  try {
    guest = await runGuestProcess(guestArgs, { cpus: opts.cpus, timeoutMs: 30 * 60 * 1000 })
    cost = await server?.finish()
  } catch (err) {
    server?.kill()
    throw err
  }
  return {
    sizeMiB: ctx.sizeMiB, workload: workloadLabel(ctx.workload), cache: ctx.cache, mode, round: ctx.round,
    firstAccessNs: guest.first_access_ns ?? NaN, resumeNs: guest.resume_ns, workloadNs: guest.workload_ns, totalNs: guest.total_ns,
    storageReadBytes: guest.io_read_bytes + (cost?.readBytes ?? 0),
    guestReadBytes: guest.io_read_bytes, serverReadBytes: cost ? cost.readBytes : null,
    logicalReadBytes: guest.io_rchar + (cost?.rchar ?? 0),
    serverCpuNs: cost ? cost.cpuNs : null, guestCpuNs: guest.cpu_ns,
    serverPeakRssBytes: cost ? cost.peakRssBytes : null, guestPeakRssBytes: guest.maxrss_kb * 1024,
    faults: cost ? cost.faults : guest.minflt + guest.majflt,
    guestMajorFaults: guest.majflt, guestMinorFaults: guest.minflt,
    serviceP50Ns: cost ? cost.serviceP50Ns : null, serviceP99Ns: cost ? cost.serviceP99Ns : null,
    pagesInstalled: cost ? cost.pagesInstalled : null,
    verifiedPages: guest.verified_pages, mismatches: guest.mismatches,
    rawCachedBytes: rawCached, snapCachedBytes: snapCached,
  }
}

/** Memory one size needs at once: the guest's RAM, the larger of the two files kept in the
 * page cache for warm runs, and a margin. */
export function memoryNeededBytes(sizeBytes: number, snapBytes: number, marginBytes: number): number {
  return sizeBytes + Math.max(sizeBytes, snapBytes) + marginBytes
}

/** Runs the sweep: sizes ascending; per size, cache state, workload and round, every mode once
 * (interleaved, so drift in machine load hits all modes alike). */
export async function runSweep(opts: SweepOptions): Promise<SweepResult> {
  for (const m of opts.modes) checkMode(m)
  const log = opts.log ?? (() => {})
  const startedAt = new Date().toISOString()
  const loadAvgStart = os.loadavg()
  const runs: RunRecord[] = []
  const skipped: Skipped[] = []
  const perSizeRuns = opts.caches.length * opts.workloads.length * opts.repeat * opts.modes.length
  const totalBytes = opts.sizesMiB.reduce((s, mib) => s + mib * 2 ** 20 * perSizeRuns, 0)
  let doneBytes = 0
  const socketPath = join(opts.imageDir, `bench-${process.pid}.sock`)
  for (const sizeMiB of [...opts.sizesMiB].sort((a, b) => a - b)) {
    const sizeBytes = sizeMiB * 2 ** 20
    const image = await ensureImage(opts.imageDir, sizeMiB, opts.seed, opts.onImageProgress ? (d, t) => opts.onImageProgress!(sizeMiB, d, t) : undefined)
    const need = memoryNeededBytes(sizeBytes, image.snapBytes, opts.marginBytes ?? 2 ** 30)
    const avail = memAvailableBytes()
    if (need > avail) {
      const reason = `needs ${(need / 2 ** 30).toFixed(1)} GiB of memory (guest RAM + cached image + margin), ${(avail / 2 ** 30).toFixed(1)} GiB available`
      skipped.push({ sizeMiB, reason })
      log(`skipping ${sizeMiB} MiB: ${reason}`)
      doneBytes += sizeBytes * perSizeRuns
      opts.onProgress?.(doneBytes, totalBytes)
      continue
    }
    for (const cache of opts.caches) {
      if (cache === 'warm') { warmPageCache(image.raw); warmPageCache(image.snap) }
      for (const workload of opts.workloads) {
        for (let round = 0; round < opts.repeat; round++) {
          for (const mode of opts.modes) {
            const record = await runOnce(mode, { image, sizeMiB, workload, cache, round, socketPath, opts })
            runs.push(record)
            if (record.mismatches > 0) log(`${mode} ${sizeMiB} MiB ${workloadLabel(workload)} ${cache}: ${record.mismatches} pages differ from the image`)
            doneBytes += sizeBytes
            opts.onProgress?.(doneBytes, totalBytes)
          }
        }
      }
    }
  }
  rmSync(socketPath, { force: true })
  return {
    options: withoutCallbacks(opts),
    machine: {
      kernel: readFileSync('/proc/sys/kernel/osrelease', 'latin1').trim(), cpus: os.cpus().length,
      memTotalBytes: os.totalmem(), node: process.version, loadAvgStart, loadAvgEnd: os.loadavg(),
    },
    startedAt, finishedAt: new Date().toISOString(), runs, skipped,
  }
}

function withoutCallbacks(opts: SweepOptions): SweepResult['options'] {
  const { log: _log, onProgress: _progress, onImageProgress: _image, ...rest } = opts
  return rest
}
