// A page-state model of the session for policy unit tests: applies a policy's plans to a
// residency map the way the session does (absent pages in the guest's ranges are installed,
// the rest skipped), without userfaultfd.
import { InstallCause, RunList, type FaultInfo, type FaultPolicy, type PolicyContext } from '../../src/policy/policy.js'

export class SimContext implements PolicyContext {
  readonly pageSize = 4096
  readonly pageCount: number
  readonly ranges: Array<{ firstPage: number; pageCount: number }>
  readonly resident: Uint8Array
  /** Pages installed per cause. */
  readonly installed = [0, 0, 0]
  /** Every page installed, in install order. */
  readonly log: number[] = []

  constructor(pageCount: number, ranges = [{ firstPage: 0, pageCount }]) {
    this.pageCount = pageCount
    this.ranges = ranges
    this.resident = new Uint8Array(pageCount)
  }

  inRange(page: number): boolean {
    return this.ranges.some(r => page >= r.firstPage && page < r.firstPage + r.pageCount)
  }

  isResident(page: number): boolean {
    return !this.inRange(page) || this.resident[page] === 1
  }
  kindOf(): number {
    return 1
  }

  /** Installs every absent in-range page of the plan; returns how many. */
  apply(plan: RunList): number {
    let n = 0
    for (let r = 0; r < plan.length; r++) {
      for (let p = plan.first[r]; p < plan.first[r] + plan.count[r]; p++) {
        if (this.isResident(p)) continue
        this.resident[p] = 1
        this.installed[plan.cause[r]]++
        this.log.push(p)
        n++
      }
    }
    return n
  }
}

export interface SimResult {
  faults: number
  installed: number
  prefetched: number
  untouched: number
}

/** Runs `accesses` (page, thread) against `policy`: an access to an absent page faults. */
export function simulate(policy: FaultPolicy, ctx: SimContext, accesses: Array<[page: number, thread: number]>): SimResult {
  const plan = new RunList(4)
  if (policy.onStart) {
    plan.clear()
    policy.onStart(ctx, plan)
    ctx.apply(plan)
  }
  const fault: FaultInfo = { page: 0, address: 0, write: false, threadId: 0, timeNs: 0 }
  let faults = 0
  const touched = new Set<number>()
  for (const [page, thread] of accesses) {
    touched.add(page)
    if (ctx.isResident(page)) continue
    faults++
    fault.page = page
    fault.address = page * 4096
    fault.threadId = thread
    plan.clear()
    plan.add(page, 1, InstallCause.Fault)
    policy.onFault(fault, ctx, plan)
    ctx.apply(plan)
  }
  const installed = ctx.installed[0] + ctx.installed[1] + ctx.installed[2]
  return { faults, installed, prefetched: ctx.installed[1], untouched: installed - touched.size }
}

export const sequential = (n: number, thread = 1): Array<[number, number]> => Array.from({ length: n }, (_, i) => [i, thread])
