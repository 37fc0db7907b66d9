// Errors of the QEMU layer: one line each, naming the VM or QMP command they concern, so the
// CLI can print them as they are.
import { FaultlineError } from '../errors.js'

/** A QEMU process, its console or a migration did not do what was expected. */
export class VmError extends FaultlineError {
  override readonly code: string = 'FL_ERR_VM'
}

/** QEMU answered a QMP command with an error, or did not answer in time. */
export class QmpError extends VmError {
  override readonly code: string = 'FL_ERR_QMP'
  readonly command: string
  /** QMP's error class (`GenericError`, ...), or `Timeout` / `Closed` for ours. */
  readonly errorClass: string
  constructor(command: string, errorClass: string, desc: string) {
    super(`QMP ${command}: ${errorClass === 'GenericError' ? '' : `${errorClass}: `}${desc}`)
    this.command = command
    this.errorClass = errorClass
  }
}
