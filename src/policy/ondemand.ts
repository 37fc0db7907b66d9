// ondemand: install only the faulting page.
import type { FaultPolicy, PolicyFactory } from './policy.js'

export const createOnDemand: PolicyFactory = () => {
  const policy: FaultPolicy = { name: 'ondemand', onFault() {} }
  return policy
}
