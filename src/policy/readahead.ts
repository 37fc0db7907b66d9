// readahead:N: the faulting page and the next N pages, as one run.
import { PolicyArgumentError } from './errors.js'
import { InstallCause, type FaultPolicy, type PolicyFactory } from './policy.js'

export const createReadahead: PolicyFactory = (args) => {
  const window = args === undefined ? 15 : Number(args)
  if (!Number.isInteger(window) || window < 0 || window > 65536) {
    throw new PolicyArgumentError(`readahead: expected a page count 0..65536, got '${args}'`)
  }
  const policy: FaultPolicy = {
    name: `readahead:${window}`,
    onFault(fault, _ctx, plan) {
      plan.add(fault.page + 1, window, InstallCause.Prefetch)
    },
  }
  return policy
}
