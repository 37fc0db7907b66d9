// The clones benchmark (a flash crowd): N native guests of one snapshot resumed at once, the
// same workload each, every touched page verified, as mmap of the raw image, faultline with
// anonymous guest memory and faultline with its decoded cache mapped; the time until all are
// done and the host memory they hold while all are alive (the method: docs/benchmarks.md).
import * as os from 'node:os'
import { join } from 'node:path'
import { median } from '../util/format.js'
import { BenchError } from './errors.js'
import { startHeldGuest, type GuestReport, type HeldGuest } from './guest.js'
import { anonBytes, benchMachine, type BenchMachine, cachedBytes, dropPageCache, shmemFileBytes, warmPageCache, type ColdMethod } from './proc.js'
import { ensureImage, workloadArg, type ImagePair, type Workload } from './resume.js'
import { startFaultlineServer, type FaultlineServer, type ServerCost } from './servers.js'

export const CLONE_MODES = ['mmap', 'faultline', 'faultline-cache'] as const
export type CloneMode = (typeof CLONE_MODES)[number]

/** Guests at most: each has a session worker started before the clock starts (the server's
 * warm-worker bound). */
export const MAX_CLONES = 64

export interface ClonesOptions {
  guests: number
  mib: number
  /** cold: the files the mode reads are dropped from the page cache first; warm: read in. */
  cache: 'cold' | 'warm'
  cold: ColdMethod
  workload: Workload
  modes: CloneMode[]
  /** Rounds; each mode once a round, interleaved. */
  repeat: number
  seed: number
  /** faultline's fault policy (default ondemand). */
  policy: string
  imageDir: string
  serverEnv?: NodeJS.ProcessEnv
  log?: (line: string) => void
  onImageProgress?: (doneBytes: number, totalBytes: number) => void
  /** Called as guests report: guests done so far in this round and mode. */
  onProgress?: (mode: CloneMode, round: number, done: number, total: number) => void
}

/** Host memory while every guest is alive, bytes. */
export interface CloneMemory {
  /** Shmem files the server holds open (its decoded cache): their allocated blocks. */
  shmemBytes: number
  /** Σ RssAnon of the guests: pages they hold privately (anonymous memory, copy-on-write). */
  guestAnonBytes: number
  /** Bytes in the page cache of the files the mode reads (mmap: the raw image; faultline: the
   * snapshot), as fincore reports them. */
  pageCacheBytes: number
  /** shmem + guests' anonymous memory + page cache. */
  hostMemoryBytes: number
  /** RssAnon of the server process (its heap and its workers'): beside the sum, not in it. */
  serverAnonBytes: number | null
}

export interface CloneRound extends CloneMemory {
  round: number
  /** From the first guest's time zero (just before it maps its region) until the last one's
   * workload was done (each guest's CLOCK_MONOTONIC t0_ns + total_ns). */
  allDoneMs: number
  /** Spawning every guest up to its gate took this long (not in allDoneMs: they are let go
   * together once all wait there). */
  launchMs: number
  mismatches: number
  verifiedPages: number
  /** Per guest, ms: time zero to its region being ready / first access / workload done. */
  resumeMs: number[]
  firstAccessMs: number[]
  totalMs: number[]
  /** Faults the server served, summed over its sessions (faultline modes). */
  serverFaults: number | null
  /** What backed the guests' memory, as each guest reported. */
  maps: Record<string, number>
}

export interface CloneModeResult {
  mode: CloneMode
  /** Medians over rounds. */
  allDoneMs: number
  hostMemoryBytes: number
  /** Summed over rounds and guests. */
  mismatches: number
  verifiedPages: number
  rounds: CloneRound[]
}

export interface ClonesResult {
  options: Omit<ClonesOptions, 'log' | 'onProgress' | 'onImageProgress'>
  machine: BenchMachine
  startedAt: string
  finishedAt: string
  /** How the faultline server's decoded cache was made (its start line). */
  cacheDescription: string | null
  modes: CloneModeResult[]
}

/** Guests stay alive this long after reporting, at most: they are stopped once measured. */
const HOLD_MS = 10 * 60 * 1000

/** Waits until the server's decoded cache stops growing (fills a cache-mapped guest's misses
 * asked for complete after the guest moved on): 5 looks 20 ms apart with the same count. */
async function settledCache(server: FaultlineServer): Promise<void> {
  let last = -1
  let same = 0
  const deadline = Date.now() + 30_000
  while (same < 5 && Date.now() < deadline) {
    const c = await server.cacheCounts()
    if (c === null) return
    const n = c.presentFolios + c.zeroFolios + c.unservableFolios
    same = n === last ? same + 1 : 0
    last = n
    await new Promise(r => setTimeout(r, 20))
  }
}

function measureMemory(mode: CloneMode, image: ImagePair, guests: HeldGuest[], server: FaultlineServer | undefined): CloneMemory {
  const shmemBytes = server ? shmemFileBytes(server.pid) : 0
  const guestAnonBytes = guests.reduce((s, g) => s + anonBytes(g.pid), 0)
  const file = mode === 'mmap' ? image.raw : image.snap
  const cached = cachedBytes(file)
  if (cached === undefined) throw new BenchError(`fincore ${file}: cannot tell its bytes in the page cache (util-linux fincore is needed)`)
  return {
    shmemBytes,
    guestAnonBytes,
    pageCacheBytes: cached,
    hostMemoryBytes: shmemBytes + guestAnonBytes + cached,
    serverAnonBytes: server ? anonBytes(server.pid) : null,
  }
}

/** One round of one mode: the server (faultline modes) is up with a worker per guest before
 * the clock starts; then every guest is launched at once. */
