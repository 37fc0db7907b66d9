// Faults and runs waiting for their chunk from an object store: a fault whose data is not local
// yet is kept (with when it was read) and served when the store signals the chunk's arrival;
// prefetch and background runs are kept too, within a bound, and installed when their chunks
// come. A fault whose chunk cannot be had fails closed.
import { InstallCause, RunList } from '../policy/policy.js'
import type { DeferredPageSource } from '../store/deferred-source.js'
import { CUR_ADDRESS, type GuestInstaller, type RunParking } from './installer.js'
import type { MappedRegion } from './guest-memory.js'
import { K_REMOTE_WAITS } from './session-meters.js'

/** Prefetch runs kept waiting for their chunk (more are fetched, not installed); background
 * work pauses while this many wait, so it goes at the pace of the fetches. */
export const PARKED_RUN_LIMIT = 256,
  PARKED_IDLE_LIMIT = 32
/** How often waiting faults are re-checked without a wake-up (a safety net: the store signals
 * every completion). */
export const REMOTE_RECHECK_MS = 1000

/** What the session does with what arrived. */
export interface ArrivalHandler {
  /** Serves the fault at `address`, read at `t0` (ms), now that its data may be local. */
  retryFault(address: number, t0: number): void
  /** Installs runs whose chunks may have arrived. */
  installParked(runs: RunList): void
}

export class RemoteWaits implements RunParking {
  readonly source: DeferredPageSource
  /** Faults waiting for a chunk, as (guest address, fault time) pairs; `retrying` is the list
   * being retried while chunks arrive. */
  private waitingFaults: number[] = []
  private retrying: number[] = []
  private readonly parkedRuns = new RunList(64)
  private retryingWaits = false
  /** Time of the fault being installed, for park(). */
  faultT0 = 0

  constructor(
    source: DeferredPageSource,
    private readonly installer: GuestInstaller,
    private readonly counters: Float64Array,
  ) {
    this.source = source
  }

  /** Anything waiting: the session polls with a timeout (REMOTE_RECHECK_MS) meanwhile. */
  get waiting(): boolean {
    return this.waitingFaults.length + this.parkedRuns.length > 0
  }
  /** Background work pauses while this is true. */
  get busy(): boolean {
    return this.parkedRuns.length >= PARKED_IDLE_LIMIT
  }

  park(region: MappedRegion, i: number, j: number, cause: InstallCause, holdsFaultRun: boolean): number {
    const installer = this.installer
    const faultAddress = holdsFaultRun ? installer.current[CUR_ADDRESS] : -1
    const remote = this.source
    const first = region.firstPage + i
    // A normal page waits for one chunk at a time; a huge page for all of its chunks.
    const end = region.pagesPerGuestPage > 1 ? j : Math.min(j, i + remote.chunkPages - (first % remote.chunkPages))
    const count = end - i
    const dst = region.start + i * installer.pageSize
    const holdsFault = faultAddress >= 0 && faultAddress >= dst && faultAddress < dst + count * installer.pageSize
    const failure = remote.failure(first, count)
    if (failure !== undefined) {
      // A prefetch that could not be had is dropped; a fault cannot be served: fail closed.
      if (holdsFault) this.fail(failure, first, count, faultAddress)
      return end
    }
    remote.request(first, count, holdsFault ? InstallCause.Fault : cause)
    if (holdsFault) {
      this.waitingFaults.push(faultAddress, this.faultT0)
      installer.faultParked = true
      if (!this.retryingWaits) this.counters[K_REMOTE_WAITS]++
    } else if (this.parkedRuns.length < PARKED_RUN_LIMIT) {
      this.parkedRuns.add(first, count, cause)
    }
    return end
  }

  /** Chunks arrived or failed (or the safety re-check): retry the waiting faults, then the
   * parked runs. Whatever is still missing parks again. */
  onReady(handler: ArrivalHandler, plan: RunList): void {
    this.source.drainReady()
    if (this.waitingFaults.length > 0) {
      const waiting = this.waitingFaults
      this.waitingFaults = this.retrying
      this.retrying = waiting
      this.retryingWaits = true
      for (let k = 0; k < waiting.length && this.installer.stopped === ''; k += 2) handler.retryFault(waiting[k], waiting[k + 1])
      this.retryingWaits = false
      waiting.length = 0
    }
    if (this.parkedRuns.length > 0 && this.installer.stopped === '') {
      const parked = this.parkedRuns
      plan.clear()
      for (let r = 0; r < parked.length; r++) plan.add(parked.first[r], parked.count[r], parked.cause[r] as InstallCause)
      parked.clear()
      handler.installParked(plan)
    }
  }

  /** The object store could not deliver pages a fault waits for (retries exhausted, missing
   * object, bad credentials...): every waiting fault's page is poisoned where the guest allows
   * it, so no thread ever reads a zero or wrong page, and the session ends (which closes the
   * guest's connection). */
  private fail(message: string, first: number, count: number, faultAddress: number): void {
    const installer = this.installer
    installer.log(`cannot serve pages ${first}..${first + count - 1}: ${message}`)
    let poisoned = this.poisonAt(faultAddress)
    for (let k = 0; k < this.waitingFaults.length; k += 2) poisoned = this.poisonAt(this.waitingFaults[k]) && poisoned
    for (let k = 0; k < this.retrying.length; k += 2) poisoned = this.poisonAt(this.retrying[k]) && poisoned
    installer.stopped = `object store error: ${message}`
    // A fault left neither served nor poisoned waits for ever: the guest must be failed closed.
    if (!poisoned) installer.unservable = true
  }

  /** Poisons the page a fault at `address` waits on; false when it could not be. */
  private poisonAt(address: number): boolean {
    const installer = this.installer
    const region = installer.memory.regionAt(address)
    if (region === undefined) return true
    const unit = region.pagesPerGuestPage
    let i = Math.floor((address - region.start) / installer.pageSize)
    i -= i % unit
    return installer.canPoison && installer.poison(region, i, unit)
  }
}
