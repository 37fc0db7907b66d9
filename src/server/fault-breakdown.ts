// Optional per-stage timers of the fault loop (FAULTLINE_BREAKDOWN=1 in the server's
// environment): where a fault's service time goes, and how many system calls it takes.
// Off by default: each timed stage costs one performance.now() call.
import { env } from 'node:process'
import { getHeapSpaceStatistics } from 'node:v8'

/** Read once at load: a constant the JIT folds, so disabled timers cost nothing. */
export const BREAKDOWN_ENABLED = env.FAULTLINE_BREAKDOWN === '1'

export interface FaultBreakdownSummary {
  /** poll(2) calls, read(2) calls on the uffd (and how many found nothing). */
  polls: number
  uffdReads: number
  emptyReads: number
  /** Time in read(2) of the uffd, ns in all. */
  uffdReadNs: number
  /** Runs read from the page source (pread + LZ4 + CRC) and the time they took, ns. */
  sourceReads: number
  sourceReadNs: number
  /** UFFDIO_COPY / UFFDIO_ZEROPAGE ioctls and their time, ns. */
  copies: number
  copyNs: number
  zeropages: number
  zeropageNs: number
  /** Sum over faults of read share + handling (what the latency histogram measures + read). */
  serviceNs: number
  faults: number
  /** Growth of the young generation of the session's thread while it served, bytes: what
   * the fault path allocated, if no garbage collection ran meanwhile (negative if one did;
   * run the server with a young generation no session fills: --min-semi-space-size=128
   * --max-semi-space-size=128 --expose-gc, as `bench faults` does). */
  heapGrowthBytes: number
  /** The same from the WARM_FAULTS-th fault on, and the faults since: the steady state, once
   * V8 has optimised the read loop (the rehearsal warms the install path, not the read). */
  warmHeapGrowthBytes: number
  warmFaults: number
}

/** Faults after which the breakdown takes its steady-state heap reading. */
export const WARM_FAULTS = 4096

export class FaultBreakdown {
  polls = 0
  uffdReads = 0
  emptyReads = 0
  uffdReadNs = 0
  sourceReads = 0
  sourceReadNs = 0
  copies = 0
  copyNs = 0
  zeropages = 0
  zeropageNs = 0
  serviceNs = 0
  faults = 0
  private heapAtStart = 0
  private heapAtWarm = -1

  start(): void {
    // With --expose-gc, start from an empty young generation: no scavenge during the session.
    (globalThis as { gc?: () => void }).gc?.()
    this.heapAtStart = newSpaceUsed()
  }

  /** Counts a served fault; takes the steady-state heap reading at the WARM_FAULTS-th. */
  countFault(): void {
    if (++this.faults === WARM_FAULTS) this.heapAtWarm = newSpaceUsed()
  }

  finish(): FaultBreakdownSummary {
    const used = newSpaceUsed()
    const heapGrowthBytes = used - this.heapAtStart
    const warm = this.heapAtWarm >= 0
    const warmHeapGrowthBytes = warm ? used - this.heapAtWarm : 0
    const warmFaults = warm ? this.faults - WARM_FAULTS : 0
    const { polls, uffdReads, emptyReads, uffdReadNs, sourceReads, sourceReadNs, copies, copyNs, zeropages, zeropageNs, serviceNs, faults } = this
    return { polls, uffdReads, emptyReads, uffdReadNs, sourceReads, sourceReadNs, copies, copyNs, zeropages, zeropageNs, serviceNs, faults, heapGrowthBytes, warmHeapGrowthBytes, warmFaults }
  }
}

function newSpaceUsed(): number {
  for (const s of getHeapSpaceStatistics()) if (s.space_name === 'new_space') return s.space_used_size
  return 0
}
