// ondemand: install only the faulting page.
import type { PolicyArgs } from './args.js'
import type { FaultPolicy } from './policy.js'

export class OnDemandPolicy implements FaultPolicy {
  static fromArgs(args: PolicyArgs): OnDemandPolicy {
    args.none()
    return new OnDemandPolicy()
  }

  readonly name = 'ondemand'

  // The session has already planned the faulting page.
  onFault(): void {}
}
