// Runs the C floor handler (native/build/uffd-floor, serving the raw RAM image) as a child
// process for a resume through the shim: the floor faultline's page server is compared with.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import { VmError } from './errors.js'

export interface ServerProcessOptions {
  /** Short name for messages: "uffd-floor". */
  label: string
  command: string
  args: string[]
  socketPath: string
  /** A stderr line that says it is listening. */
  readyPattern: RegExp
  /** What to build when `command` is missing. */
  buildHint: string
}

/** native/build/uffd-floor serving one guest (--once) from the raw RAM image. */
export function floorServer(o: { binary: string; socketPath: string; rawPath: string; batchPages?: number }): ServerProcessOptions {
  const args = ['--socket', o.socketPath, '--raw', o.rawPath, '--once']
  if (o.batchPages) args.push('--batch-pages', String(o.batchPages))
  return { label: 'uffd-floor', command: o.binary, args, socketPath: o.socketPath, readyPattern: /listening on/, buildHint: 'make -C native' }
}

export interface ServerOutput {
  stdout: string
  stderr: string
}

// Never outlive the driver, even when it crashes.
const live = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL')
})

export class PageServerProcess {
  readonly socketPath: string
  readonly label: string
  private readonly child: ChildProcess
  private stdout = ''
  private stderr = ''
  private readonly exited: Promise<number | null>

  private constructor(options: ServerProcessOptions, child: ChildProcess) {
    this.socketPath = options.socketPath
    this.label = options.label
    this.child = child
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (this.stdout += s))
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderr += s))
    this.exited = new Promise(resolve => child.on('close', code => resolve(code)))
    live.add(child)
    child.on('exit', () => live.delete(child))
  }

  /** Starts it and waits until it says it listens and the socket exists. */
  static async start(options: ServerProcessOptions, timeoutMs = 10_000): Promise<PageServerProcess> {
    const entry = options.command === process.execPath ? options.args[0] : options.command
    if (!existsSync(entry)) throw new VmError(`${entry}: not built (${options.buildHint})`)
    rmSync(options.socketPath, { force: true })
    const child = spawn(options.command, options.args, { stdio: ['ignore', 'pipe', 'pipe'] })
    const server = new PageServerProcess(options, child)
    const deadline = Date.now() + timeoutMs
    while (!(options.readyPattern.test(server.stderr) && existsSync(options.socketPath))) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new VmError(`${options.label} exited at start: ${server.lastLine()}`)
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL')
        throw new VmError(`${options.label}: not listening on ${options.socketPath} within ${timeoutMs} ms`)
      }
      await new Promise(r => setTimeout(r, 2))
    }
    return server
  }

  /** Waits for it to exit (it runs --once: it ends with its guest), sending
   * SIGTERM after `timeoutMs`, and returns what it printed. */
  async stop(timeoutMs = 5000): Promise<ServerOutput> {
    const timer = setTimeout(() => this.child.kill('SIGTERM'), timeoutMs)
    await this.exited
    clearTimeout(timer)
    return { stdout: this.stdout, stderr: this.stderr }
  }

  /** Stops it now (a failed resume); nothing if it has exited. */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
  }

  /** Its last stderr line, for when a resume fails. */
  lastLine(): string {
    return this.stderr.trim().split('\n').pop() ?? ''
  }
}

export interface FloorStats {
  faults: number
  pages_copied: number
  batch_pages: number
  service_median_ns: number | null
  service_p99_ns: number | null
  [key: string]: unknown
}

/** uffd-floor's JSON stats line (the last line on its stdout). */
export function parseFloorStats(out: ServerOutput): FloorStats {
  const line = out.stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as FloorStats
  } catch {
    throw new VmError(`uffd-floor printed no stats: ${out.stderr.trim().split('\n').pop() ?? '(nothing)'}`)
  }
}
