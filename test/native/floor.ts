// Runs native/build/uffd-floor as a real process for the native tests: waits until it listens,
// and on stop returns its exit, its output and the JSON stats line it prints on the way out.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT } from '../e2e/harness.js'

export const FLOOR = join(ROOT, 'native/build/uffd-floor')

export interface FloorExit {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** The stats line, when it printed one. */
  stats?: Record<string, any>
}

export class Floor {
  stdout = ''
  stderr = ''
  readonly exited: Promise<FloorExit>
  private constructor(readonly proc: ChildProcess) {
    proc.stdout!.setEncoding('utf8').on('data', (s: string) => {
      this.stdout += s
    })
    proc.stderr!.setEncoding('utf8').on('data', (s: string) => {
      this.stderr += s
    })
    this.exited = new Promise(resolve =>
      proc.on('close', (code, signal) => {
        let stats: Record<string, any> | undefined
        try {
          stats = JSON.parse(this.stdout.trim().split('\n').pop() ?? '')
        } catch {
          /* none */
        }
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr, stats })
      }),
    )
  }

  /** Starts uffd-floor with `args` (behind `prefix`, e.g. setpriv dropping a capability) and
   * waits until it says it listens (or exits: then the returned Floor's `exited` has why). */
  static async start(t: { teardown(fn: () => unknown): void }, args: string[], prefix: string[] = []): Promise<Floor> {
    if (!existsSync(FLOOR)) throw new Error(`${FLOOR} is missing: run npm run build`)
    const [file, argv] = prefix.length ? [prefix[0], [...prefix.slice(1), FLOOR, ...args]] : [FLOOR, args]
    const f = new Floor(spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] }))
    t.teardown(() => {
      if (f.proc.exitCode === null && f.proc.signalCode === null) f.proc.kill('SIGKILL')
    })
    const deadline = Date.now() + 10000
    while (!f.stderr.includes('listening on') && f.proc.exitCode === null && Date.now() < deadline) {
      await new Promise(r => setTimeout(r, 5))
    }
    return f
  }

  /** SIGTERM, then what it printed. */
  async stop(): Promise<FloorExit> {
    if (this.proc.exitCode === null) this.proc.kill('SIGTERM')
    return this.exited
  }
}

/** Runs uffd-floor to completion (for arguments it must refuse). */
export async function runFloor(args: string[]): Promise<FloorExit> {
  const f = await Floor.start({ teardown() {} }, args)
  const timer = setTimeout(() => f.proc.kill('SIGKILL'), 10000)
  const r = await f.exited
  clearTimeout(timer)
  return r
}
