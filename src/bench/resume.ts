// The resume benchmark: the same native guest and workload resumed every way faultline is
// compared with (eager read, eager LZ4, mmap demand paging, faultline per policy, the C floor
// handler), over guest RAM sizes, working sets, access patterns and cold/warm page cache,
// with every run's costs taken from /proc of each process involved.
import { copyFileSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs'
import * as os from 'node:os'
import { basename, dirname, join } from 'node:path'
import { UsageError } from '../errors.js'
import { BUILTIN_POLICIES, createPolicy } from '../policy/registry.js'
import { writeSyntheticImage } from '../snapshot/synthetic-image.js'
import { createSnapshot } from '../snapshot/writer.js'
import { runGuestProcess, type GuestReport } from './guest.js'
import {
  benchMachine,
  type BenchMachine,
  cachedBytes,
  dropPageCache,
  formatSequentialRead,
  measureSequentialRead,
  memAvailableBytes,
  warmPageCache,
  type ColdMethod,
  type SequentialRead,
} from './proc.js'
import { startFaultlineServer, startFloorServer, type FaultlineServer, type RunningServer, type ServerCost } from './servers.js'
import { BenchError } from './errors.js'
import type { CacheCounts } from '../cache/decoded-cache.js'
import type { SessionCacheStats } from '../server/session-meters.js'

/** cold: nothing in the page cache; warm: the image and snapshot in the page cache, the
 * server's decoded cache empty; hot: besides, the server already served this snapshot to an
 * earlier guest, so its decoded cache holds every page (for modes without a decoded cache,
 * hot is warm). */
export type CacheState = 'cold' | 'warm' | 'hot'
export const CACHE_STATES: readonly CacheState[] = ['cold', 'warm', 'hot']
export type AccessPattern = 'sequential' | 'random'
/** What backs a faultline guest's memory: anonymous (UFFDIO_COPY) or the decoded cache. */
export type GuestMap = 'anonymous' | 'cache'

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

/** The modes every sweep knows; `faultline:<policy>` (anonymous guest memory) and
 * `faultline-cache:<policy>` (the decoded cache mapped) for any policy besides. */
export const BASE_MODES = ['eager', 'eager-lz4', 'mmap', 'uffd-c'] as const

/** The policy of the learned modes (`faultline:learned`, `faultline-cache:learned`): the set an
 * earlier run of the same workload recorded (serve --learn), REAP's stable working set. */
export const LEARNED_MODE_POLICY = 'learned'

/** How a mode resumes the guest. */
export interface ModeSpec {
  kind: 'eager' | 'mmap' | 'uffd-c' | 'faultline'
  /** faultline: what backs the guest's memory. */
  map?: GuestMap
  /** faultline: its --policy (undefined for a learned mode: serve --learn picks the set). */
  policy?: string
  /** faultline: the set is recorded by an earlier run of the same workload first. */
  learned: boolean
}

export function parseMode(mode: string): ModeSpec {
  if (mode === 'eager' || mode === 'mmap' || mode === 'uffd-c') return { kind: mode, learned: false }
  if (mode === 'eager-lz4') return { kind: 'faultline', map: 'anonymous', policy: 'eager', learned: false }
  const m = /^(faultline|faultline-cache):(.+)$/.exec(mode)
  if (!m) {
    throw new UsageError(`--modes: unknown mode '${mode}' (expected ${BASE_MODES.join(', ')}, faultline:<policy> or faultline-cache:<policy>)`)
  }
  const map: GuestMap = m[1] === 'faultline' ? 'anonymous' : 'cache'
  return m[2] === LEARNED_MODE_POLICY ? { kind: 'faultline', map, learned: true } : { kind: 'faultline', map, policy: m[2], learned: false }
}

export function checkMode(mode: string): void {
  parseMode(mode)
}

/** Every built-in mode: the baselines; faultline with each built-in policy that needs no
 * argument, anonymous (`eager` is the eager-lz4 baseline) and cache-mapped; the learned modes. */
export async function defaultModes(): Promise<string[]> {
  const policies: string[] = []
  for (const name of Object.keys(BUILTIN_POLICIES)) {
    try {
      await createPolicy(name)
      policies.push(name)
    } catch {
      /* needs arguments */
    }
  }
  return [
    'eager',
    'eager-lz4',
    'mmap',
    ...policies.filter(p => p !== 'eager').map(p => `faultline:${p}`),
    `faultline:${LEARNED_MODE_POLICY}`,
    ...policies.map(p => `faultline-cache:${p}`),
    `faultline-cache:${LEARNED_MODE_POLICY}`,
    'uffd-c',
  ]
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
  /** faultline: what backed the guest's memory (the guest's own report), and the policy the
   * server ran (a learned mode's `learned:FILE`). */
  map: GuestMap | null
  policy: string | null
  /** faultline: decoded bytes in the server's cache as the guest started (hot: all of them). */
  decodedCacheBytes: number | null
  /** faultline: the session's use of the decoded cache (wakes, pages served privately, folios
   * asked for, pages copied from it). */
  sessionCache: SessionCacheStats | null
}

export interface Skipped {
  sizeMiB?: number
  mode?: string
  reason: string
}

/** The disk's sequential read bandwidth, measured on one size's snapshot before its runs. */
export interface DiskRead extends SequentialRead {
  sizeMiB: number
}

export interface SweepResult {
  options: Omit<SweepOptions, 'log' | 'onProgress' | 'onImageProgress'>
  diskReads: DiskRead[]
  machine: BenchMachine
  startedAt: string
  finishedAt: string
  runs: RunRecord[]
  skipped: Skipped[]
}

export interface ImagePair {
  raw: string
  snap: string
  sizeBytes: number
  snapBytes: number
}

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

export interface RunContext {
  image: ImagePair
  sizeMiB: number
  workload: Workload
  cache: CacheState
  round: number
  socketPath: string
  opts: SweepOptions
  /** A learned mode's set, recorded by recordLearnedSet (a .fllearn file). */
  learnedSet?: string
}

function guestArgsFor(ctx: RunContext, workload: string): string[] {
  return ['--mib', String(ctx.sizeMiB), '--workload', workload, '--seed', String(ctx.opts.seed)]
}

/** A learned mode's working set: an earlier run of the same workload (same seed, same map)
 * served with serve --learn DIR, recorded into DIR. Returns the .fllearn file it wrote. */
export async function recordLearnedSet(mode: string, ctx: RunContext, dir: string): Promise<string> {
  const spec = parseMode(mode)
  if (!spec.learned) throw new BenchError(`${mode}: not a learned mode`)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const server = await startFaultlineServer({
    snapshotPath: ctx.image.snap,
    socketPath: ctx.socketPath,
    learnDir: dir,
    cpus: ctx.opts.cpus,
    env: ctx.opts.serverEnv,
  })
  try {
    await runGuestProcess([...guestArgsFor(ctx, workloadArg(ctx.workload)), '--socket', ctx.socketPath, '--map', spec.map!], {
      cpus: ctx.opts.cpus,
      timeoutMs: 30 * 60 * 1000,
    })
    await server.finish()
  } catch (err) {
    server.kill()
    throw err
  }
  const files = readdirSync(dir).filter(f => f.endsWith('.fllearn'))
  if (files.length !== 1) throw new BenchError(`${mode}: serve --learn ${dir} recorded ${files.length} learned sets, expected 1`)
  return join(dir, files[0])
}

/** Folios of the decoded cache that hold their pages (or need none: zero, or never servable). */
function foliosIn(c: CacheCounts): number {
  return c.presentFolios + c.zeroFolios + c.unservableFolios
}

/** Hot: an earlier guest (the server's first session) touches every page of the image through
 * the decoded cache (mapped, so misses only ask for folios); then waits until the fill workers
 * have put every folio in. Returns the decoded bytes in the cache. */
export async function fillDecodedCache(server: FaultlineServer, sizeMiB: number, cpus?: string): Promise<number> {
  const earlier = await runGuestProcess(['--mib', String(sizeMiB), '--workload', 'sequential', '--socket', server.socketPath, '--map', 'cache'], {
    cpus,
    timeoutMs: 30 * 60 * 1000,
  })
  await server.session(1)
  if (earlier.map !== 'cache' || typeof earlier.folio_bytes !== 'number') {
    throw new BenchError(`hot: the server did not map its decoded cache for the earlier guest (${server.cacheDescription ?? 'it has none'})`)
  }
  const folios = Math.ceil((sizeMiB * 2 ** 20) / earlier.folio_bytes)
  const deadline = Date.now() + 10 * 60 * 1000
  for (;;) {
    const counts = await server.cacheCounts()
    if (counts === null) throw new BenchError('hot: the server has no decoded cache')
    if (foliosIn(counts) >= folios) return counts.presentBytes
    if (Date.now() > deadline) throw new BenchError(`hot: the decoded cache holds ${foliosIn(counts)} of ${folios} folios after the earlier guest`)
    await new Promise(r => setTimeout(r, 10))
  }
}

/** One resume of one guest in one mode; throws if the guest or its server fails. */
export async function runOnce(mode: string, ctx: RunContext): Promise<RunRecord> {
  const { image, opts } = ctx
  const spec = parseMode(mode)
  const guestArgs = guestArgsFor(ctx, workloadArg(ctx.workload))
  if (opts.verify) guestArgs.push('--verify', image.raw)
  let server: RunningServer | undefined
  let faultline: FaultlineServer | undefined
  let decodedCacheBytes: number | null = null
  const learnDir = spec.learned ? join(dirname(ctx.socketPath), `learn-${process.pid}`) : undefined
  try {
    if (spec.kind === 'eager') guestArgs.push('--source', `eager:${image.raw}`)
    else if (spec.kind === 'mmap') guestArgs.push('--source', `mmap:${image.raw}`)
    else if (spec.kind === 'uffd-c') server = await startFloorServer({ rawPath: image.raw, socketPath: ctx.socketPath, cpus: opts.cpus })
    else {
      if (learnDir !== undefined) {
        // A copy of the recorded set, so this run's own recording changes no later run's input.
        if (ctx.learnedSet === undefined) throw new BenchError(`${mode}: no learned set recorded for it`)
        rmSync(learnDir, { recursive: true, force: true })
        mkdirSync(learnDir, { recursive: true })
        copyFileSync(ctx.learnedSet, join(learnDir, basename(ctx.learnedSet)))
      }
      const hot = ctx.cache === 'hot'
      server = faultline = await startFaultlineServer({
        snapshotPath: image.snap,
        socketPath: ctx.socketPath,
        policy: spec.policy,
        learnDir,
        sessions: hot ? 2 : 1,
        cpus: opts.cpus,
        env: opts.serverEnv,
      })
      if (spec.learned && !faultline.policy.startsWith('learned:'))
        throw new BenchError(`${mode}: the server did not take the recorded set (policy ${faultline.policy})`)
      if (spec.map === 'cache') guestArgs.push('--map', 'cache')
      decodedCacheBytes = hot ? await fillDecodedCache(faultline, ctx.sizeMiB, opts.cpus) : 0
    }
    if (server) guestArgs.push('--socket', ctx.socketPath)
  } catch (err) {
    server?.kill()
    throw err
  }
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
  } finally {
    if (learnDir !== undefined) rmSync(learnDir, { recursive: true, force: true })
  }
  if (spec.map === 'cache' && guest.map !== 'cache') {
    throw new BenchError(`${mode}: the server gave the guest anonymous memory, not its decoded cache (${faultline?.cacheDescription ?? 'it has none'})`)
  }
  return {
    sizeMiB: ctx.sizeMiB,
    workload: workloadLabel(ctx.workload),
    cache: ctx.cache,
    mode,
    round: ctx.round,
    firstAccessNs: guest.first_access_ns ?? NaN,
    resumeNs: guest.resume_ns,
    workloadNs: guest.workload_ns,
    totalNs: guest.total_ns,
    storageReadBytes: guest.io_read_bytes + (cost?.readBytes ?? 0),
    guestReadBytes: guest.io_read_bytes,
    serverReadBytes: cost ? cost.readBytes : null,
    logicalReadBytes: guest.io_rchar + (cost?.rchar ?? 0),
    serverCpuNs: cost ? cost.cpuNs : null,
    guestCpuNs: guest.cpu_ns,
    serverPeakRssBytes: cost ? cost.peakRssBytes : null,
    guestPeakRssBytes: guest.maxrss_kb * 1024,
    faults: cost ? cost.faults : guest.minflt + guest.majflt,
    guestMajorFaults: guest.majflt,
    guestMinorFaults: guest.minflt,
    serviceP50Ns: cost ? cost.serviceP50Ns : null,
    serviceP99Ns: cost ? cost.serviceP99Ns : null,
    pagesInstalled: cost ? cost.pagesInstalled : null,
    verifiedPages: guest.verified_pages,
    mismatches: guest.mismatches,
    rawCachedBytes: rawCached,
    snapCachedBytes: snapCached,
    map: faultline ? (guest.map as GuestMap) : null,
    policy: faultline?.policy ?? null,
    decodedCacheBytes,
    sessionCache: cost?.session?.cache ?? null,
  }
}

