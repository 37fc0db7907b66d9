// The workload's console protocol (native/vm-guest/workload.c): FAULTLINE-CHECKSUM lines,
// the READY prompt, and asking for a fresh checksum.
import type { GuestConsole } from './console.js'

export interface GuestChecksum {
  /** 16 hex digits over the workload's pages. */
  hex: string
  pages: number
  /** When the line arrived (hrtime ns). */
  atNs: number
}

export const CHECKSUM_LINE = /^FAULTLINE-CHECKSUM ([0-9a-f]{16}) (\d+)$/
export const READY_LINE = /^FAULTLINE-READY$/
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
