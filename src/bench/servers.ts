// The page servers a benchmark resumes guests from, each as its own process so its CPU time,
// peak RSS and storage reads are its own: faultline (src/bench/server-process.ts) and the
// minimal C handler (native/build/uffd-floor).
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { arch } from 'node:process'
import { resetPeakRss, sampleProcess, type ProcSample } from './proc.js'
import type { ServerChildMessage, ServerChildOptions, PrintedSessionStats } from './server-process.js'
import type { CacheCounts } from '../cache/decoded-cache.js'
import { FLOOR_BINARY } from '../vm/resume-dir.js'
import { BenchError } from './errors.js'

/** What a server process cost while it served one guest. */
export interface ServerCost {
  cpuNs: number
  peakRssBytes: number
  readBytes: number
  rchar: number
  /** Faults it served. */
  faults: number
  /** Pages it installed (faulting and prefetched). */
  pagesInstalled: number
  /** Its own per-fault service time, median and p99, ns. */
  serviceP50Ns: number
  serviceP99Ns: number
  session?: PrintedSessionStats
  /** The decoded cache as the session ended (faultline; null without one). */
  cache?: CacheCounts | null
  floor?: FloorStats
}

export interface FloorStats {
  faults: number
  pages_copied: number
  /** ZEROPAGEd (snapshot mode). */
  pages_zeroed?: number
  bytes_read: number
  service_median_ns: number | null
  service_p99_ns: number | null
  service_mean_ns: number | null
  [key: string]: unknown
}

export interface RunningServer {
  readonly pid: number
  readonly socketPath: string
  /** Call once the guest has exited: waits for the server to see it go, then returns what
   * serving it cost and stops the server. */
  finish(timeoutMs?: number): Promise<ServerCost>
  /** Stops it now (after a failed run). */
  kill(): void
}

