// Runs the native test guest (native/build/guest) as a real process and returns the one JSON
// line it prints; shared by the demo, the resume benchmark and the per-fault measurement.
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
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
  /** Time zero on CLOCK_MONOTONIC (process.hrtime's clock), ns. */
  t0_ns: number
  /** What backed the region: 'anonymous' or 'cache' with a server, null without. */
  map: 'anonymous' | 'cache' | null
  folio_bytes: number | null
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
    let out = '',
      err = ''
    child.stdout.on('data', d => {
      out += d
    })
    child.stderr.on('data', d => {
      err += d
    })
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs)
    child.on('error', e => reject(new BenchError(`${file}: ${e.message} (run npm install to build native/)`)))
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer)
      const line = out.trim().split('\n').pop() ?? ''
      let report: GuestReport | undefined
      try {
        report = JSON.parse(line)
      } catch {
        /* below */
      }
      if (code !== 0 || !report) {
        const why = signal ? `was killed by ${signal}${signal === 'SIGKILL' && timer ? ` after ${opts.timeoutMs} ms` : ''}` : `exited ${code}`
        reject(new BenchError(`guest ${args.join(' ')} ${why}: ${err.trim().split('\n').pop() ?? ''}`))
      } else resolvePromise(report)
    })
  })
}

/** A guest started with --hold-ms: it reports, then stays alive until killed. */
export interface HeldGuest {
  readonly pid: number
  /** Its report, as soon as it printed it (it is still alive then). */
  readonly report: Promise<GuestReport>
  /** Gated: resolves once it waits at the gate (stopped, before exec). */
  gated(timeoutMs?: number): Promise<void>
  /** Gated: lets it go (SIGCONT): it execs the guest. */
  release(): void
  /** Kills it (SIGKILL) and resolves once it is gone. */
  stop(): Promise<void>
}

/** State letter of /proc/PID/stat ('T': stopped), or undefined once it is gone. */
function processState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
  } catch {
    return undefined
  }
}

/** Starts the native guest; `args` should hold --hold-ms long enough for the caller to look at
 * it while alive. A guest that exits or fails before reporting rejects `report`. With `gate`,
 * a shell stops itself (SIGSTOP) before it execs the guest, so that several guests can be let
 * go at the same instant with release(), however long spawning them one by one took. */
export function startHeldGuest(args: string[], opts: { gate?: boolean } = {}): HeldGuest {
  const [file, argv] = opts.gate ? ['/bin/sh', ['-c', 'kill -STOP $$ && exec "$0" "$@"', GUEST_BINARY, ...args]] : [GUEST_BINARY, args]
  const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = '',
    err = ''
  const closed = new Promise<void>(r => child.on('close', () => r()))
  const report = new Promise<GuestReport>((resolvePromise, reject) => {
    child.stdout.on('data', d => {
      out += d
      const nl = out.indexOf('\n')
      if (nl < 0) return
      try {
        resolvePromise(JSON.parse(out.slice(0, nl)) as GuestReport)
      } catch {
        reject(new BenchError(`guest printed no report: ${out.slice(0, 200)}`))
      }
    })
    child.stderr.on('data', d => {
      err += d
    })
    child.on('error', e => reject(new BenchError(`${file}: ${e.message} (run npm install to build native/)`)))
    child.on('close', (code, signal) =>
      reject(
        new BenchError(
          `guest ${args.join(' ')} ${signal ? `was killed by ${signal}` : `exited ${code}`} before reporting: ${err.trim().split('\n').pop() ?? ''}`,
        ),
      ),
    )
  })
  report.catch(() => {
    /* the caller awaits it */
  })
  const pid = child.pid ?? -1
  return {
    pid,
    report,
    async gated(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const state = processState(pid)
        if (state === 'T') return
        if (state === undefined || state === 'Z') throw new BenchError(`guest ${pid} exited before its start: ${err.trim().split('\n').pop() ?? ''}`)
        if (Date.now() > deadline) throw new BenchError(`guest ${pid}: not waiting at its start within ${timeoutMs} ms`)
        await new Promise(r => setTimeout(r, 1))
      }
    },
    release() {
      process.kill(pid, 'SIGCONT')
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await closed
    },
  }
}