/** Memory one size needs at once: the guest's RAM, the larger of the two files kept in the
 * page cache for warm runs, a decoded cache of the whole image where a faultline server runs,
 * and a margin. */
export function memoryNeededBytes(sizeBytes: number, snapBytes: number, marginBytes: number, decodedCache = false): number {
  return sizeBytes + (decodedCache ? sizeBytes + snapBytes : Math.max(sizeBytes, snapBytes)) + marginBytes
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
  const diskReads: DiskRead[] = []
  const withCache = opts.modes.some(m => parseMode(m).kind === 'faultline')
  const learnedModes = opts.modes.filter(m => parseMode(m).learned)
  const perSizeRuns = opts.caches.length * opts.workloads.length * opts.repeat * opts.modes.length
  const totalBytes = opts.sizesMiB.reduce((s, mib) => s + mib * 2 ** 20 * perSizeRuns, 0)
  let doneBytes = 0
  const socketPath = join(opts.imageDir, `bench-${process.pid}.sock`)
  for (const sizeMiB of [...opts.sizesMiB].sort((a, b) => a - b)) {
    const sizeBytes = sizeMiB * 2 ** 20
    const image = await ensureImage(opts.imageDir, sizeMiB, opts.seed, opts.onImageProgress ? (d, t) => opts.onImageProgress!(sizeMiB, d, t) : undefined)
    const need = memoryNeededBytes(sizeBytes, image.snapBytes, opts.marginBytes ?? 2 ** 30, withCache)
    const avail = memAvailableBytes()
    if (need > avail) {
      const reason = `needs ${(need / 2 ** 30).toFixed(1)} GiB of memory (guest RAM + cached image + margin), ${(avail / 2 ** 30).toFixed(1)} GiB available`
      skipped.push({ sizeMiB, reason })
      log(`skipping ${sizeMiB} MiB: ${reason}`)
      doneBytes += sizeBytes * perSizeRuns
      opts.onProgress?.(doneBytes, totalBytes)
      continue
    }
    const disk = { sizeMiB, ...measureSequentialRead(image.snap) }
    diskReads.push(disk)
    log(`disk: ${formatSequentialRead(disk)}`)
    for (const cache of opts.caches) {
      if (cache !== 'cold') {
        warmPageCache(image.raw)
        warmPageCache(image.snap)
      }
      for (const workload of opts.workloads) {
        // Each learned mode's set, recorded once by an earlier run of this workload.
        const learnedSets = new Map<string, string>()
        for (const [i, mode] of learnedModes.entries()) {
          const ctx: RunContext = { image, sizeMiB, workload, cache, round: -1, socketPath, opts }
          learnedSets.set(mode, await recordLearnedSet(mode, ctx, join(opts.imageDir, `learned-${process.pid}-${i}`)))
        }
        for (let round = 0; round < opts.repeat; round++) {
          for (const mode of opts.modes) {
            const record = await runOnce(mode, { image, sizeMiB, workload, cache, round, socketPath, opts, learnedSet: learnedSets.get(mode) })
            runs.push(record)
            if (record.mismatches > 0) log(`${mode} ${sizeMiB} MiB ${workloadLabel(workload)} ${cache}: ${record.mismatches} pages differ from the image`)
            doneBytes += sizeBytes
            opts.onProgress?.(doneBytes, totalBytes)
          }
        }
        for (const set of learnedSets.values()) rmSync(dirname(set), { recursive: true, force: true })
      }
    }
  }
  rmSync(socketPath, { force: true })
  return {
    options: withoutCallbacks(opts),
    machine: benchMachine(loadAvgStart),
    startedAt,
    finishedAt: new Date().toISOString(),
    runs,
    skipped,
    diskReads,
  }
}

function withoutCallbacks(opts: SweepOptions): SweepResult['options'] {
  const { log: _log, onProgress: _progress, onImageProgress: _image, ...rest } = opts
  return rest
}
