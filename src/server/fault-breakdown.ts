// Optional per-stage timers of the fault loop (FAULTLINE_BREAKDOWN=1 in the server's
// environment): where a fault's service time goes, and how many system calls it takes.
// Off by default: each timed stage costs one performance.now() call.
import { env } from 'node:process'

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
}

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

  finish(): FaultBreakdownSummary {
    const { polls, uffdReads, emptyReads, uffdReadNs, sourceReads, sourceReadNs, copies, copyNs, zeropages, zeropageNs, serviceNs, faults } = this
    return { polls, uffdReads, emptyReads, uffdReadNs, sourceReads, sourceReadNs, copies, copyNs, zeropages, zeropageNs, serviceNs, faults }
  }
}
