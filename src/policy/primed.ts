// primed:TRACE[+N]: a working set learned from an earlier run installed from the start, once the
// guest runs (as workingset:TRACE), then every fault outside it read ahead N pages (as
// readahead:N, default 15). On the real-program traces a set learned on run 1 leaves a part of
// run 2 outside it; reading ahead there beat both parents (docs/workbench.md, point 6).
import { PolicyArgs } from './args.js'
import type { FaultInfo, FaultPolicy, PolicyContext, RunList, SnapshotShape } from './policy.js'
import { ReadaheadPolicy } from './readahead.js'
import { WorkingSetPolicy } from './workingset.js'

export const PRIMED_DEFAULT_WINDOW = 15

export class PrimedPolicy implements FaultPolicy {
  /** TRACE[+N]: an N is the digits after the last `+` (a file name may hold other `+`s). */
  static fromArgs(args: PolicyArgs, snapshot?: SnapshotShape): PrimedPolicy {
    const spec = args.required('a trace file: --policy primed:TRACE[+N]')
    const m = /^(.*)\+(\d+)$/.exec(spec)
    const trace = m ? m[1] : spec
    const window = args.int('an N of', 1, 65536, PRIMED_DEFAULT_WINDOW, { unit: 'pages', piece: m?.[2] })
    const set = WorkingSetPolicy.fromArgs(new PolicyArgs(args.policy, trace), snapshot)
    return new PrimedPolicy(set, new ReadaheadPolicy(window), trace)
  }

  readonly name: string
  readonly window: number

  constructor(
    private readonly set: WorkingSetPolicy,
    private readonly ahead: ReadaheadPolicy,
    trace: string,
  ) {
    this.window = ahead.window
    this.name = `primed:${trace}+${this.window}`
  }

  /** Its working set's trace. */
  get inputFiles(): readonly string[] {
    return this.set.inputFiles
  }

  onStart(ctx: PolicyContext, plan: RunList): void {
    this.set.onStart(ctx, plan)
  }

  onFault(fault: FaultInfo, ctx: PolicyContext, plan: RunList): void {
    this.ahead.onFault(fault, ctx, plan)
  }
}
