// UffdError: a failed system call in the FFI layer, with the operation and the errno name.
import { constants } from 'node:os'
import { FaultlineError } from '../errors.js'
import { EAGAIN } from './abi.js'

const errnoNames: string[] = []
for (const [name, value] of Object.entries(constants.errno)) {
  if (errnoNames[value] === undefined) errnoNames[value] = name
}
errnoNames[EAGAIN] = 'EAGAIN' // os.constants lists EWOULDBLOCK under the same number

export function errnoName(errno: number): string {
  return errnoNames[errno] ?? `errno ${errno}`
}

export class UffdError extends FaultlineError {
  override readonly code: string = 'FL_ERR_SYSCALL'
  readonly op: string
  readonly errno: number
  /** The errno's name, `EAGAIN`. */
  readonly errnoName: string
  constructor(op: string, errno: number, detail?: string) {
    super(`${op} failed: ${errnoName(errno)}${detail ? ` (${detail})` : ''}`)
    this.op = op
    this.errno = errno
    this.errnoName = errnoName(errno)
  }
}

/** Explains why userfaultfd(2) was refused and how to allow it, in one line. */
export class UffdPermissionError extends UffdError {
  override readonly code: string = 'FL_ERR_UFFD_PERMISSION'
  constructor(errno: number) {
    super('userfaultfd', errno, 'creating a userfaultfd needs root, or read-write access to /dev/userfaultfd, ' + 'or `sysctl vm.unprivileged_userfaultfd=1`')
  }
}
