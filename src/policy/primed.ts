// primed:TRACE[+N]: a working set learned from an earlier run installed before the guest is
// acknowledged (as workingset:TRACE), then every fault outside it read ahead N pages (as
// readahead:N, default 15). On the real-program traces a set learned on run 1 leaves a part of
// run 2 outside it; reading ahead there beat both parents (docs/workbench.md, point 6).
import { createReadahead } from './readahead.js'
import { PolicyArgumentError } from './registry-errors.js'
import { createWorkingSet, type WorkingSetPolicy } from './workingset.js'
import type { FaultInfo, FaultPolicy, PolicyContext, PolicyFactory, RunList } from './policy.js'

export const PRIMED_DEFAULT_WINDOW = 15

export class PrimedPolicy implements FaultPolicy {
  readonly name: string
  constructor(private readonly set: WorkingSetPolicy, private readonly ahead: FaultPolicy, readonly window: number, trace: string) {
    this.name = `primed:${trace}+${window}`
  }

  onStart(ctx: PolicyContext, plan: RunList): void { this.set.onStart(ctx, plan) }

  onFault(fault: FaultInfo, ctx: PolicyContext, plan: RunList): void { this.ahead.onFault(fault, ctx, plan) }
}

export const createPrimed: PolicyFactory = async (args) => {
  if (!args) throw new PolicyArgumentError('primed: expected a trace file: --policy primed:TRACE[+N]')
  const m = /^(.*)\+(\d+)$/.exec(args)
  const trace = m ? m[1] : args
  const window = m ? Number(m[2]) : PRIMED_DEFAULT_WINDOW
  if (window < 1 || window > 65536) throw new PolicyArgumentError(`primed: N must be 1..65536 pages, got ${window}`)
  const set = await createWorkingSet(trace) as WorkingSetPolicy
  return new PrimedPolicy(set, await createReadahead(String(window)), window, trace)
}
