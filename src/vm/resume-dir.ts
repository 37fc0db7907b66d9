// Resumes the guest saved in a VM directory in one mode and checks it: for faultline, an
// in-process page server on the directory's snapshot and QEMU with the LD_PRELOAD shim; then
// the guest's checksum is compared with the one recorded before the checkpoint.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PageServer, type SessionRecord } from '../server/page-server.js'
import type { SessionStats } from '../server/session.js'
import { extractSnapshot } from '../snapshot/verify.js'
import { writeEagerStream } from './checkpoint.js'
import { VmError } from './errors.js'
import { requestChecksum } from './guest.js'
import { resumeVm, type ResumeMode, type ResumeTimings } from './resume.js'
import { floorServer, PageServerProcess, parseFloorStats, type FloorStats } from './server-process.js'
import type { VmDir } from './vm-dir.js'
import { nativeBuildPath } from '../util/repo.js'

export const DEFAULT_SHIM = nativeBuildPath('libfaultline-shim.so')
export const FLOOR_BINARY = nativeBuildPath('uffd-floor')

export interface VmDirResumeOptions {
  mode: ResumeMode
  /** faultline: the fault policy (`--policy`), default ondemand. */
  policy?: string
  /** faultline: record the session's faults and installs here. */
  tracePath?: string
  /** faultline: serve this snapshot (another file, or s3://...) instead of the dir's mem.snap. */
  snapshotPath?: string
  /** faultline: serve --learn DIR: the session's used pages are kept in DIR for this snapshot,
   * and without a policy a set kept there before is prefetched (learned:). */
  learnDir?: string
  shimPath?: string
  /** Serve the faultline mode with native/build/uffd-floor (the minimal C handler, reading
   * the raw RAM, `batchPages` pages per fault) instead of faultline's page server: the floor
   * a page server is compared with. */
  floor?: { batchPages: number }
  /** Pin QEMU to these CPUs (taskset -c); pin this process too with pinProcess. */
  cpus?: string
  /** Ask for a second checksum once every page is in: the workload's own cost. */
  recheck?: boolean
  /** Called when everything is ready (page server listening), right before QEMU starts:
   * where a cold-cache run empties the page cache. */
  beforeLaunch?: () => void
  timeoutMs?: number
  log?: (line: string) => void
  /** Progress of a one-time preparation (extracting the raw RAM for mmap). */
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

export interface VmDirResumeReport {
  mode: ResumeMode
  policy?: string
  /** Recorded before the checkpoint. */
  expected: string
  /** Printed by the resumed guest. */
  checksum: string
  /** Both checksums (and the recheck's) equal the recorded one. */
  match: boolean
  timings: ResumeTimings
  /** Second checksum with all memory in, ms, and what it printed. */
  recheckMs?: number
  recheckHex?: string
  /** The faultline session's counters (faults, pages installed, service time, CPU); its `map`
   * says what backed QEMU's RAM: the server's decoded cache (mapped by the shim) or anonymous. */
  session?: SessionStats
  /** faultline: how the server's decoded cache was made (undefined without one). */
  cacheDescription?: string
  /** faultline with learnDir: the set the session prefetched (learned:FILE), if there was one. */
  learnedSet?: string
  serverError?: string
  /** uffd-floor's counters, when it served the guest. */
  floor?: FloorStats
}

/** Creates what a mode needs and the directory lacks: the raw RAM (mmap, eager) from the
 * snapshot, QEMU's stream with RAM (eager) by replaying the checkpoint in a helper QEMU.
 * Returns what it did, for the log. Not part of any timing. */
export async function prepareVmDir(
  vm: VmDir,
  mode: ResumeMode,
  o: Pick<VmDirResumeOptions, 'log' | 'onProgress' | 'timeoutMs' | 'floor'> = {},
): Promise<string[]> {
  const done: string[] = []
  const needRaw = (mode === 'mmap' || (mode === 'eager' && !vm.has('eagerState')) || o.floor !== undefined) && !vm.has('ram')
  if (needRaw) {
    o.log?.(`extracting the raw RAM for the ${mode} resume: ${vm.path('snapshot')} -> ${vm.path('ram')}`)
    extractSnapshot(vm.path('snapshot'), vm.path('ram'), { onProgress: o.onProgress })
    done.push(`extracted ${vm.path('ram')}`)
  }
  if (mode === 'eager' && !vm.has('eagerState')) {
    o.log?.(`writing QEMU's stream with RAM once: ${vm.path('eagerState')}`)
    const r = await writeEagerStream(
      {
        name: 'eager-stream-writer',
        image: vm.image,
        ramMiB: vm.guest.ramMiB,
        workloadMiB: vm.guest.workloadMiB,
        ram: { kind: 'file', path: vm.path('ram'), share: false },
        accel: vm.guest.accel,
      },
      vm.path('ram'),
      vm.path('state'),
      vm.path('eagerState'),
      o.timeoutMs ?? 300_000,
    )
    vm.update({ eagerStateBytes: r.sizeBytes })
    done.push(`wrote ${vm.path('eagerState')}`)
  }
  return done
}

/** Resumes, checks the checksum, quits the guest and stops the server. Throws if the guest
 * cannot be resumed at all (QEMU fails to load the state, the guest dies or never answers);
 * a guest that runs but prints another checksum is reported with `match: false`. */
export async function resumeVmDir(vm: VmDir, o: VmDirResumeOptions): Promise<VmDirResumeReport> {
  const timeoutMs = o.timeoutMs ?? 300_000
  if (
    o.mode !== 'faultline' &&
    (o.policy !== undefined || o.tracePath !== undefined || o.snapshotPath !== undefined || o.floor !== undefined || o.learnDir !== undefined)
  ) {
    throw new VmError(`--policy, --trace, --snapshot and --learn apply to the faultline mode only, not ${o.mode}`)
  }
  if (o.floor && (o.policy !== undefined || o.tracePath !== undefined || o.snapshotPath !== undefined || o.learnDir !== undefined)) {
    throw new VmError('uffd-floor serves the raw RAM by itself: no --policy, --trace, --snapshot or --learn')
  }
  await prepareVmDir(vm, o.mode, o)
  const shimPath = o.shimPath ?? DEFAULT_SHIM
  if (o.mode === 'faultline' && !existsSync(shimPath)) throw new VmError(`${shimPath}: not built (make -C native)`)

  let server: PageServer | undefined
  let floor: PageServerProcess | undefined
  let socketDir: string | undefined
  const ended: SessionRecord[] = []
  if (o.mode === 'faultline' && o.floor) {
    socketDir = mkdtempSync(join(tmpdir(), 'fl-vm-'))
    floor = await PageServerProcess.start(
      floorServer({
        binary: FLOOR_BINARY,
        socketPath: join(socketDir, 'floor.sock'),
        rawPath: vm.path('ram'),
        batchPages: o.floor.batchPages,
      }),
    ).catch((err: unknown) => {
      rmSync(socketDir!, { recursive: true, force: true })
      throw err
    })
  } else if (o.mode === 'faultline') {
    socketDir = mkdtempSync(join(tmpdir(), 'fl-vm-'))
    server = await PageServer.start({
      snapshotPath: o.snapshotPath ?? vm.path('snapshot'),
      socketPath: join(socketDir, 'pages.sock'),
      policy: o.policy,
      tracePath: o.tracePath,
      learnDir: o.learnDir,
      singleGuest: true,
    }).catch((err: unknown) => {
      rmSync(socketDir!, { recursive: true, force: true })
      throw err
    })
    for (const line of server.startNotices) o.log?.(`server: ${line}`)
    server.on('log', line => o.log?.(`server: ${line}`))
    server.on('rejected', (pid, error) => o.log?.(`server: refused pid ${pid}: ${error}`))
    server.on('ended', rec => ended.push(rec))
  }
  try {
    o.beforeLaunch?.()
    const r = await resumeVm({
      mode: o.mode,
      name: `resume-${o.mode}`,
      image: vm.image,
      ramMiB: vm.guest.ramMiB,
      workloadMiB: vm.guest.workloadMiB,
      ramFile: vm.path('ram'),
      stateFile: vm.path('state'),
      eagerStateFile: vm.path('eagerState'),
      faultline: server || floor ? { socketPath: (server ?? floor)!.socketPath, shimPath } : undefined,
      accel: vm.guest.accel,
      cpus: o.cpus,
      timeoutMs,
    })
    let recheckMs: number | undefined
    let recheckHex: string | undefined
    try {
      if (o.recheck) {
        const t0 = Number(process.hrtime.bigint())
        const again = await Promise.race([requestChecksum(r.vm.console, timeoutMs), r.vm.failOnExit('during the second checksum')])
        recheckMs = (again.atNs - t0) / 1e6
        recheckHex = again.hex
      }
    } finally {
      await r.vm.quit()
    }
    let session: SessionRecord | undefined
    if (server) session = await sessionEnd(ended, timeoutMs)
    // uffd-floor --once exits when its guest is gone, printing its stats.
    const floorStats = floor ? parseFloorStats(await floor.stop()) : undefined
    const expected = vm.guest.checksum.hex
    return {
      mode: o.mode,
      policy: server?.policySpec,
      expected,
      checksum: r.checksum.hex,
      match: r.checksum.hex === expected && (recheckHex === undefined || recheckHex === expected),
      timings: r.timings,
      recheckMs,
      recheckHex,
      session: session?.stats,
      serverError: session?.error,
      cacheDescription: server?.cacheDescription,
      learnedSet: server?.policySpec.startsWith('learned:') && o.learnDir !== undefined ? server.policySpec.slice('learned:'.length) : undefined,
      floor: floorStats,
    }
  } catch (err) {
    if (floor) o.log?.(`uffd-floor said: ${floor.lastLine()}`)
    throw err
  } finally {
    floor?.kill()
    if (server) {
      server.stopSessions()
      await server.close()
    }
    if (socketDir) rmSync(socketDir, { recursive: true, force: true })
  }
}

/** The session's record once QEMU is gone (the server sees its socket close). */
async function sessionEnd(ended: SessionRecord[], timeoutMs: number): Promise<SessionRecord> {
  const deadline = Date.now() + Math.min(timeoutMs, 30_000)
  while (ended.length === 0) {
    if (Date.now() > deadline) throw new VmError("faultline resume: the page server's session did not end after QEMU quit")
    await new Promise(r => setTimeout(r, 10))
  }
  return ended[0]
}

/** Pins every thread of `pid` (default this process: its page-server workers included,
 * and the ones it starts later inherit it) to `cpus`, as `taskset -a -p -c`. */
export function pinProcess(cpus: string, pid: number = process.pid): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (err) {
    const why =
      String((err as { stderr?: Buffer }).stderr ?? '')
        .trim()
        .split('\n')[0] || (err as Error).message
    throw new VmError(`--cpus ${cpus}: cannot pin process ${pid}: ${why}`)
  }
}