const serverEntry = new URL(`./server-process${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url)

function command(cpus: string | undefined, file: string, args: string[]): [string, string[]] {
  return cpus === undefined ? [file, args] : ['taskset', ['-c', cpus, file, ...args]]
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop() ?? ''
}

/** Collects a child's output and tells when it exits. */
class Child {
  stdout = ''
  stderr = ''
  readonly exited: Promise<number | null>
  constructor(
    readonly proc: ChildProcess,
    readonly name: string,
  ) {
    proc.stdout!.setEncoding('utf8').on('data', (s: string) => {
      this.stdout += s
    })
    proc.stderr!.setEncoding('utf8').on('data', (s: string) => {
      this.stderr += s
    })
    this.exited = new Promise(resolve => proc.on('close', code => resolve(code)))
    proc.on('error', () => {
      /* reported through exited */
    })
  }

  /** Waits until `ready(stdout, stderr)` holds; fails if the child exits or time runs out. */
  async waitFor(ready: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!ready()) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        throw new BenchError(`${this.name} exited before ${what}: ${lastLine(this.stderr) || '(no output)'}`)
      }
      if (Date.now() > deadline) {
        this.proc.kill('SIGKILL')
        throw new BenchError(`${this.name}: not ${what} within ${timeoutMs} ms`)
      }
      await new Promise(r => setTimeout(r, 2))
    }
  }
}

export interface FaultlineServerOptions {
  snapshotPath: string
  socketPath: string
  /** The --policy; undefined: none (with learnDir, the learned set when there is one). */
  policy?: string
  /** Pin the whole server process (main thread and session workers) to these CPUs. */
  cpus?: string
  /** Extra environment (FAULTLINE_FFI, FAULTLINE_BREAKDOWN). */
  env?: NodeJS.ProcessEnv
  /** Extra node options, e.g. --max-semi-space-size=64. */
  nodeArgs?: string[]
  /** Guests it serves before it exits (default 1), each with a worker started in advance. */
  sessions?: number
  /** serve --learn DIR. */
  learnDir?: string
  /** serve --cache-memory, bytes (0: no decoded cache). */
  cacheMemoryBytes?: number
}

/** A faultline server process serving `sessions` guests. */
export interface FaultlineServer extends RunningServer {
  /** The policy its sessions run (a learned set's, with learnDir and no policy). */
  readonly policy: string
  /** How its decoded cache is (null without one). */
  readonly cacheDescription: string | null
  /** What serving the `index`-th guest (from 1) cost, from the previous session's end (or
   * from listening) to this one's; waits for that session to end. */
  session(index: number, timeoutMs?: number): Promise<ServerCost>
  /** Its decoded cache now (null without one). */
  cacheCounts(timeoutMs?: number): Promise<CacheCounts | null>
}

type EndedMessage = Extract<ServerChildMessage, { event: 'ended' }>

function sessionCost(m: EndedMessage, child: Child): ServerCost {
  if (!m.stats) throw new BenchError(`faultline session failed: ${m.error ?? lastLine(child.stderr)}`)
  const st = m.stats
  return {
    cpuNs: m.cpuNs,
    peakRssBytes: m.peakRssBytes,
    readBytes: m.readBytes,
    rchar: m.rchar,
    faults: st.faults,
    pagesInstalled: st.pagesInstalled[0] + st.pagesInstalled[1] + st.pagesInstalled[2],
    serviceP50Ns: st.latency.p50Ns,
    serviceP99Ns: st.latency.p99Ns,
    session: st,
    cache: m.cache,
  }
}

/** Starts a faultline page server process; resolves once it listens with its session
 * workers warm. */
export async function startFaultlineServer(opts: FaultlineServerOptions): Promise<FaultlineServer> {
  const entry = serverEntry.pathname
  const sessions = opts.sessions ?? 1
  const childOptions: ServerChildOptions = { sessions, learnDir: opts.learnDir, cacheMemoryBytes: opts.cacheMemoryBytes }
  const [file, args] = command(opts.cpus, process.execPath, [
    ...process.execArgv,
    ...(opts.nodeArgs ?? []),
    entry,
    opts.snapshotPath,
    opts.socketPath,
    opts.policy ?? '-',
    JSON.stringify(childOptions),
  ])
  const child = new Child(spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } }), 'faultline server')
  child.proc.stdin!.on('error', () => {
    /* it exited: reported through exited */
  })
  const messages = (): ServerChildMessage[] =>
    child.stdout
      .split('\n')
      .filter(l => l.startsWith('{'))
      .map(l => JSON.parse(l) as ServerChildMessage)
  await child.waitFor(() => messages().some(m => m.event === 'ready'), 60000 + 2000 * sessions, 'listening')
  const ready = messages().find(m => m.event === 'ready') as Extract<ServerChildMessage, { event: 'ready' }>
  const rejected = () => messages().find(m => m.event === 'rejected') as Extract<ServerChildMessage, { event: 'rejected' }> | undefined
  const ended = (index: number) => messages().find(m => m.event === 'ended' && m.index === index) as EndedMessage | undefined
  const session = async (index: number, timeoutMs = 30000): Promise<ServerCost> => {
    await child.waitFor(() => ended(index) !== undefined || rejected() !== undefined, timeoutMs, `done with guest ${index}`)
    const refusal = rejected()
    if (refusal) throw new BenchError(`faultline server refused a guest: ${refusal.error}`)
    return sessionCost(ended(index)!, child)
  }
  return {
    pid: child.proc.pid!,
    socketPath: opts.socketPath,
    policy: ready.policy,
    cacheDescription: ready.cache,
    session,
    async cacheCounts(timeoutMs = 10000) {
      const answers = () => messages().filter(m => m.event === 'cache') as Extract<ServerChildMessage, { event: 'cache' }>[]
      const before = answers().length
      child.proc.stdin!.write('cache\n')
      await child.waitFor(() => answers().length > before, timeoutMs, 'answering how full its cache is')
      return answers()[before].cache
    },
    async finish(timeoutMs = 30000) {
      try {
        return await session(sessions, timeoutMs)
      } finally {
        const timer = setTimeout(() => child.proc.kill('SIGKILL'), 5000)
        await child.exited
        clearTimeout(timer)
      }
    },
    kill() {
      child.proc.kill('SIGKILL')
    },
  }
}

/** Exactly one of rawPath (copy the raw image) and snapshotPath (decode the snapshot). */
export interface FloorServerOptions {
  rawPath?: string
  snapshotPath?: string
  socketPath: string
  cpus?: string
  batchPages?: number
}

/** Starts native/build/uffd-floor for one guest; resolves once it listens. */
export async function startFloorServer(opts: FloorServerOptions): Promise<RunningServer> {
  if (!existsSync(FLOOR_BINARY)) throw new BenchError(`${FLOOR_BINARY}: not built (make -C native)`)
  rmSync(opts.socketPath, { force: true })
  // Not --once: it must outlive its guest long enough for /proc/PID to be read.
  const floorArgs = ['--socket', opts.socketPath, ...(opts.snapshotPath !== undefined ? ['--snapshot', opts.snapshotPath] : ['--raw', opts.rawPath!])]
  if (opts.batchPages) floorArgs.push('--batch-pages', String(opts.batchPages))
  const [file, args] = command(opts.cpus, FLOOR_BINARY, floorArgs)
  const child = new Child(spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] }), 'uffd-floor')
  await child.waitFor(() => child.stderr.includes('listening'), 10000, 'listening')
  const pid = child.proc.pid!
  resetPeakRss(pid)
  const before: ProcSample = sampleProcess(pid)
  return {
    pid,
    socketPath: opts.socketPath,
    async finish(timeoutMs = 30000) {
      // It is single-threaded: once it is back in accept(2) its guest is fully served. The
      // guest has exited already, so that is a matter of microseconds.
      const deadline = Date.now() + timeoutMs
      let after = sampleProcess(pid)
      while (!inAccept(pid) && Date.now() < deadline) {
        await new Promise(r => setTimeout(r, 1))
        after = sampleProcess(pid)
      }
      child.proc.kill('SIGTERM')
      const timer = setTimeout(() => child.proc.kill('SIGKILL'), 5000)
      await child.exited
      clearTimeout(timer)
      let stats: FloorStats
      try {
        stats = JSON.parse(lastLine(child.stdout)) as FloorStats
      } catch {
        throw new BenchError(`uffd-floor printed no stats: ${lastLine(child.stderr) || '(nothing)'}`)
      }
      return {
        cpuNs: after.cpuNs - before.cpuNs,
        peakRssBytes: after.peakRssBytes,
        readBytes: after.readBytes - before.readBytes,
        rchar: after.rchar - before.rchar,
        faults: stats.faults,
        pagesInstalled: stats.pages_copied + (stats.pages_zeroed ?? 0),
        serviceP50Ns: stats.service_median_ns ?? NaN,
        serviceP99Ns: stats.service_p99_ns ?? NaN,
        floor: stats,
      }
    },
    kill() {
      child.proc.kill('SIGKILL')
    },
  }
}

/** accept4(2)'s number on x86_64 and arm64. */
const SYS_ACCEPT4 = arch === 'arm64' ? 242 : 288

/** True while `pid` is blocked in accept4 (/proc/PID/syscall names the call it sleeps in). */
function inAccept(pid: number): boolean {
  try {
    return Number(readFileSync(`/proc/${pid}/syscall`, 'latin1').split(' ', 1)[0]) === SYS_ACCEPT4
  } catch {
    return true // gone: nothing more to wait for
  }
}
