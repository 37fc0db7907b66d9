// Trace-driven simulation of fault policies: replays a trace's access order (every page once,
// in order of first touch, with its thread and time) through the very policy modules `serve`
// loads, against a model of the session (resident set, zero-page runs, region bounds, install
// runs, the start set installed batch by batch while the guest runs, the onIdle budget from
// the trace's quiet gaps), and costs the work with a CostModel.
import { InstallCause, RunList, type FaultInfo, type FaultPolicy, type PolicyContext } from '../policy/policy.js'
import { FaultlineError } from '../errors.js'
import { StartSet } from '../server/start-set.js'
import type { CostModel, StorageTier } from './cost-model.js'
import { TRACE_FLAG_WRITE } from '../trace/format.js'
import type { PageMap } from '../trace/page-map.js'
import { timeOrder, type Trace } from '../trace/reader.js'

/** A trace the simulator cannot run (its regions, a page map not of its snapshot, a model
 * without the storage tier asked for). */
export class SimulationError extends FaultlineError {
  override readonly code: string = 'FL_ERR_SIMULATION'
}

/** Largest run one install covers: MAX_RUN_BYTES in src/server/session.ts (checked by a test). */
export const SIM_MAX_RUN_BYTES = 2 * 1024 * 1024
/** Pages of background work the session asks onIdle for at a time (its IDLE_BATCH_PAGES). */
export const SIM_IDLE_BATCH_PAGES = 256
/** Pages of the start set the session installs between two looks at the uffd (its
 * START_BATCH_PAGES). */
export const SIM_START_BATCH_PAGES = 64

const ABSENT = 0,
  PRESENT = 1,
  OUTSIDE = 2

/** A trace's access order: each snapshot page once, in order of first touch. */
export interface AccessOrder {
  source: string
  length: number
  page: Uint32Array
  threadId: Uint32Array
  /** ns since resume, as recorded. */
  timeNs: Float64Array
  write: Uint8Array
  /** Time the guest ran without waiting for the server right before this access, ns: the
   * recorded gap since the previous fault's service ended. The server is idle then. */
  gapNs: Float64Array
  threads: number
  /** Faulted pages outside the trace's regions, left out. */
  skipped: number
}

/** What the simulated session knows of the guest and the snapshot. */
export interface SimSpace {
  pageSize: number
  pageCount: number
  regions: ReadonlyArray<{ address: number; firstPage: number; pageCount: number }>
  /** 0 zero, 1 LZ4, 2 raw; and stored bytes per page. */
  kinds: Uint8Array
  storedBytes: Uint32Array
  chunkPages: number
  /** Where the kinds came from, or how they were assumed. */
  pagesFrom: string
}

/** The access order of `t`'s fault records. Complete only for a trace recorded under a policy
 * that installs nothing before a fault (ondemand): a page another policy prefetched and the
 * guest then touched left no fault, so its touch is not in the trace. */
export function accessOrder(t: Trace): AccessOrder {
  const order = timeOrder(t)
  const seen = new Set<number>()
  const regions = t.header.regions
  const inRegion = (p: number): boolean => regions.some(r => p >= r.firstPage && p < r.firstPage + r.pageCount)
  const idx: number[] = []
  const gaps: number[] = []
  let skipped = 0
  let busyUntil = 0
  // Quiet time before a fault that is not a first touch (a second thread on the same page)
  // still belongs to the next first touch.
  let quiet = 0
  for (const i of order) {
    if (t.cause[i] !== InstallCause.Fault) continue
    const p = t.page[i]
    const time = t.timeNs[i]
    quiet += Math.max(0, time - busyUntil)
    busyUntil = Math.max(busyUntil, time + t.latencyNs[i])
    if (seen.has(p)) continue
    seen.add(p)
    if (!inRegion(p)) {
      skipped++
      continue
    }
    idx.push(i)
    gaps.push(quiet)
    quiet = 0
  }
  const n = idx.length
  const a: AccessOrder = {
    source: t.path,
    length: n,
    page: new Uint32Array(n),
    threadId: new Uint32Array(n),
    timeNs: new Float64Array(n),
    write: new Uint8Array(n),
    gapNs: Float64Array.from(gaps),
    threads: 0,
    skipped,
  }
  const threads = new Set<number>()
  for (let k = 0; k < n; k++) {
    const i = idx[k]
    a.page[k] = t.page[i]
    a.threadId[k] = t.threadId[i]
    a.timeNs[k] = t.timeNs[i]
    a.write[k] = t.flags[i] & TRACE_FLAG_WRITE
    threads.add(t.threadId[i])
  }
  a.threads = threads.size
  return a
}

