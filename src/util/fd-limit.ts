// This process's descriptor budget: its soft RLIMIT_NOFILE (from /proc/self/limits: Node has
// no getrlimit) and how many descriptors it holds now.
import { readdirSync, readFileSync } from 'node:fs'

/** The soft limit on open files, or undefined when unlimited or unreadable. */
export function openFileLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(readFileSync('/proc/self/limits', 'latin1'))
    return m && m[1] !== 'unlimited' ? Number(m[1]) : undefined
  } catch {
    return undefined
  }
}

/** Descriptors open in this process now. */
export function openFileCount(): number {
  return readdirSync('/proc/self/fd').length
}
