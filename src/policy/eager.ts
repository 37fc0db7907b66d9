// eager: install the whole snapshot before the guest is acknowledged (decompress everything,
// then run): the `eager-lz4` baseline, and a measure of how fast the server can fill memory.
import { InstallCause, type FaultPolicy, type PolicyFactory } from './policy.js'
import { PolicyArgumentError } from './errors.js'

export const createEager: PolicyFactory = (args) => {
  if (args !== undefined && args !== '') throw new PolicyArgumentError(`eager: takes no arguments, got '${args}'`)
  const policy: FaultPolicy = {
    name: 'eager',
    onStart(ctx, plan) {
      // One run per region: the session splits it into MAX_RUN_BYTES installs.
      for (const r of ctx.ranges) plan.add(r.firstPage, r.pageCount, InstallCause.Background)
    },
    // Nothing is left to fault on; a fault (e.g. after the guest discarded a page) gets
    // just its page, already planned by the session.
    onFault() {},
  }
  return policy
}