/** Stored bytes per page assumed when no page map is given: half a page, every page LZ4. */
export const UNKNOWN_PAGE_STORED_FRACTION = 0.5

/** The simulated session's view of `t`'s guest: its regions, and page kinds from `map` (the
 * snapshot the trace was recorded on) or, without one, every page LZ4 of half a page. */
export function simSpace(t: Trace, map?: PageMap): SimSpace {
  const h = t.header
  if (h.snapshotPages < 1) throw new SimulationError(`${t.path}: the trace records a snapshot of 0 pages`)
  for (const r of h.regions) {
    if (r.firstPage + r.pageCount > h.snapshotPages) {
      throw new SimulationError(`${t.path}: region at snapshot page ${r.firstPage} (${r.pageCount} pages) runs past the snapshot's ${h.snapshotPages} pages`)
    }
  }
  if (map) {
    if (map.pageSize !== h.pageSize || map.pageCount !== h.snapshotPages) {
      throw new SimulationError(
        `${map.source}: ${map.pageCount} pages of ${map.pageSize} bytes, but ${t.path} was recorded on a snapshot of ${h.snapshotPages} pages of ${h.pageSize}: not its snapshot`,
      )
    }
    return {
      pageSize: h.pageSize,
      pageCount: h.snapshotPages,
      regions: h.regions,
      kinds: map.kinds,
      storedBytes: map.storedBytes,
      chunkPages: map.chunkPages,
      pagesFrom: map.source,
    }
  }
  const stored = Math.round(h.pageSize * UNKNOWN_PAGE_STORED_FRACTION)
  return {
    pageSize: h.pageSize,
    pageCount: h.snapshotPages,
    regions: h.regions,
    kinds: new Uint8Array(h.snapshotPages).fill(1),
    storedBytes: new Uint32Array(h.snapshotPages).fill(stored),
    chunkPages: 64,
    pagesFrom: `none (every page taken as LZ4 with ${stored} bytes stored: give --snapshot or --page-map for the real kinds)`,
  }
}

export interface PolicySimulation {
  trace: string
  /** The spec asked for, and the policy's own name. */
  spec: string
  policy: string
  accesses: number
  faults: number
  pagesInstalled: number
  pagesByCause: { fault: number; prefetch: number; background: number }
  /** Installed by onStart, before the guest resumed (a policy with startBeforeResume). */
  pagesBeforeResume: number
  /** Installed from onStart's start set once the guest ran, batch by batch between faults. */
  pagesStartSet: number
  /** Accesses that found their page in a start batch still being installed: the guest
   * waited for its install (no fault counted, as in the session). */
  startSetWaits: number
  /** Installed, never touched by the trace's accesses. */
  wastedPages: number
  zeroPages: number
  installs: number
  reads: number
  bytesRead: number
  /** Remote tier: chunks fetched. */
  chunksFetched: number
  /** The guest's estimated wait for the server: before resume + fault stalls + faults that
   * waited for a background batch in progress + waits on the start set (faults behind a start
   * batch, pages still being installed). Work inside quiet gaps is free. */
  estimatedMs: number
  estimate: { beforeResumeMs: number; faultStallMs: number; idleWaitMs: number; startSetWaitMs: number; backgroundMs: number; startSetMs: number }
  idleCalls: number
}

