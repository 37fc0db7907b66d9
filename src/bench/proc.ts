// What a process cost, read from /proc: storage bytes it read (io), CPU time (schedstat of
// every thread, ns), resident and peak memory (status). Plus the page-cache controls a
// cold/warm benchmark needs. Linux only, as the rest of faultline.
import { execFileSync } from 'node:child_process'
import { closeSync, openSync, readFileSync, readSync, readdirSync, statSync, statfsSync, writeFileSync } from 'node:fs'
import * as os from 'node:os'
import { basename } from 'node:path'
import { formatBytes } from '../util/format.js'
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
    try {
      sum += parseSchedstat(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1'))
    } catch {
      /* exited meanwhile */
    }
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
    const detail =
      String((err as { stderr?: Buffer }).stderr ?? '')
        .trim()
        .split('\n')[0] ||
      (err as NodeJS.ErrnoException).code ||
      (err as Error).message
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

/** RssAnon of /proc/PID/status: the process's private anonymous memory resident now. */
export function parseRssAnon(status: string): number {
  const m = /^RssAnon:\s*(\d+) kB$/m.exec(status)
  if (!m) throw new BenchError("/proc/PID/status: no 'RssAnon' field")
  return Number(m[1]) * 1024
}

export function anonBytes(pid: number): number {
  return parseRssAnon(readProc(`/proc/${pid}/status`))
}

/** statfs type of tmpfs (and of the kernel's internal shmem mount memfds live on). */
const TMPFS_MAGIC = 0x01021994

/** Memory held by the shmem files (memfds, tmpfs files, mounted or not) `pid` has open:
 * allocated blocks of each distinct regular file, stat'ed through /proc/PID/fd. The decoded
 * cache of a faultline server is such a file; huge folios count whole. */
export function shmemFileBytes(pid: number): number {
  const seen = new Set<string>()
  let total = 0
  let fds: string[]
  try {
    fds = readdirSync(`/proc/${pid}/fd`)
  } catch (err) {
    throw new BenchError(`/proc/${pid}/fd: cannot list (${(err as NodeJS.ErrnoException).code}): is the process gone?`)
  }
  for (const fd of fds) {
    const path = `/proc/${pid}/fd/${fd}`
    try {
      const st = statSync(path)
      if (!st.isFile() || statfsSync(path).type !== TMPFS_MAGIC) continue
      const id = `${st.dev}:${st.ino}`
      if (seen.has(id)) continue
      seen.add(id)
      total += st.blocks * 512
    } catch {
      /* closed meanwhile */
    }
  }
  return total
}

export interface SequentialRead {
  path: string
  bytes: number
  ns: number
}

/**
 * The disk's sequential read bandwidth as `dd if=PATH of=/dev/null bs=1M` sees it: PATH is
 * dropped from the page cache (POSIX_FADV_DONTNEED, as dropPageCache's fadvise) and read front
 * to back in 1 MiB reads, one at a time, through the kernel's readahead.
 */
export function measureSequentialRead(path: string, bufferBytes = 1 << 20): SequentialRead {
  dropPageCache('fadvise', [path])
  const buf = Buffer.allocUnsafe(bufferBytes)
  const fd = openSync(path, 'r')
  const t0 = process.hrtime.bigint()
  let bytes = 0
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, bytes)
      if (n === 0) break
      bytes += n
    }
  } finally {
    closeSync(fd)
  }
  return { path, bytes, ns: Number(process.hrtime.bigint() - t0) }
}

/** `1.23 GB/s (196 MiB of synthetic-512MiB-seed1.snap read cold in 1 MiB reads, as dd bs=1M)`. */
export function formatSequentialRead(r: SequentialRead): string {
  return (
    `sequential read ${(r.bytes / (r.ns / 1e9) / 1e9).toFixed(2)} GB/s (${formatBytes(r.bytes)} of ${basename(r.path)} read cold, ` +
    'dropped from the page cache with fadvise, in 1 MiB reads as dd bs=1M)'
  )
}

/** The machine a benchmark ran on, as its results.json records it. */
export interface BenchMachine {
  kernel: string
  cpus: number
  memTotalBytes: number
  node: string
  loadAvgStart: number[]
  loadAvgEnd: number[]
}

/** This machine now, with the load average the run started at. */
export function benchMachine(loadAvgStart: number[]): BenchMachine {
  return { kernel: os.release(), cpus: os.cpus().length, memTotalBytes: os.totalmem(), node: process.version, loadAvgStart, loadAvgEnd: os.loadavg() }
}
