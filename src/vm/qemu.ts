// Launches QEMU (TCG unless asked for KVM) with guest RAM from a named memory backend, the
// serial console on stdio and QMP on a Unix socket; stops it again.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GuestConsole } from './console.js'
import { VmError } from './errors.js'
import type { GuestImage } from './image.js'
import { QmpClient } from './qmp.js'

/** Where guest RAM comes from. The backend id is always `pc.ram` so that a source and a
 * destination agree on the RAM block's name. */
export type RamBackend =
  /** A file mapped MAP_SHARED (share=true: the source of a snapshot; RAM is the file) or
   * MAP_PRIVATE (share=false: the mmap resume, pages read from the file on first touch). */
  | { kind: 'file'; path: string; share: boolean }
  /** Anonymous memory: eager restore, or faultline when the shim is preloaded. */
  | { kind: 'ram' }

export type Accel = 'tcg' | 'kvm'

export interface QemuLaunchOptions {
  name: string
  image: GuestImage
  ramMiB: number
  /** Memory the workload fills (fl.mib); default 5/8 of ramMiB. */
  workloadMiB?: number
  ram: RamBackend
  /** Wait for `migrate-incoming` (`-incoming defer`) and stay paused until `cont` (-S). */
  incoming?: boolean
  /** Extra environment (LD_PRELOAD and FAULTLINE_* for the faultline mode). */
  env?: Record<string, string>
  accel?: Accel
  qemuBinary?: string
  /** Run QEMU under `taskset -c CPUS` (every thread, the vCPU included). */
  cpus?: string
  extraArgs?: string[]
  qmpTimeoutMs?: number
}

export interface QemuExit {
  code: number | null
  signal: NodeJS.Signals | null
}

// QEMU's own stderr, kept for error messages.
const STDERR_TAIL_BYTES = 4096

// QEMU does not notice its parent dying (a paused source would hold its RAM file forever):
// whatever is still running when this process exits, crashes included, is killed.
const live = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL')
})

/** `FAULTLINE_VM_ACCEL=kvm` asks for KVM; anything else runs TCG, since KVM guests hang on
 * hosts without nested virtualisation while /dev/kvm still exists. */
export function accelFromEnv(env: NodeJS.ProcessEnv = process.env): Accel {
  return env.FAULTLINE_VM_ACCEL === 'kvm' ? 'kvm' : 'tcg'
}

export function defaultWorkloadMiB(ramMiB: number): number {
  return Math.floor((ramMiB * 5) / 8)
}

/** The command line, without the binary. Pure, so tests can check it. */
export function buildQemuArgs(options: QemuLaunchOptions, qmpPath: string): string[] {
  const size = `${options.ramMiB}M`
  const accel = options.accel ?? 'tcg'
  const workloadMiB = options.workloadMiB ?? defaultWorkloadMiB(options.ramMiB)
  const backend =
    options.ram.kind === 'file'
      ? `memory-backend-file,id=pc.ram,size=${size},mem-path=${qemuOptValue(options.ram.path)},share=${options.ram.share ? 'on' : 'off'}`
      : `memory-backend-ram,id=pc.ram,size=${size}`
  const args = [
    '-name',
    options.name,
    // TCG's 1 GiB translation buffer is mapped PROT_NONE first, so the shim (which wants a
    // writable mapping of the RAM size) does not take it for a 1 GiB guest's RAM.
    '-accel',
    accel,
    '-machine',
    'pc,memory-backend=pc.ram',
    '-m',
    size,
    '-smp',
    '1',
    '-object',
    backend,
    // No default NIC, VGA, floppy...: less device state, and the serial line is the only I/O.
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-serial',
    'stdio',
    '-no-reboot',
    '-kernel',
    options.image.kernel,
    '-initrd',
    options.image.initrd,
    '-append',
    `${options.image.cmdline} fl.mib=${workloadMiB}`,
    '-qmp',
    `unix:${qmpPath},server=on,wait=off`,
  ]
  if (options.incoming) args.push('-incoming', 'defer', '-S')
  return [...args, ...(options.extraArgs ?? [])]
}

/** QEMU option values escape commas by doubling them. */
function qemuOptValue(value: string): string {
  return value.replace(/,/g, ',,')
}

export class QemuVm {
  readonly name: string
  readonly options: QemuLaunchOptions
  readonly args: string[]
  readonly pid: number
  readonly console: GuestConsole
  readonly exited: Promise<QemuExit>
  /** hrtime ns just before spawn: the origin of every resume timing. */
  readonly launchedAtNs: number
  qmp!: QmpClient
  /** hrtime ns when QMP answered its capabilities negotiation. */
  qmpReadyAtNs = 0
  private readonly child: ChildProcess
  private stderrTail = ''
  private exitInfo?: QemuExit

