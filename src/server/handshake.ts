// Parses and validates a guest's handshake (Firecracker's region array, or faultline's own
// object) against the snapshot it will be served from. Pure: no I/O (callers read /proc), so
// hostile input is easy to test.
import { FaultlineError } from '../errors.js'
import { deviceNumbers, fileMappings, mappedRanges, missingModeRanges, type AddressRange } from '../uffd/index.js'

export class HandshakeError extends FaultlineError {
  override readonly code: string = 'FL_ERR_HANDSHAKE'
}

export const MAX_HANDSHAKE_BYTES = 65536
export const MAX_REGIONS = 1024

export interface GuestRegion {
  /** Guest virtual address of the region's first byte. */
  start: number
  lengthBytes: number
  /** Byte offset of the region in the snapshot's memory image. */
  snapshotOffset: number
  /** The guest's page size for this region (4096, or a huge page size). */
  pageSize: number
}

export interface Handshake {
  form: 'firecracker' | 'faultline'
  /** The server must run UFFDIO_API and UFFDIO_REGISTER (faultline form). */
  register: boolean
  /** How the guest asks its regions to be backed: its anonymous memory (pages copied in), or
   * the server's decoded cache mapped privately over them (faultline form, `"map":"cache"`). */
  map: 'anonymous' | 'cache'
  regions: GuestRegion[]
}

export interface SnapshotGeometry {
  pageSize: number
  pageCount: number
}

function field(obj: Record<string, unknown>, name: string, where: string): number {
  const v = obj[name]
  if (v === undefined) throw new HandshakeError(`${where}: missing "${name}"`)
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new HandshakeError(`${where}: "${name}" must be a non-negative integer, got ${JSON.stringify(v)?.slice(0, 40)}`)
  }
  return v
}

function parseRegion(raw: unknown, i: number): GuestRegion {
  const where = `region ${i}`
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new HandshakeError(`${where}: expected an object`)
  const obj = raw as Record<string, unknown>
  const start = field(obj, 'base_host_virt_addr', where)
  const lengthBytes = field(obj, 'size', where)
  const snapshotOffset = field(obj, 'offset', where)
  // Firecracker's deprecated page_size_kib holds bytes despite its name.
  const pageSize = obj.page_size !== undefined ? field(obj, 'page_size', where) : field(obj, 'page_size_kib', where)
  return { start, lengthBytes, snapshotOffset, pageSize }
}

/** Parses the handshake body; throws HandshakeError with a one-line reason. */
export function parseHandshake(body: string, snapshot: SnapshotGeometry): Handshake {
  let doc: unknown
  try {
    doc = JSON.parse(body)
  } catch {
    throw new HandshakeError(`handshake is not JSON (${body.length} bytes starting ${JSON.stringify(body.slice(0, 24))})`)
  }
  let handshake: Handshake
  if (Array.isArray(doc)) {
    if (doc.length > MAX_REGIONS) throw new HandshakeError(`handshake has ${doc.length} regions; at most ${MAX_REGIONS}`)
    handshake = { form: 'firecracker', register: false, map: 'anonymous', regions: doc.map(parseRegion) }
  } else if (doc !== null && typeof doc === 'object') {
    const obj = doc as Record<string, unknown>
    if (obj.version !== 1) throw new HandshakeError(`handshake "version" must be 1, got ${JSON.stringify(obj.version)}`)
    if (obj.register !== undefined && typeof obj.register !== 'boolean') throw new HandshakeError('handshake "register" must be true or false')
    if (!Array.isArray(obj.regions)) throw new HandshakeError('handshake "regions" must be an array')
    if (obj.regions.length > MAX_REGIONS) throw new HandshakeError(`handshake has ${obj.regions.length} regions; at most ${MAX_REGIONS}`)
    if (obj.map !== undefined && obj.map !== 'anonymous' && obj.map !== 'cache') {
      throw new HandshakeError(`handshake "map" must be "anonymous" or "cache", got ${JSON.stringify(obj.map)?.slice(0, 40)}`)
    }
    const map = obj.map === 'cache' ? 'cache' : 'anonymous'
    if (map === 'cache' && obj.register === false)
      throw new HandshakeError('handshake "map": "cache" needs "register": true (the server registers the regions once they map the cache)')
    handshake = { form: 'faultline', register: obj.register !== false, map, regions: obj.regions.map(parseRegion) }
  } else {
    throw new HandshakeError('handshake must be a JSON array (Firecracker) or object (faultline)')
  }
  validateRegions(handshake.regions, snapshot)
  if (handshake.map === 'cache') {
    handshake.regions.forEach((r, i) => {
      if (r.pageSize !== snapshot.pageSize)
        throw new HandshakeError(`region ${i}: "map": "cache" maps the cache in ${snapshot.pageSize}-byte pages; page size ${r.pageSize} cannot`)
    })
  }
  return handshake
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0
}

