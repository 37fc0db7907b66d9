// readahead[:N]: the faulting page and the next N pages (default 15), as one run.
import type { PolicyArgs } from './args.js'
import { InstallCause, type FaultInfo, type FaultPolicy, type PolicyContext, type RunList } from './policy.js'

export const READAHEAD_DEFAULT_WINDOW = 15

export class ReadaheadPolicy implements FaultPolicy {
  static fromArgs(args: PolicyArgs): ReadaheadPolicy {
    return new ReadaheadPolicy(args.int('a page count', 0, 65536, READAHEAD_DEFAULT_WINDOW))
  }

  readonly name: string
  /** Pages installed after the faulting one. */
  readonly window: number

  constructor(window: number) {
    this.window = window
    this.name = `readahead:${window}`
  }

  onFault(fault: FaultInfo, _ctx: PolicyContext, plan: RunList): void {
    plan.add(fault.page + 1, this.window, InstallCause.Prefetch)
  }
}
