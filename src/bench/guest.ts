// Runs the native test guest (native/build/guest) as a real process and returns the one JSON
// line it prints; shared by the demo, the resume benchmark and the per-fault measurement.
import { spawn } from 'node:child_process'
import { nativeBuildPath } from '../util/repo.js'
import { BenchError } from './errors.js'

export const GUEST_BINARY = nativeBuildPath('guest')

/** The guest's report (its CLI contract; see `guest --help`). Times are ns from the start of
 * resume; usage fields cover resume + workload only (not --verify). */
export interface GuestReport {
  ok: boolean
  source: string
  resume_ns: number
  first_access_ns: number | null
  workload_ns: number
  total_ns: number
  pages_touched: number
  verified_pages: number
  mismatches: number
  /** Bytes this process caused to be read from storage (/proc/self/io read_bytes). */
  io_read_bytes: number
  io_rchar: number
  minflt: number
  majflt: number
  cpu_ns: number
  maxrss_kb: number
  [key: string]: unknown
}


export interface GuestRunOptions {
  /** Pin the guest to these CPUs (taskset -c LIST). */
  cpus?: string
  /** Kill the guest after this long: a hang is a failure (default: none). */
  timeoutMs?: number
}

/** Runs the native guest and returns its JSON report; any failure is a BenchError. */
export function runGuestProcess(args: string[], opts: GuestRunOptions = {}): Promise<GuestReport> {
  const [file, argv] = opts.cpus === undefined ? [GUEST_BINARY, args] : ['taskset', ['-c', opts.cpus, GUEST_BINARY, ...args]]
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = '', err = ''
    child.stdout.on('data', d => { out += d })
    child.stderr.on('data', d => { err += d })
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs)
    child.on('error', e => reject(new BenchError(`${file}: ${e.message} (run npm install to build native/)`)))
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer)
      const line = out.trim().split('\n').pop() ?? ''
      let report: GuestReport | undefined
      try { report = JSON.parse(line) } catch { /* below */ }
      if (code !== 0 || !report) {
        const why = signal ? `was killed by ${signal}${signal === 'SIGKILL' && timer ? ` after ${opts.timeoutMs} ms` : ''}` : `exited ${code}`
        reject(new BenchError(`guest ${args.join(' ')} ${why}: ${err.trim().split('\n').pop() ?? ''}`))
      } else resolvePromise(report)
    })
  })
}
