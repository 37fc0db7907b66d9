// What /proc shows of a process's memory and userfaultfd state, parsed from the files' text
// (callers read them, so hostile or odd input is easy to test): the address ranges of its
// mappings (maps), which of them are registered in missing mode (smaps VmFlags `um`), and
// a userfaultfd's API line (fdinfo).
import { readdirSync, readFileSync, readSync } from 'node:fs'
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
    if (head) {
      current = [parseInt(head[1], 16), parseInt(head[2], 16)]
      continue
    }
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

/** One line of /proc/PID/maps, with what identifies the file mapped. */
export interface FileMapping {
  start: number
  end: number
  /** 'p' (private, copy-on-write) rather than 's' (shared). */
  private: boolean
  /** Byte offset in the file of the mapping's first byte. */
  offset: number
  major: number
  minor: number
  inode: number
}

const MAPS_LINE = /^([0-9a-f]+)-([0-9a-f]+) [r-][w-][x-]([ps]) ([0-9a-f]+) ([0-9a-f]+):([0-9a-f]+) (\d+)/

/** Every mapping of a /proc/PID/maps text with its file offset, device and inode (0 for
 * anonymous memory). */
export function fileMappings(mapsText: string): FileMapping[] {
  const out: FileMapping[] = []
  for (const line of mapsText.split('\n')) {
    const m = MAPS_LINE.exec(line)
    if (m === null) continue
    out.push({
      start: parseInt(m[1], 16),
      end: parseInt(m[2], 16),
      private: m[3] === 'p',
      offset: parseInt(m[4], 16),
      major: parseInt(m[5], 16),
      minor: parseInt(m[6], 16),
      inode: Number(m[7]),
    })
  }
  return out
}

/** A stat's st_dev (glibc's dev_t encoding) as the major and minor numbers /proc prints. */
export function deviceNumbers(dev: number): { major: number; minor: number } {
  const d = BigInt(dev)
  const major = Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn))
  const minor = Number((d & 0xffn) | ((d >> 12n) & ~0xffn))
  return { major, minor }
}

/** PM_PRESENT of a /proc/PID/pagemap entry: bit 63 of each little-endian u64. */
const PAGEMAP_ENTRY_BYTES = 8

/**
 * Reads the pagemap entries of pages [address, address + pages*4096) from an open
 * /proc/PID/pagemap (`fd`) into `entries` (at least pages*8 bytes) and sets `present[i]` to 1
 * where page i is mapped in the process (0 elsewhere). Returns how many are present; 0 when
 * the process is gone.
 */
export function presentPages(fd: number, address: number, pages: number, entries: Buffer, present: Uint8Array): number {
  const bytes = pages * PAGEMAP_ENTRY_BYTES
  let got = 0
  try {
    while (got < bytes) {
      const n = readSync(fd, entries, got, bytes - got, (address / 4096) * PAGEMAP_ENTRY_BYTES + got)
      if (n <= 0) break
      got += n
    }
  } catch {
    return 0
  }
  let count = 0
  const words = new Uint32Array(entries.buffer, entries.byteOffset, got >>> 2)
  for (let i = 0, w = 1; i < pages; i++, w += 2) {
    const on = w < words.length && (words[w] & 0x80000000) !== 0 ? 1 : 0
    present[i] = on
    count += on
  }
  return count
}

/** The pids of a process's children (every thread's /proc/PID/task/TID/children); [] when it
 * is gone. */
export function childPids(pid: number): number[] {
  const pids: number[] = []
  let tids: string[]
  try {
    tids = readdirSync(`/proc/${pid}/task`)
  } catch {
    return pids
  }
  for (const tid of tids) {
    let text: string
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8')
    } catch {
      continue
    }
    for (const word of text.split(' ')) if (word.trim() !== '') pids.push(Number(word))
  }
  return pids
}

/** A process's parent pid (/proc/PID/stat, after the command name, which may hold spaces and
 * parentheses); -1 when it is gone. */
export function parentPid(pid: number): number {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return -1
  }
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return Number(fields[1])
}
