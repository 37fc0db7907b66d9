// eager: install the whole snapshot before the guest is acknowledged (decompress everything,
// then run): the `eager-lz4` baseline, and a measure of how fast the server can fill memory.
import type { PolicyArgs } from './args.js'
import { InstallCause, type FaultPolicy, type PolicyContext, type RunList } from './policy.js'

export class EagerPolicy implements FaultPolicy {
  static fromArgs(args: PolicyArgs): EagerPolicy {
    args.none()
    return new EagerPolicy()
  }

  readonly name = 'eager'
  readonly startBeforeResume = true

  onStart(ctx: PolicyContext, plan: RunList): void {
    // One run per region: the session splits it into MAX_RUN_BYTES installs.
    for (const r of ctx.ranges) plan.add(r.firstPage, r.pageCount, InstallCause.Background)
  }

  // Nothing is left to fault on; a fault (e.g. after the guest discarded a page) gets
  // just its page, already planned by the session.
  onFault(): void {}
}