/** The session model one policy runs against; implements the policy's view (PolicyContext). */
class SimSession implements PolicyContext {
  readonly pageSize: number
  readonly pageCount: number
  readonly ranges: Array<{ firstPage: number; pageCount: number }>
  readonly state: Uint8Array
  /** 1 at the first page of each region: an install never crosses it. */
  private readonly regionStart: Uint8Array
  private readonly kinds: Uint8Array
  private readonly stored: Uint32Array
  private readonly maxRunPages: number
  private readonly chunkPages: number
  private readonly fetched: Uint8Array
  private readonly model: CostModel
  private readonly byteNs: number
  private readonly remote: boolean
  readonly installedByCause = [0, 0, 0]
  readonly installedMask: Uint8Array
  /** With a start set: when each page's install finishes, ns since resume (0: at once). */
  readyAt: Float64Array | undefined
  zeroPages = 0
  installs = 0
  reads = 0
  bytesRead = 0
  chunksFetched = 0

  constructor(space: SimSpace, model: CostModel, tier: StorageTier) {
    this.pageSize = space.pageSize
    this.pageCount = space.pageCount
    this.ranges = space.regions.map(r => ({ firstPage: r.firstPage, pageCount: r.pageCount }))
    this.state = new Uint8Array(space.pageCount).fill(OUTSIDE)
    this.regionStart = new Uint8Array(space.pageCount + 1)
    for (const r of space.regions) {
      this.state.fill(ABSENT, r.firstPage, r.firstPage + r.pageCount)
      this.regionStart[r.firstPage] = 1
      this.regionStart[r.firstPage + r.pageCount] = 1
    }
    this.installedMask = new Uint8Array(space.pageCount)
    this.kinds = space.kinds
    this.stored = space.storedBytes
    this.maxRunPages = Math.max(1, SIM_MAX_RUN_BYTES / space.pageSize)
    this.chunkPages = space.chunkPages
    this.model = model
    this.remote = tier === 'remote'
    if (this.remote && model.remoteChunkNs === null)
      throw new SimulationError('--storage remote: the cost model has no remote constants (remoteChunkNs is null): measure them or pick warm or cold')
    this.byteNs = model.byteNs[tier]
    this.fetched = new Uint8Array(this.remote ? Math.ceil(space.pageCount / space.chunkPages) : 0)
  }

  isResident(page: number): boolean {
    return !(page >= 0 && page < this.pageCount) || this.state[page] !== ABSENT
  }

  kindOf(page: number): number {
    return page >= 0 && page < this.pageCount ? this.kinds[page] : 0
  }

  /** Installs the absent in-region pages of `plan` as the session does (runs of one kind, at
   * most maxRunPages, never across a region's edge); returns the cost in ns. With `startNs`
   * (a start batch begun then), each page's readyAt is when its install finishes. */
  apply(plan: RunList, startNs = -1): number {
    const readyAt = startNs >= 0 ? this.readyAt : undefined
    let ns = 0
    const state = this.state
    for (let r = 0; r < plan.length; r++) {
      const cause = plan.cause[r]
      let i = Math.max(0, plan.first[r])
      const end = Math.min(this.pageCount, plan.first[r] + plan.count[r])
      while (i < end) {
        if (state[i] !== ABSENT) {
          i++
          continue
        }
        const zero = this.kinds[i] === 0
        let j = i + 1
        const limit = Math.min(end, i + this.maxRunPages)
        while (j < limit && state[j] === ABSENT && this.regionStart[j] === 0 && (this.kinds[j] === 0) === zero) j++
        ns += this.install(i, j, zero)
        for (let p = i; p < j; p++) {
          state[p] = PRESENT
          this.installedMask[p] = 1
        }
        if (readyAt !== undefined) readyAt.fill(startNs + ns, i, j)
        this.installedByCause[cause] += j - i
        i = j
      }
    }
    return ns
  }

