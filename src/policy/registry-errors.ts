// Errors for policy selection and arguments.
import { FaultlineError } from '../errors.js'

export class PolicyArgumentError extends FaultlineError {}
