// pread(2) straight into a caller's Buffer: the fault path's read of stored snapshot bytes.
// fs.readSync validates its arguments and allocates on every call; this does neither.
import { EINTR } from './abi.js'
import { UffdError } from './errors.js'
import { errno, libc } from './libc.js'

/** Reads up to `length` bytes at file offset `position` into `into[0..length)`; returns the
 * bytes read (0 at end of file). Throws UffdError('pread', errno). */
export function preadInto(fd: number, into: Buffer, length: number, position: number): number {
  for (;;) {
    const n = libc.pread(fd, into, length, position)
    if (n >= 0) return n
    const e = errno()
    if (e !== EINTR) throw new UffdError('pread', e, `fd ${fd}, ${length} bytes at ${position}`)
  }
}

/** preadInto for memory given by address (a page-aligned buffer of our own, an offset into
 * it): no view of the destination is made per call. */
export function preadToAddress(fd: number, address: number, length: number, position: number): number {
  for (;;) {
    const n = Number(libc.preadAt(fd, address, length, position))
    if (n >= 0) return n
    const e = errno()
    if (e !== EINTR) throw new UffdError('pread', e, `fd ${fd}, ${length} bytes at ${position}`)
  }
}