  private install(i: number, j: number, zero: boolean): number {
    const m = this.model
    const n = j - i
    this.installs++
    if (zero) {
      this.zeroPages += n
      return m.zeroInstallNs + n * m.zeroPageNs
    }
    let bytes = 0
    for (let p = i; p < j; p++) bytes += this.stored[p]
    this.reads++
    this.bytesRead += bytes
    let ns = m.readNs + n * m.decodePageNs + m.installNs + n * m.copyPageNs
    if (this.remote) {
      // A remote source fetches whole chunks; a chunk once fetched stays (an ample cache).
      ns += bytes * m.byteNs.warm
      for (let c = Math.floor(i / this.chunkPages), last = Math.floor((j - 1) / this.chunkPages); c <= last; c++) {
        if (this.fetched[c]) continue
        this.fetched[c] = 1
        this.chunksFetched++
        let chunkBytes = 0
        for (let p = c * this.chunkPages, e = Math.min(this.pageCount, p + this.chunkPages); p < e; p++) chunkBytes += this.stored[p]
        ns += m.remoteChunkNs! + chunkBytes * this.byteNs
      }
    } else {
      ns += bytes * this.byteNs
    }
    return ns
  }
}

export interface SimulateOptions {
  model: CostModel
  tier: StorageTier
  /** The spec the policy was made from (reports show it). */
  spec?: string
  /** Multiplies the guest's running time between faults (default 1, as recorded): 0.05 asks
   * what a guest 20 times faster would see. */
  gapScale?: number
}

/** Runs `access` through `policy` (a fresh instance: policies keep state) and reports.
 *
 * Two clocks, ns since resume: the guest's (`now`: each access comes its recorded gap after
 * the guest last stopped waiting) and the server's (`serverAt`: when it is done with what it
 * began). A fault is served once the server is free. The server works, whenever it is not
 * behind the guest, on onStart's start set (batch by batch, in its order, moving to where a
 * fault shows the guest to be: the session's StartSet itself), then on onIdle's batches; after
 * each fault it installs one start batch before it looks at the next, as the session's loop
 * does. An access to a page of a start batch still going in waits for that page's install. */
