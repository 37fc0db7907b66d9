// The second exchange of a cache-mapped guest's handshake (docs/protocol.md): the server sends
// the decoded cache's read-only descriptor, the guest maps it privately over each region and
// says so, and the server checks the guest's mappings before it registers them. Between the
// guest's first message and the final ack; shares the handshake's deadline.
import { readFileSync } from 'node:fs'
import type { DecodedCacheInfo } from '../cache/decoded-cache.js'
import * as uffd from '../uffd/index.js'
import { checkRegionsMapCache, HandshakeError, type GuestRegion } from './handshake.js'

/** Longest line accepted for `{"mapped":...}`. */
const MAX_MAPPED_LINE = 4096

/** The reply that hands over the cache: stage "map". */
export function cacheOffer(sessionId: number, cache: DecodedCacheInfo): Buffer {
  return Buffer.from(
    JSON.stringify({ ok: true, stage: 'map', session: sessionId, pageSize: cache.pageSize, map: 'cache', folioBytes: cache.folioBytes }) + '\n',
  )
}

/**
 * Sends the cache's descriptor, waits (until `deadlineMs`, or the stop eventfd) for the guest's
 * `{"mapped":true}` line and checks in /proc/PID/maps that every region maps the cache. Throws
 * HandshakeError, with the guest's own reason when it could not map.
 */
export function handOverCache(
  conn: number,
  pid: number,
  regions: GuestRegion[],
  cache: DecodedCacheInfo,
  sessionId: number,
  deadlineMs: number,
  stopFd: number,
): void {
  try {
    uffd.sendWithFds(conn, cacheOffer(sessionId, cache), [cache.guestFd])
  } catch (err) {
    throw new HandshakeError(`cannot send the decoded cache to the guest: ${(err as Error).message}`)
  }
  const line = readLine(conn, deadlineMs, stopFd)
  let reply: unknown
  try {
    reply = JSON.parse(line)
  } catch {
    throw new HandshakeError(`the guest's answer to the cache is not JSON: ${JSON.stringify(line.slice(0, 40))}`)
  }
  const r = reply as { mapped?: unknown; error?: unknown }
  if (r === null || typeof r !== 'object' || typeof r.mapped !== 'boolean')
    throw new HandshakeError('the guest\'s answer to the cache must be {"mapped": true} or {"mapped": false, "error": "..."}')
  if (!r.mapped)
    throw new HandshakeError(`the guest could not map the decoded cache: ${typeof r.error === 'string' ? r.error.slice(0, 200) : 'no reason given'}`)
  let maps: string
  try {
    maps = readFileSync(`/proc/${pid}/maps`, 'utf8')
  } catch {
    throw new HandshakeError(`cannot read /proc/${pid}/maps of the guest`)
  }
  checkRegionsMapCache(regions, maps, cache.dev, cache.ino)
}

/** One line (without its newline) from the guest; a descriptor sent with it is refused. */
function readLine(conn: number, deadlineMs: number, stopFd: number): string {
  const buf = Buffer.alloc(MAX_MAPPED_LINE)
  const receiver = new uffd.MessageReceiver()
  const poll = new uffd.PollSet(2)
  poll.set(0, conn, uffd.POLLIN)
  poll.set(1, stopFd, uffd.POLLIN)
  let length = 0
  for (;;) {
    const left = deadlineMs - Date.now()
    if (left <= 0) throw new HandshakeError('no {"mapped": ...} line from the guest within the handshake deadline')
    poll.wait(left)
    if (poll.revents(1)) throw new HandshakeError('server stopping')
    if (!poll.revents(0)) continue
    const m = receiver.receive(conn, buf, length)
    for (const f of m.fds) uffd.closeFd(f)
    if (m.fds.length > 0 || m.truncated) throw new HandshakeError('the guest\'s {"mapped": ...} line must carry no file descriptor')
    if (m.bytes < 0) continue
    if (m.bytes === 0) throw new HandshakeError('the guest closed the connection before saying it mapped the cache')
    length += m.bytes
    const nl = buf.indexOf(10, 0)
    if (nl >= 0 && nl < length) return buf.toString('utf8', 0, nl)
    if (length >= buf.length) throw new HandshakeError(`the guest's {"mapped": ...} line is longer than ${MAX_MAPPED_LINE} bytes`)
  }
}
