// Errors for policy selection and arguments.
import { UsageError } from '../errors.js'

/** A `--policy` that names no policy, a module that is not one, or arguments a policy refuses:
 * a usage error (exit status 2). */
export class PolicyArgumentError extends UsageError {
  override readonly code: string = 'FL_ERR_POLICY_ARGUMENT'
}
