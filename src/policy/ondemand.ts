// ondemand: install only the faulting page.
import type { FaultPolicy, PolicyFactory } from './policy.js'
import { PolicyArgumentError } from './registry-errors.js'

export const createOnDemand: PolicyFactory = (args) => {
  if (args !== undefined && args !== '') throw new PolicyArgumentError(`ondemand: takes no arguments, got '${args}'`)
  const policy: FaultPolicy = { name: 'ondemand', onFault() {} }
  return policy
}
