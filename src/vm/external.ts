// Your own QEMU VMs: snapshot one that runs with its RAM in a shared memory-backend-file,
// through its QMP socket, into a VM directory; resume it by running your QEMU command line
// with the LD_PRELOAD shim, its RAM served by faultline's page server.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PageServer, type SessionRecord } from '../server/page-server.js'
import type { SessionStats } from '../server/session.js'
import { createSnapshot } from '../snapshot/writer.js'
import { QmpError, VmError } from './errors.js'
import { migrateFromFile, migrateToFile, setMigrationCapabilities, type MigrationPeer } from './migration.js'
import { faultlineEnv } from './qemu.js'
import { QmpClient } from './qmp.js'
import { DEFAULT_SHIM } from './resume-dir.js'
import { VM_DIR_FORMAT, VM_FILES, writeVmMetadata, VmDir, type ExternalVmMetadata } from './vm-dir.js'

/** A QEMU reached over its QMP socket only: it is gone when the connection closes. */
export class ExternalQemu implements MigrationPeer {
  readonly name: string
  readonly qmp: QmpClient
  readonly exited: Promise<void>

  private constructor(name: string, qmp: QmpClient) {
    this.name = name
    this.qmp = qmp
    this.exited = qmp.closed
  }

  static async connect(qmpPath: string, timeoutMs = 5000): Promise<ExternalQemu> {
    if (!existsSync(qmpPath)) throw new VmError(`--qmp ${qmpPath}: no such socket (start QEMU with -qmp unix:${qmpPath},server=on,wait=off)`)
    return new ExternalQemu(`QEMU at ${qmpPath}`, await QmpClient.connect(qmpPath, { timeoutMs }))
  }

  failOnExit(when: string): Promise<never> {
    const p = this.exited.then(() => Promise.reject(new VmError(`${this.name}: the QMP connection closed ${when} (QEMU exited?)`)))
    p.catch(() => {})
    return p
  }

  lastStderr(): string {
    return ''
  }
}

