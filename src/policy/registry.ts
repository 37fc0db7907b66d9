// Maps `--policy name[:args]` to a policy: built-ins by name, or a user module by path.
import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { createAdaptive } from './adaptive.js'
import { createBackground } from './background.js'
import { createEager } from './eager.js'
import { createOnDemand } from './ondemand.js'
import type { FaultPolicy, PolicyFactory } from './policy.js'
import { createReadahead } from './readahead.js'
import { PolicyArgumentError } from './errors.js'
import { createWorkingSet } from './workingset.js'

export { PolicyArgumentError }

export const BUILTIN_POLICIES: Record<string, PolicyFactory> = {
  ondemand: createOnDemand,
  readahead: createReadahead,
  eager: createEager,
  adaptive: createAdaptive,
  workingset: createWorkingSet,
  background: createBackground,
}

function isModulePath(spec: string): boolean {
  return spec.startsWith('./') || spec.startsWith('../') || isAbsolute(spec) || /\.(m?js|ts)(:|$)/.test(spec)
}

/** Creates the policy named by `spec`; `cwd` resolves a user module's relative path. */
export async function createPolicy(spec: string, cwd = process.cwd()): Promise<FaultPolicy> {
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
    return validate(await factory(args), path)
  }
  const colon = spec.indexOf(':')
  const name = colon < 0 ? spec : spec.slice(0, colon)
  const args = colon < 0 ? undefined : spec.slice(colon + 1)
  const factory = BUILTIN_POLICIES[name]
  if (!factory) {
    throw new PolicyArgumentError(`--policy: unknown policy '${name}' (built in: ${Object.keys(BUILTIN_POLICIES).join(', ')}; or a path to a .js/.ts module)`)
  }
  return validate(await factory(args), name)
}

function validate(policy: FaultPolicy, where: string): FaultPolicy {
  if (!policy || typeof policy.onFault !== 'function' || typeof policy.name !== 'string') {
    throw new PolicyArgumentError(`--policy ${where}: the factory must return an object with a name and an onFault(fault, ctx, plan) method`)
  }
  return policy
}