export function validateRegions(regions: GuestRegion[], snapshot: SnapshotGeometry): void {
  if (regions.length === 0) throw new HandshakeError('handshake has no regions')
  const imageBytes = snapshot.pageCount * snapshot.pageSize
  regions.forEach((r, i) => {
    const where = `region ${i}`
    if (!isPowerOfTwo(r.pageSize) || r.pageSize < snapshot.pageSize || r.pageSize > 1 << 30) {
      throw new HandshakeError(`${where}: page size ${r.pageSize} does not fit the snapshot's ${snapshot.pageSize}-byte pages`)
    }
    if (r.lengthBytes === 0) throw new HandshakeError(`${where}: size is 0`)
    if (r.start % r.pageSize || r.lengthBytes % r.pageSize) {
      throw new HandshakeError(`${where}: address 0x${r.start.toString(16)} and size ${r.lengthBytes} must be multiples of its page size ${r.pageSize}`)
    }
    if (r.snapshotOffset % r.pageSize) throw new HandshakeError(`${where}: offset ${r.snapshotOffset} is not a multiple of its page size ${r.pageSize}`)
    if (r.start + r.lengthBytes > 2 ** 47 * 2) throw new HandshakeError(`${where}: address range ends past the user address space`)
    if (r.snapshotOffset + r.lengthBytes > imageBytes) {
      throw new HandshakeError(`${where}: offset ${r.snapshotOffset} + size ${r.lengthBytes} is past the snapshot's end (${imageBytes} bytes)`)
    }
  })
  const byAddress = [...regions].sort((a, b) => a.start - b.start)
  for (let i = 1; i < byAddress.length; i++) {
    const prev = byAddress[i - 1]
    if (prev.start + prev.lengthBytes > byAddress[i].start) {
      throw new HandshakeError(`regions overlap at address 0x${byAddress[i].start.toString(16)}`)
    }
  }
  const byOffset = [...regions].sort((a, b) => a.snapshotOffset - b.snapshotOffset)
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1]
    if (prev.snapshotOffset + prev.lengthBytes > byOffset[i].snapshotOffset) {
      throw new HandshakeError(`regions overlap in the snapshot at offset ${byOffset[i].snapshotOffset}`)
    }
  }
}

/** Checks that every region lies inside mappings of the guest (its /proc/PID/maps text), so a
 * guest is only ever served ranges of its own address space. */
export function checkRegionsMapped(regions: GuestRegion[], mapsText: string): void {
  const vmas = mappedRanges(mapsText)
  regions.forEach((r, i) => {
    const at = firstUncovered(r, vmas)
    if (at !== undefined) throw new HandshakeError(`region ${i}: 0x${at.toString(16)} is not mapped in the guest's address space`)
  })
}

/** The first address of `r` outside `ranges` (sorted by address), or undefined. */
function firstUncovered(r: GuestRegion, ranges: AddressRange[]): number | undefined {
  let at = r.start
  const end = r.start + r.lengthBytes
  for (const [s, e] of ranges) {
    if (s <= at && at < e) at = e
    if (at >= end) return undefined
  }
  return at
}

/** A prefix of a handshake body that no more bytes can turn into JSON: it does not start
 * (after white space) with `[` or `{`, or it is a complete line that does not parse. Lets the
 * server refuse garbage at once instead of at the deadline. */
export function cannotBecomeJson(prefix: string): boolean {
  const first = /\S/.exec(prefix)
  if (first === null) return false
  if (first[0] !== '[' && first[0] !== '{') return true
  if (!prefix.endsWith('\n')) return false
  try {
    JSON.parse(prefix)
    return false
  } catch {
    return true
  }
}

/** Checks that every region lies in mappings registered with a userfaultfd in missing mode
 * (`um` in /proc/PID/smaps VmFlags): a Firecracker-form guest registers its memory itself,
 * and memory it forgot to register would silently read as zeros instead of the snapshot. */
export function checkRegionsRegistered(regions: GuestRegion[], smapsText: string): void {
  const registered = missingModeRanges(smapsText)
  regions.forEach((r, i) => {
    const at = firstUncovered(r, registered)
    if (at === undefined) return
    throw new HandshakeError(
      `region ${i}: 0x${at.toString(16)} is not registered with the userfaultfd (UFFDIO_REGISTER, missing mode); ` +
        'a Firecracker-form guest registers its memory before the handshake',
    )
  })
}

/** Checks that each region of a cache-mapped guest is now a private mapping of the cache file
 * (device `dev`, inode `ino`) at its own snapshot offset, all of it (its /proc/PID/maps text):
 * what the guest maps there is what the server will fill, and nothing else. */
export function checkRegionsMapCache(regions: GuestRegion[], mapsText: string, dev: number, ino: number): void {
  const { major, minor } = deviceNumbers(dev)
  const maps = fileMappings(mapsText).filter(m => m.major === major && m.minor === minor && m.inode === ino)
  regions.forEach((r, i) => {
    let at = r.start
    const end = r.start + r.lengthBytes
    for (const m of maps) {
      if (m.start <= at && at < m.end && m.private && m.offset + (at - m.start) === r.snapshotOffset + (at - r.start)) at = m.end
      if (at >= end) return
    }
    throw new HandshakeError(
      `region ${i}: 0x${at.toString(16)} is not a private mapping of the decoded cache at offset ${r.snapshotOffset + (at - r.start)} ` +
        '(map the descriptor the server sent MAP_PRIVATE|MAP_FIXED over each region before sending {"mapped":true})',
    )
  })
}
