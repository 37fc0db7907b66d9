// Maps `--policy name[:args]` to a policy: built-ins by name, or a user module by path.
// Every built-in is a FaultPolicy class with a static fromArgs(PolicyArgs): adding one is a
// file of that shape and a line here.
import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { AdaptivePolicy } from './adaptive.js'
import { PolicyArgs } from './args.js'
import { BackgroundPolicy } from './background.js'
import { EagerPolicy } from './eager.js'
import { LearnedPolicy } from './learned.js'
import { PolicyArgumentError } from './errors.js'
import { OnDemandPolicy } from './ondemand.js'
import { PrimedPolicy } from './primed.js'
import { describeError } from '../errors.js'
import type { FaultPolicy, PolicyFactory, SnapshotShape } from './policy.js'
import { ReadaheadPolicy } from './readahead.js'
import { WorkingSetPolicy } from './workingset.js'

export { PolicyArgumentError }

/** A built-in policy class: builds itself from its parsed arguments; `snapshot`, when given,
 * is the snapshot it will serve (to refuse inputs recorded on another). */
export interface BuiltinPolicy {
  fromArgs(args: PolicyArgs, snapshot?: SnapshotShape): FaultPolicy
}

export const BUILTIN_POLICIES: Record<string, BuiltinPolicy> = {
  ondemand: OnDemandPolicy,
  readahead: ReadaheadPolicy,
  eager: EagerPolicy,
  adaptive: AdaptivePolicy,
  workingset: WorkingSetPolicy,
  background: BackgroundPolicy,
  primed: PrimedPolicy,
  learned: LearnedPolicy,
}

function isModulePath(spec: string): boolean {
  return spec.startsWith('./') || spec.startsWith('../') || isAbsolute(spec) || /\.(m?js|ts)(:|$)/.test(spec)
}

/** The module file a `--policy` spec names, resolved; undefined for a built-in policy. */
export function policyModulePath(spec: string, cwd = process.cwd()): string | undefined {
  if (!isModulePath(spec)) return undefined
  const m = /^(.*?\.(?:m?js|ts))(?::(.*))?$/.exec(spec)
  return resolve(cwd, m ? m[1] : spec)
}

/** Creates the policy named by `spec`; `cwd` resolves a user module's relative path. With
 * `snapshot`, a policy may check its inputs against the snapshot to be served. */
export async function createPolicy(spec: string, cwd = process.cwd(), snapshot?: SnapshotShape): Promise<FaultPolicy> {
  if (isModulePath(spec)) {
    const m = /^(.*?\.(?:m?js|ts))(?::(.*))?$/.exec(spec)
    const path = m ? m[1] : spec
    const args = m ? m[2] : undefined
    let mod: Record<string, unknown>
    try {
      mod = await import(pathToFileURL(resolve(cwd, path)).href)
    } catch (err) {
      throw new PolicyArgumentError(`--policy ${path}: cannot load module: ${(err as Error).message.split('\n')[0]}`)
    }
    const factory = (mod.default ?? mod.createPolicy) as PolicyFactory | undefined
    if (typeof factory !== 'function') {
      throw new PolicyArgumentError(`--policy ${path}: module must export a default function (args) => FaultPolicy`)
    }
    let policy: FaultPolicy
    try {
      policy = await factory(args, snapshot)
    } catch (err) {
      throw new PolicyArgumentError(`--policy ${path}: the module's factory threw: ${describeError(err)}`, { cause: err })
    }
    return validate(policy, path)
  }
  const args = PolicyArgs.fromSpec(spec)
  const builtin = Object.hasOwn(BUILTIN_POLICIES, args.policy) ? BUILTIN_POLICIES[args.policy] : undefined
  if (!builtin) {
    throw new PolicyArgumentError(
      `--policy: unknown policy '${args.policy}' (built in: ${Object.keys(BUILTIN_POLICIES).join(', ')}; or a path to a .js/.ts module)`,
    )
  }
  return builtin.fromArgs(args, snapshot)
}

function validate(policy: FaultPolicy, where: string): FaultPolicy {
  if (!policy || typeof policy.onFault !== 'function' || typeof policy.name !== 'string') {
    throw new PolicyArgumentError(`--policy ${where}: the factory must return an object with a name and an onFault(fault, ctx, plan) method`)
  }
  return policy
}