async function runRound(
  mode: CloneMode,
  round: number,
  image: ImagePair,
  socketPath: string,
  opts: ClonesOptions,
): Promise<{ round: CloneRound; cacheDescription: string | null }> {
  const server =
    mode === 'mmap'
      ? undefined
      : await startFaultlineServer({
          snapshotPath: image.snap,
          socketPath,
          policy: opts.policy,
          sessions: opts.guests,
          env: opts.serverEnv,
        })
  const guests: HeldGuest[] = []
  try {
    const input = mode === 'mmap' ? image.raw : image.snap
    if (opts.cache === 'cold') {
      dropPageCache(opts.cold, [input])
      // The guests' check reads the raw image: for faultline it is not an input, so it is kept
      // in the page cache and their check costs a comparison, not a disk read.
      if (mode !== 'mmap') warmPageCache(image.raw)
    } else {
      warmPageCache(image.raw)
      warmPageCache(image.snap)
    }
    const args = [
      '--mib',
      String(opts.mib),
      '--workload',
      workloadArg(opts.workload),
      '--seed',
      String(opts.seed),
      '--verify',
      image.raw,
      '--hold-ms',
      String(HOLD_MS),
    ]
    if (mode === 'mmap') args.push('--source', `mmap:${image.raw}`)
    else args.push('--socket', socketPath, '--map', mode === 'faultline-cache' ? 'cache' : 'anonymous')
    // Each guest waits at a gate once spawned; all are let go together.
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < opts.guests; i++) guests.push(startHeldGuest(args, { gate: true }))
    await Promise.all(guests.map(g => g.gated()))
    const launchMs = Number(process.hrtime.bigint() - t0) / 1e6
    for (const g of guests) g.release()
    let done = 0
    opts.onProgress?.(mode, round, 0, opts.guests)
    const reports: GuestReport[] = await Promise.all(
      guests.map(g =>
        g.report.then(r => {
          opts.onProgress?.(mode, round, ++done, opts.guests)
          return r
        }),
      ),
    )
    if (server) await settledCache(server)
    // Every guest is alive and done: measured now.
    const memory = measureMemory(mode, image, guests, server)
    const maps: Record<string, number> = {}
    for (const r of reports) maps[r.map ?? 'file'] = (maps[r.map ?? 'file'] ?? 0) + 1
    if (mode === 'faultline-cache' && (maps.cache ?? 0) !== opts.guests) {
      throw new BenchError(
        `faultline-cache: ${opts.guests - (maps.cache ?? 0)} of ${opts.guests} guests got anonymous memory, not the decoded cache (${server?.cacheDescription ?? 'no cache'})`,
      )
    }
    await Promise.all(guests.map(g => g.stop()))
    let serverFaults: number | null = null
    if (server) {
      const costs: ServerCost[] = []
      for (let i = 1; i <= opts.guests; i++) costs.push(await server.session(i))
      await server.finish()
      serverFaults = costs.reduce((s, c) => s + c.faults, 0)
    }
    return {
      cacheDescription: server?.cacheDescription ?? null,
      round: {
        round,
        ...memory,
        launchMs,
        allDoneMs: (Math.max(...reports.map(r => r.t0_ns + r.total_ns)) - Math.min(...reports.map(r => r.t0_ns))) / 1e6,
        mismatches: reports.reduce((s, r) => s + r.mismatches, 0),
        verifiedPages: reports.reduce((s, r) => s + r.verified_pages, 0),
        resumeMs: reports.map(r => r.resume_ns / 1e6),
        firstAccessMs: reports.map(r => (r.first_access_ns ?? NaN) / 1e6),
        totalMs: reports.map(r => r.total_ns / 1e6),
        serverFaults,
        maps,
      },
    }
  } catch (err) {
    server?.kill()
    throw err
  } finally {
    await Promise.all(guests.map(g => g.stop()))
  }
}

/** Runs every mode `repeat` times, interleaved, and reports each mode's medians. */
export async function runClones(opts: ClonesOptions): Promise<ClonesResult> {
  if (!Number.isInteger(opts.guests) || opts.guests < 1 || opts.guests > MAX_CLONES)
    throw new BenchError(`--guests: expected 1..${MAX_CLONES}, got ${opts.guests}`)
  const startedAt = new Date().toISOString()
  const loadAvgStart = os.loadavg()
  const image = await ensureImage(opts.imageDir, opts.mib, opts.seed, opts.onImageProgress)
  const socketPath = join(opts.imageDir, `clones-${process.pid}.sock`)
  const rounds = new Map<CloneMode, CloneRound[]>(opts.modes.map(m => [m, []]))
  let cacheDescription: string | null = null
  for (let round = 0; round < opts.repeat; round++) {
    for (const mode of opts.modes) {
      const r = await runRound(mode, round, image, socketPath, opts)
      cacheDescription ??= r.cacheDescription
      rounds.get(mode)!.push(r.round)
      if (r.round.mismatches > 0) opts.log?.(`${mode} round ${round + 1}: ${r.round.mismatches} touched pages differ from the image`)
    }
  }
  const { log: _l, onProgress: _p, onImageProgress: _i, ...options } = opts
  return {
    options,
    machine: benchMachine(loadAvgStart),
    startedAt,
    finishedAt: new Date().toISOString(),
    cacheDescription,
    modes: opts.modes.map(mode => {
      const rs = rounds.get(mode)!
      return {
        mode,
        allDoneMs: median(rs.map(r => r.allDoneMs)),
        hostMemoryBytes: median(rs.map(r => r.hostMemoryBytes)),
        mismatches: rs.reduce((s, r) => s + r.mismatches, 0),
        verifiedPages: rs.reduce((s, r) => s + r.verifiedPages, 0),
        rounds: rs,
      }
    }),
  }
}
