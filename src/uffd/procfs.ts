// What /proc shows of a process's memory and userfaultfd state, parsed from the files' text
// (callers read them, so hostile or odd input is easy to test): the address ranges of its
// mappings (maps), which of them are registered in missing mode (smaps VmFlags `um`), and
// a userfaultfd's API line (fdinfo).
import { UFFD_FEATURE_INITIALIZED } from './abi.js'

/** [start, end) of a mapping, as addresses. */
export type AddressRange = [start: number, end: number]

const RANGE_LINE = /^([0-9a-f]+)-([0-9a-f]+) /

/** Every mapping's range in a /proc/PID/maps (or smaps) text, in the file's (address) order. */
export function mappedRanges(mapsText: string): AddressRange[] {
  const ranges: AddressRange[] = []
  for (const line of mapsText.split('\n')) {
    const m = RANGE_LINE.exec(line)
    if (m) ranges.push([parseInt(m[1], 16), parseInt(m[2], 16)])
  }
  return ranges
}

/** The mappings of a /proc/PID/smaps text registered with a userfaultfd in missing mode
 * (VmFlags `um`; write-protect mode is `uw`, minor mode `ui`). */
export function missingModeRanges(smapsText: string): AddressRange[] {
  const registered: AddressRange[] = []
  let current: AddressRange | undefined
  for (const line of smapsText.split('\n')) {
    const head = RANGE_LINE.exec(line)
    if (head) { current = [parseInt(head[1], 16), parseInt(head[2], 16)]; continue }
    if (current && line.startsWith('VmFlags:') && line.slice(8).trim().split(/\s+/).includes('um')) registered.push(current)
  }
  return registered
}

export interface UffdFdinfo {
  /** UFFDIO_API has been issued on it (by whoever holds it). */
  initialized: boolean
  /** The features enabled on it (UFFD_FEATURE_* bits). */
  features: number
}

/** Reads the `API:\taa:FEATURES:IOCTLS` line of a userfaultfd's /proc/PID/fdinfo/FD text;
 * undefined when the text has none (not a userfaultfd). */
export function parseUffdFdinfo(text: string): UffdFdinfo | undefined {
  const m = /^API:\s*[0-9a-f]+:([0-9a-f]+):/m.exec(text)
  if (m === null) return undefined
  const raw = parseInt(m[1], 16)
  // Kernels before the mark show 0 for a uffd initialised with no features: it reads as not
  // initialised, which only makes the server's own UFFDIO_API fail later, with its errno.
  return { initialized: raw !== 0, features: raw % UFFD_FEATURE_INITIALIZED }
}