export function simulatePolicy(policy: FaultPolicy, access: AccessOrder, space: SimSpace, opts: SimulateOptions): PolicySimulation {
  const s = new SimSession(space, opts.model, opts.tier)
  const model = opts.model
  const plan = new RunList(64)
  const regions = space.regions
  const installed = (): number => s.installedByCause[0] + s.installedByCause[1] + s.installedByCause[2]
  let beforeResumeNs = 0
  const startSet = new StartSet(space.pageCount)
  if (policy.onStart) {
    plan.clear()
    policy.onStart(s, plan)
    if (policy.startBeforeResume) beforeResumeNs = s.apply(plan)
    else for (let r = 0; r < plan.length; r++) startSet.add(plan.first[r], plan.count[r], plan.cause[r] as InstallCause)
  }
  const pagesBeforeResume = installed()
  let starting = startSet.pending
  if (starting) s.readyAt = new Float64Array(space.pageCount)
  const readyAt = s.readyAt
  const fault: FaultInfo = { page: 0, address: 0, write: false, threadId: 0, timeNs: 0 }
  const state = s.state
  const pages = access.page,
    gaps = access.gapNs
  let idle = typeof policy.onIdle === 'function'
  let faults = 0,
    stallNs = 0,
    idleWaitNs = 0,
    startWaitNs = 0,
    backgroundNs = 0,
    startSetNs = 0,
    idleCalls = 0
  let pagesStartSet = 0,
    startSetWaits = 0
  let now = 0,
    serverAt = 0
  /** The server has just answered the uffd: a start batch goes in before it looks again, even
   * if the guest's next fault comes at once. */
  let turn = false
  /** Whether the server's latest work was a start batch (a fault waiting behind it is a wait
   * on the start set) or background work. */
  let lastWasStart = false
  const startBatch = (): void => {
    plan.clear()
    starting = startSet.nextBatch(plan, SIM_START_BATCH_PAGES)
    const before = installed()
    const ns = s.apply(plan, serverAt)
    pagesStartSet += installed() - before
    startSetNs += ns
    serverAt += ns
    lastWasStart = true
  }
  // A recorded gap after a fault holds that fault's round trip outside the server's recorded
  // latency (the kernel's fault path, the wake-up): the model's faultNs, charged here as a
  // stall. The rest is the guest's own running time.
  const overheadNs = model.faultNs
  const scale = opts.gapScale ?? 1
  for (let k = 0; k < access.length; k++) {
    now += scale * (k === 0 ? gaps[0] : Math.max(0, gaps[k] - overheadNs))
    while (starting && (serverAt < now || (turn && serverAt <= now))) {
      turn = false
      startBatch()
    }
    turn = false
    while (!starting && idle && serverAt < now) {
      plan.clear()
      const more = policy.onIdle!(s, plan, SIM_IDLE_BATCH_PAGES)
      idleCalls++
      const ns = plan.length ? s.apply(plan) : 0
      backgroundNs += ns
      serverAt += ns
      lastWasStart = false
      if (!more) idle = false
      else if (ns === 0) {
        serverAt = now
        break
      } // asked for nothing this time: it gets the next gap
    }
    const p = pages[k]
    if (state[p] !== ABSENT) {
      if (readyAt !== undefined && readyAt[p] > now) {
        // Its start batch is still going in: the install wakes the guest, and the session,
        // after the batch, finds the page present and answers the fault as installed.
        startSetWaits++
        startWaitNs += readyAt[p] - now
        now = readyAt[p]
        serverAt += model.zeroInstallNs
        turn = true
      }
      continue
    }
    faults++
    const begin = Math.max(now, serverAt)
    if (begin > now) {
      if (lastWasStart) startWaitNs += begin - now
      else idleWaitNs += begin - now
    }
    fault.page = p
    fault.address = addressOf(regions, p, space.pageSize)
    fault.write = access.write[k] !== 0
    fault.threadId = access.threadId[k]
    fault.timeNs = access.timeNs[k]
    plan.clear()
    plan.add(p, 1, InstallCause.Fault)
    policy.onFault(fault, s, plan)
    if (starting) startSet.onFault(p)
    const ns = model.faultNs + s.apply(plan)
    stallNs += ns
    now = begin + ns
    serverAt = now
    turn = true
  }
  // The guest lives on past its last recorded access: the rest of the start set goes in.
  while (starting) startBatch()
  const [byFault, byPrefetch, byBackground] = s.installedByCause
  const total = byFault + byPrefetch + byBackground
  let touchedInstalled = 0
  const mask = s.installedMask
  for (let k = 0; k < access.length; k++) touchedInstalled += mask[pages[k]]
  const ms = (ns: number): number => ns / 1e6
  return {
    trace: access.source,
    spec: opts.spec ?? policy.name,
    policy: policy.name,
    accesses: access.length,
    faults,
    pagesInstalled: total,
    pagesByCause: { fault: byFault, prefetch: byPrefetch, background: byBackground },
    pagesBeforeResume,
    pagesStartSet,
    startSetWaits,
    wastedPages: total - touchedInstalled,
    zeroPages: s.zeroPages,
    installs: s.installs,
    reads: s.reads,
    bytesRead: s.bytesRead,
    chunksFetched: s.chunksFetched,
    estimatedMs: ms(beforeResumeNs + stallNs + idleWaitNs + startWaitNs),
    estimate: {
      beforeResumeMs: ms(beforeResumeNs),
      faultStallMs: ms(stallNs),
      idleWaitMs: ms(idleWaitNs),
      startSetWaitMs: ms(startWaitNs),
      backgroundMs: ms(backgroundNs),
      startSetMs: ms(startSetNs),
    },
    idleCalls,
  }
}

function addressOf(regions: SimSpace['regions'], page: number, pageSize: number): number {
  for (let i = 0; i < regions.length; i++) {
    const r = regions[i]
    if (page >= r.firstPage && page < r.firstPage + r.pageCount) return r.address + (page - r.firstPage) * pageSize
  }
  return 0
}