  private constructor(options: QemuLaunchOptions, args: string[], child: ChildProcess, workDir: string, launchedAtNs: number) {
    this.name = options.name
    this.options = options
    this.args = args
    this.child = child
    this.launchedAtNs = launchedAtNs
    if (child.pid === undefined) throw new VmError(`${options.name}: QEMU did not start`)
    this.pid = child.pid
    this.console = new GuestConsole(options.name, child.stdout!, child.stdin!)
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (s: string) => {
      this.stderrTail = (this.stderrTail + s).slice(-STDERR_TAIL_BYTES)
    })
    live.add(child)
    this.exited = new Promise(resolve => {
      const done = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (this.exitInfo) return
        live.delete(child)
        this.exitInfo = { code, signal }
        rmSync(workDir, { recursive: true, force: true })
        resolve(this.exitInfo)
      }
      // 'close' comes after the last stderr bytes (the error message worth quoting); a
      // grandchild still holding the pipes (exec: migration's cat) must not delay it long.
      child.on('close', done)
      child.on('exit', (code, signal) => setTimeout(() => done(code, signal), 200).unref())
    })
  }

  static async launch(options: QemuLaunchOptions): Promise<QemuVm> {
    const workDir = mkdtempSync(join(tmpdir(), 'fl-qemu-'))
    const qmpPath = join(workDir, 'qmp.sock')
    const args = buildQemuArgs(options, qmpPath)
    const binary = options.qemuBinary ?? 'qemu-system-x86_64'
    // taskset execs QEMU: the child's pid stays QEMU's.
    const [file, argv] = options.cpus === undefined ? [binary, args] : ['taskset', ['-c', options.cpus, binary, ...args]]
    const launchedAtNs = Number(process.hrtime.bigint())
    const child = spawn(file, argv, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...options.env },
    })
    const spawnError = new Promise<never>((_, reject) => {
      child.once('error', (err: NodeJS.ErrnoException) => {
        reject(
          new VmError(
            err.code === 'ENOENT' ? `${binary}: not found: apt-get install qemu-system-x86` : `${options.name}: cannot start ${binary}: ${err.message}`,
          ),
        )
      })
    })
    spawnError.catch(() => {})
    let vm: QemuVm
    try {
      vm = await Promise.race([
        spawnError,
        new Promise<QemuVm>(resolve => child.once('spawn', () => resolve(new QemuVm(options, args, child, workDir, launchedAtNs)))),
      ])
    } catch (err) {
      rmSync(workDir, { recursive: true, force: true })
      throw err
    }
    const gone = new AbortController()
    void vm.exited.then(() => gone.abort('QEMU exited'))
    try {
      vm.qmp = await Promise.race([
        QmpClient.connect(qmpPath, { timeoutMs: options.qmpTimeoutMs ?? 10_000, signal: gone.signal }),
        vm.exited.then(e => Promise.reject(vm.exitError(e, 'before its monitor was up'))),
      ])
    } catch (err) {
      // QEMU dying mid-greeting (the shim refused, a bad option) shows up as a closed
      // socket first: its exit status and stderr say more than that.
      const exit = await Promise.race([
        vm.exited,
        new Promise<undefined>(r => {
          setTimeout(() => r(undefined), 1000).unref()
        }),
      ])
      vm.kill()
      if (exit) throw vm.exitError(exit, 'before its monitor was up')
      throw err
    }
    vm.qmpReadyAtNs = Number(process.hrtime.bigint())
    return vm
  }

  get running(): boolean {
    return this.exitInfo === undefined
  }

  /** QEMU's last stderr lines joined with '; ' ('' if none), without its name prefix: where
   * it says why it gave up (a failed load prints the cause, then a generic line). */
  lastStderr(lines = 1): string {
    return this.stderrTail
      .trim()
      .split('\n')
      .slice(-lines)
      .map(l => l.trim().replace(/^qemu-system-\w+: /, ''))
      .filter(Boolean)
      .join('; ')
  }

  exitError(exit: QemuExit, when: string): VmError {
    const last = this.lastStderr(2)
    return new VmError(`${this.name}: QEMU ${exitText(exit)} ${when}${last ? `: ${last}` : ''}`)
  }

  /** Rejects as soon as QEMU exits: race it against anything that waits on the guest. */
  failOnExit(when: string): Promise<never> {
    const p = this.exited.then(e => Promise.reject(this.exitError(e, when)))
    p.catch(() => {})
    return p
  }

  /** Asks QEMU to quit over QMP; kills it if that does not work within `timeoutMs`. */
  async quit(timeoutMs = 5000): Promise<QemuExit> {
    if (!this.running) return this.exitInfo!
    try {
      await this.qmp.execute('quit', undefined, timeoutMs)
    } catch {
      // A QEMU that cannot answer quit is killed below.
    }
    const timer = setTimeout(() => this.kill(), timeoutMs)
    const exit = await this.exited
    clearTimeout(timer)
    this.qmp.close()
    return exit
  }

  kill(): void {
    if (this.running) this.child.kill('SIGKILL')
    this.qmp?.close()
  }
}

function exitText(e: QemuExit): string {
  return e.signal ? `was killed by ${e.signal}` : `exited with status ${e.code}`
}

/** The environment that makes the LD_PRELOAD shim hand QEMU's RAM mapping to a faultline
 * server (native/shim.c): the first private anonymous mapping of exactly `ramBytes`. */
export function faultlineEnv(options: { shimPath: string; socketPath: string; ramBytes: number; offsetBytes?: number }): Record<string, string> {
  return {
    LD_PRELOAD: options.shimPath,
    FAULTLINE_SOCKET: options.socketPath,
    FAULTLINE_RAM_SIZE: String(options.ramBytes),
    FAULTLINE_OFFSET: String(options.offsetBytes ?? 0),
  }
}

const RAM_SIZE = /^(\d+(?:\.\d+)?)\s*(?:([MG])(?:i?B)?)?$/i

/** A guest RAM size as QEMU's -m reads it: `256` or `256M` MiB, `4G` GiB; returns MiB.
 * `flag` names the option in errors. */
export function parseRamMiB(text: string, flag = '--ram'): number {
  const m = RAM_SIZE.exec(text.trim())
  if (!m) throw new VmError(`${flag} ${text}: expected a size such as 256M or 4G (a plain number is MiB)`)
  const mib = Number(m[1]) * ((m[2] ?? 'M').toUpperCase() === 'G' ? 1024 : 1)
  if (!Number.isInteger(mib) || mib < 1) throw new VmError(`${flag} ${text}: must be a positive whole number of MiB`)
  return mib
}
