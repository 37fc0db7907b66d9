// Reading a whole input file that must be a regular one: a FIFO named by mistake would otherwise
// block the reader until some writer appears, a directory give a confusing EISDIR.
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs'
import { fileError, FaultlineError } from '../errors.js'

/** The bytes of the regular file at `path`; anything else is a one-line error naming it. */
export function readRegularFile(path: string, doing: string): Buffer {
  let fd: number
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  } catch (err) {
    throw fileError(path, err, doing)
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new FaultlineError(`${path}: ${doing}: ${st.isDirectory() ? 'is a directory' : 'not a regular file'}`)
    return readFileSync(fd)
  } catch (err) {
    throw fileError(path, err, doing)
  } finally {
    closeSync(fd)
  }
}
