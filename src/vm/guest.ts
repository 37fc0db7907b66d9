// The workload's console protocol (native/vm-guest/workload.c): FAULTLINE-CHECKSUM lines,
// the READY prompt, asking for a fresh checksum, and a ping that does not touch its memory.
import type { GuestConsole } from './console.js'
import { VmError } from './errors.js'

export interface GuestChecksum {
  /** 16 hex digits over the workload's pages. */
  hex: string
  pages: number
  /** When the line arrived (hrtime ns). */
  atNs: number
}

export const CHECKSUM_LINE = /^FAULTLINE-CHECKSUM ([0-9a-f]{16}) (\d+)$/
export const READY_LINE = /^FAULTLINE-READY$/
export const PONG_LINE = /^FAULTLINE-PONG$/
export const ERROR_LINE = /^FAULTLINE-ERROR (.*)$/

/** Waits for the checksum the workload prints after filling memory at boot, then for its
 * READY prompt (so the next request is read, not lost). */
export async function waitForBootChecksum(console: GuestConsole, timeoutMs: number): Promise<GuestChecksum> {
  const from = 0
  const m = await console.waitForLine(CHECKSUM_LINE, { timeoutMs, fromIndex: from })
  await console.waitForLine(READY_LINE, { timeoutMs, fromIndex: m.index })
  return { hex: m.match[1], pages: Number(m.match[2]), atNs: m.line.atNs }
}

/** Asks the running workload to checksum its memory again (one newline) and waits for it. */
export async function requestChecksum(console: GuestConsole, timeoutMs: number): Promise<GuestChecksum> {
  const from = console.lineCount
  console.send('\n')
  const m = await console.waitForLine(CHECKSUM_LINE, { timeoutMs, fromIndex: from })
  return { hex: m.match[1], pages: Number(m.match[2]), atNs: m.line.atNs }
}

/** Sends `ping` and waits for the PONG (and the READY after it, so the next request is not
 * sent while the workload is still writing); resolves with when the PONG arrived (hrtime
 * ns). The workload answers without reading its memory: the time a resumed guest takes to
 * answer at all. */
export async function ping(console: GuestConsole, timeoutMs: number): Promise<number> {
  const from = console.lineCount
  console.send('ping\n')
  const m = await console.waitForLine(/^FAULTLINE-(PONG|CHECKSUM)\b/, { timeoutMs, fromIndex: from })
  // A workload built before ping existed takes any line for a checksum request.
  if (m.match[1] !== 'PONG')
    throw new VmError(`${console.name}: the guest's workload does not answer ping: rebuild the image (faultline vm image) and the snapshot`)
  await console.waitForLine(READY_LINE, { timeoutMs, fromIndex: m.index })
  return m.line.atNs
}