export interface SnapshotExternalOptions {
  qmpPath: string
  dir: string
  /** The memory backend holding guest RAM (`-object memory-backend-file,id=ID,...`). */
  ramId?: string
  /** Quit the source once its state is saved (else it stays paused). */
  quit?: boolean
  timeoutMs?: number
  log?: (line: string) => void
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

/** Stops the VM, saves its device state without RAM (x-ignore-shared) and compresses its RAM
 * file into a faultline snapshot. The source must map its RAM from a file with share=on:
 * the file then is the RAM, consistent with the saved state while the VM stays stopped. */
export async function snapshotExternalVm(o: SnapshotExternalOptions): Promise<VmDir> {
  const ramId = o.ramId ?? 'pc.ram'
  const log = o.log ?? (() => {})
  const qemu = await ExternalQemu.connect(o.qmpPath)
  try {
    const objectPath = `/objects/${ramId}`
    const get = async <T>(property: string): Promise<T> => {
      try {
        return await qemu.qmp.execute<T>('qom-get', { path: objectPath, property })
      } catch (err) {
        if (err instanceof QmpError && err.errorClass !== 'Timeout' && err.errorClass !== 'Closed') {
          throw new VmError(
            `${qemu.name}: no memory-backend-file '${ramId}' (${err.message}): start it with -object memory-backend-file,id=${ramId},size=...,mem-path=FILE,share=on -machine memory-backend=${ramId}, or name yours with --ram-id`,
          )
        }
        throw err
      }
    }
    const type = await get<string>('type')
    if (type !== 'memory-backend-file') throw new VmError(`${qemu.name}: '${ramId}' is a ${type}, not a memory-backend-file: its RAM has no file to snapshot`)
    const [memPath, sizeBytes, share] = [await get<string>('mem-path'), await get<number>('size'), await get<boolean>('share')]
    if (!share) throw new VmError(`${qemu.name}: '${ramId}' maps ${memPath} with share=off: the guest's writes are not in the file (use share=on)`)
    if (sizeBytes % (1 << 20) !== 0) throw new VmError(`${qemu.name}: '${ramId}' is ${sizeBytes} bytes, not a whole number of MiB`)
    const version = await qemu.qmp.execute<{ qemu: { major: number; minor: number; micro: number }; package: string }>('query-version')
    mkdirSync(o.dir, { recursive: true })
    const path = (f: keyof typeof VM_FILES): string => join(o.dir, VM_FILES[f])
    rmSync(path('meta'), { force: true })
    const started = performance.now()
    log(`stopping the VM and saving its device state (${ramId}: ${memPath}, ${sizeBytes >> 20} MiB)`)
    await qemu.qmp.execute('stop')
    await setMigrationCapabilities(qemu, { ignoreShared: true })
    const state = await migrateToFile(qemu, path('state'), o.timeoutMs ?? 120_000)
    log(`compressing ${memPath} into ${path('snapshot')}`)
    const snap = await createSnapshot(memPath, path('snapshot'), { onProgress: o.onProgress })
    const meta: ExternalVmMetadata = {
      format: VM_DIR_FORMAT,
      kind: 'external',
      createdAt: new Date().toISOString(),
      ramMiB: sizeBytes >> 20,
      ramId,
      sourceRamFile: memPath,
      qemuVersion: `QEMU emulator version ${version.qemu.major}.${version.qemu.minor}.${version.qemu.micro} (${version.package.trim()})`,
      stateBytes: state.sizeBytes,
      snapshotBytes: snap.fileSizeBytes,
      checkpointMs: Math.round(performance.now() - started),
    }
    writeVmMetadata(o.dir, meta)
    if (o.quit) {
      log('quitting the source')
      await qemu.qmp.execute('quit').catch(() => {}) // it may close the socket before answering
    } else {
      log('the source stays paused: quit it, or `cont` it over QMP (the snapshot no longer matches it then)')
    }
  } finally {
    qemu.qmp.close()
  }
  return VmDir.open(o.dir)
}

export interface ResumeExternalOptions {
  /** Your QEMU command line, binary first: the source's, with its RAM backend turned into
   * `memory-backend-ram` of the same id and size, and without -incoming. */
  command: string[]
  policy?: string
  tracePath?: string
  snapshotPath?: string
  /** serve --learn DIR (see VmDirResumeOptions.learnDir). */
  learnDir?: string
  shimPath?: string
  /** QEMU's stdio: 'inherit' hands it the terminal (its console, if that is on stdio). */
  stdio?: 'inherit' | 'pipe'
  timeoutMs?: number
  log?: (line: string) => void
}

export interface ExternalResume {
  child: ChildProcess
  /** ms since QEMU was started: device state loaded, and `cont` answered. */
  stateLoadedMs: number
  runningMs: number
  /** Resolves once QEMU has exited and the page server has stopped. */
  finished: Promise<{ code: number | null; signal: NodeJS.Signals | null; session?: SessionStats; sessionError?: string }>
}

/** Starts an in-process page server on the snapshot, runs `command` with the shim plus
 * `-incoming defer -S` and a QMP socket of ours, loads the device state, continues the VM,
 * and returns while it runs. */
export async function resumeExternalVm(vm: VmDir, o: ResumeExternalOptions): Promise<ExternalResume> {
  if (vm.meta.kind !== 'external')
    throw new VmError(`${vm.dir}: holds faultline's test guest: resume it with faultline vm resume --dir ${vm.dir}, no command line`)
  if (o.command.length === 0) throw new VmError('vm resume: give your QEMU command line after --')
  if (o.command.some(a => a === '-incoming'))
    throw new VmError('vm resume: leave -incoming out of the command line: faultline adds -incoming defer and loads the state itself')
  const shimPath = o.shimPath ?? DEFAULT_SHIM
  if (!existsSync(shimPath)) throw new VmError(`${shimPath}: not built (make -C native)`)
  const timeoutMs = o.timeoutMs ?? 300_000
  const work = mkdtempSync(join(tmpdir(), 'fl-vm-'))
  const cleanup: Array<() => unknown> = [() => rmSync(work, { recursive: true, force: true })]
  const ended: SessionRecord[] = []
  let server: PageServer | undefined
  try {
    server = await PageServer.start({
      snapshotPath: o.snapshotPath ?? vm.path('snapshot'),
      socketPath: join(work, 'pages.sock'),
      policy: o.policy,
      tracePath: o.tracePath,
      learnDir: o.learnDir,
      singleGuest: true,
    })
    const srv = server
    cleanup.unshift(async () => {
      srv.stopSessions()
      await srv.close()
    })
    for (const line of server.startNotices) o.log?.(`server: ${line}`)
    server.on('log', line => o.log?.(`server: ${line}`))
    server.on('rejected', (pid, error) => o.log?.(`server: refused pid ${pid}: ${error}`))
    server.on('ended', rec => ended.push(rec))
    const qmpPath = join(work, 'qmp.sock')
    const args = [...o.command.slice(1), '-incoming', 'defer', '-S', '-qmp', `unix:${qmpPath},server=on,wait=off`]
    const startedNs = Number(process.hrtime.bigint())
    const stdio: StdioOptions = o.stdio === 'pipe' ? ['pipe', 'pipe', 'pipe'] : 'inherit'
    const child = spawn(o.command[0], args, {
      stdio,
      env: { ...process.env, ...faultlineEnv({ shimPath, socketPath: srv.socketPath, ramBytes: vm.ramBytes }) },
    })
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(resolve => {
      child.on('error', () => resolve({ code: null, signal: null }))
      child.on('exit', (code, signal) => resolve({ code, signal }))
    })
    cleanup.unshift(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    })
    const gone = new AbortController()
    void exited.then(() => gone.abort('QEMU exited'))
    const peer: MigrationPeer = {
      name: o.command[0],
      qmp: await Promise.race([
        QmpClient.connect(qmpPath, { timeoutMs: 10_000, signal: gone.signal }),
        exited.then(e =>
          Promise.reject(
            new VmError(
              `${o.command[0]} ${e.signal ? `was killed by ${e.signal}` : `exited with status ${e.code}`} before its monitor was up (its stderr says why)`,
            ),
          ),
        ),
      ]),
      exited,
      failOnExit: when => {
        const p = exited.then(e => Promise.reject(new VmError(`${o.command[0]} exited (${e.signal ?? e.code}) ${when}`)))
        p.catch(() => {})
        return p
      },
      lastStderr: () => '',
    }
    await setMigrationCapabilities(peer, { ignoreShared: true })
    await migrateFromFile(peer, vm.path('state'), timeoutMs)
    const stateLoadedNs = Number(process.hrtime.bigint())
    await peer.qmp.execute('cont')
    const runningNs = Number(process.hrtime.bigint())
    // Our monitor is not needed any more; QEMU keeps running without it.
    peer.qmp.close()
    const finished = (async () => {
      const e = await exited
      const deadline = Date.now() + 10_000
      while (ended.length === 0 && Date.now() < deadline) await new Promise(r => setTimeout(r, 10))
      for (const f of cleanup) await f()
      return { ...e, session: ended[0]?.stats, sessionError: ended[0]?.error }
    })()
    return { child, stateLoadedMs: (stateLoadedNs - startedNs) / 1e6, runningMs: (runningNs - startedNs) / 1e6, finished }
  } catch (err) {
    for (const f of cleanup) await f()
    throw err
  }
}
