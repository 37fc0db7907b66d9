// What a process cost, read from /proc: storage bytes it read (io), CPU time (schedstat of
// every thread, ns), resident and peak memory (status). Plus the page-cache controls a
// cold/warm benchmark needs. Linux only, as the rest of faultline.
import { execFileSync } from 'node:child_process'
import { closeSync, openSync, readFileSync, readSync, readdirSync, writeFileSync } from 'node:fs'
import { BenchError } from './errors.js'


export interface ProcIo {
  /** Bytes this process caused to be fetched from storage (page-cache misses). */
  readBytes: number
  /** Bytes passed through read(2)-like calls, cached or not. */
  rchar: number
}

export interface ProcMemory {
  rssBytes: number
  /** Peak resident set (VmHWM) since start or the last resetPeakRss. */
  peakRssBytes: number
}

export interface ProcSample extends ProcIo, ProcMemory {
  /** CPU time of the threads alive now (sum of their schedstat run time), ns. */
  cpuNs: number
}

/** Parses /proc/PID/io. */
export function parseProcIo(text: string): ProcIo {
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s*(\\d+)$`, 'm').exec(text)
    if (!m) throw new BenchError(`/proc/PID/io: no '${name}' field`)
    return Number(m[1])
  }
  return { readBytes: field('read_bytes'), rchar: field('rchar') }
}

/** Parses VmRSS and VmHWM out of /proc/PID/status. */
export function parseProcStatus(text: string): ProcMemory {
  const kb = (name: string) => {
    const m = new RegExp(`^${name}:\\s*(\\d+) kB$`, 'm').exec(text)
    if (!m) throw new BenchError(`/proc/PID/status: no '${name}' field`)
    return Number(m[1]) * 1024
  }
  return { rssBytes: kb('VmRSS'), peakRssBytes: kb('VmHWM') }
}

/** First field of /proc/PID/task/TID/schedstat: time spent on the CPU, ns. */
export function parseSchedstat(text: string): number {
  const n = Number(text.split(' ', 1)[0])
  if (!Number.isFinite(n)) throw new BenchError(`schedstat: expected a number, got '${text.trim()}'`)
  return n
}

function readProc(path: string): string {
  try {
    return readFileSync(path, 'latin1')
  } catch (err) {
    throw new BenchError(`${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): is the process gone?`)
  }
}

/** CPU ns of all live threads of `pid`. */
export function processCpuNs(pid: number | 'self'): number {
  let sum = 0
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try { sum += parseSchedstat(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1')) } catch { /* exited meanwhile */ }
  }
  return sum
}

export function sampleProcess(pid: number | 'self'): ProcSample {
  return {
    ...parseProcIo(readProc(`/proc/${pid}/io`)),
    ...parseProcStatus(readProc(`/proc/${pid}/status`)),
    cpuNs: processCpuNs(pid),
  }
}

/** Resets the process's peak RSS (VmHWM) to its current RSS (`5` to clear_refs, Linux 4.0+). */
export function resetPeakRss(pid: number | 'self'): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
  } catch (err) {
    throw new BenchError(`/proc/${pid}/clear_refs: cannot reset the peak RSS (${(err as NodeJS.ErrnoException).code}): needs the same user or root`)
  }
}

/** MemAvailable from /proc/meminfo, bytes. */
export function memAvailableBytes(meminfo = readProc('/proc/meminfo')): number {
  const m = /^MemAvailable:\s*(\d+) kB$/m.exec(meminfo)
  if (!m) throw new BenchError('/proc/meminfo: no MemAvailable field')
  return Number(m[1]) * 1024
}

export type ColdMethod = 'drop-caches' | 'fadvise'

/**
 * Empties the page cache before a cold run. `drop-caches` is the whole machine's
 * (`sync; echo 3 > /proc/sys/vm/drop_caches`, root); `fadvise` drops only `files`
 * (POSIX_FADV_DONTNEED through GNU dd's `iflag=nocache count=0`), kinder to a shared machine.
 */
export function dropPageCache(method: ColdMethod, files: string[]): void {
  try {
    if (method === 'drop-caches') {
      execFileSync('sync', [], { stdio: 'ignore' })
      writeFileSync('/proc/sys/vm/drop_caches', '3')
    } else {
      for (const f of files) {
        // Dirty pages are not dropped: write them back first (a freshly generated image).
        execFileSync('sync', ['--data', f], { stdio: 'ignore' })
        execFileSync('dd', [`if=${f}`, 'iflag=nocache', 'count=0', 'status=none'], { stdio: ['ignore', 'ignore', 'pipe'] })
      }
    }
  } catch (err) {
    const detail = String((err as { stderr?: Buffer }).stderr ?? '').trim().split('\n')[0] || (err as NodeJS.ErrnoException).code || (err as Error).message
    throw new BenchError(`cannot drop the page cache (${method}): ${detail}${method === 'drop-caches' ? ' (needs root; or use --cold fadvise)' : ''}`)
  }
}

/** Reads `path` once through the page cache so a warm run finds it there. */
export function warmPageCache(path: string): void {
  const buf = Buffer.allocUnsafe(8 << 20)
  const fd = openSync(path, 'r')
  try {
    let at = 0
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, at)
      if (n === 0) break
      at += n
    }
  } finally {
    closeSync(fd)
  }
}

/** Bytes of `path` in the page cache now (util-linux `fincore`; Node has no mincore), or
 * undefined without it: recorded per run to show a cold run really started cold. */
export function cachedBytes(path: string): number | undefined {
  try {
    const out = execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path], { encoding: 'utf8' })
    const n = Number(out.trim())
    return Number.isFinite(n) ? n : undefined
  } catch {
    return undefined
  }
}
