// `faultline vm`: build the test guest image, boot and snapshot it into a VM directory, and
// resume it eagerly, through mmap or through faultline, checking its memory checksum.
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { UsageError } from '../errors.js'
import { resumeExternalVm, snapshotExternalVm } from '../vm/external.js'
import { buildGuestImage, DEFAULT_IMAGE_DIR, ensureGuestImage } from '../vm/image.js'
import { accelFromEnv, parseRamMiB } from '../vm/qemu.js'
import { pinProcess, resumeVmDir, type VmDirResumeReport } from '../vm/resume-dir.js'
import { RESUME_MODES, type ResumeMode } from '../vm/resume.js'
import { snapshotTestGuest } from '../vm/snapshot-guest.js'
import { dropFileCache } from '../vm/pagecache.js'
import { VmDir } from '../vm/vm-dir.js'
import { Progress } from './progress.js'
import { formatBytes } from '../util/format.js'
import { learnDir } from './serve.js'

export const VM_USAGE = `usage: faultline vm <image | snapshot | resume> [options]

  faultline vm image [DIR]
      Build the test guest into DIR (default .cache/vm): the host's Debian kernel, a busybox
      initramfs and a workload that fills memory and prints its checksum on the serial line.
      Needs linux-image-amd64, busybox-static, cpio and gcc.

  faultline vm snapshot --dir VMDIR [--ram 256M] [--workload-mib N] [--image DIR]
                        [--no-eager] [--no-raw]
      Boot the test guest under QEMU with its RAM in a shared file, wait for its checksum,
      checkpoint it over QMP and compress its RAM: VMDIR/mem.snap (faultline snapshot),
      VMDIR/state.bin (device state), VMDIR/ram.img (raw RAM, for mmap; --no-raw drops it),
      VMDIR/state-eager.bin (QEMU's stream with RAM, for eager; --no-eager skips it) and
      VMDIR/vm.json (the checksum).
        --ram SIZE          guest RAM, e.g. 256M or 4G (default 256M)
        --workload-mib N    memory the workload fills (default 5/8 of the RAM)
        --image DIR         guest image (default .cache/vm; built there when missing)

  faultline vm snapshot --dir VMDIR --qmp SOCKET [--ram-id ID] [--quit]
      Snapshot your own running QEMU through its QMP socket. Its RAM must be a shared file:
      -object memory-backend-file,id=pc.ram,size=...,mem-path=FILE,share=on
      -machine memory-backend=pc.ram. Stops it, saves VMDIR/state.bin (x-ignore-shared) and
      compresses FILE into VMDIR/mem.snap. It stays paused unless --quit.
        --ram-id ID         its RAM's memory backend id (default pc.ram)

  faultline vm resume --dir VMDIR [--mode faultline|mmap|eager] [options]
      Resume the snapshot in a new QEMU, ask the guest for its checksum and compare it with
      the recorded one; prints the resume timings. Exit status 1 if they differ.
        --mode MODE         faultline (default): RAM served by an in-process page server through
                            native/build/libfaultline-shim.so, which maps the server's decoded
                            cache over it (only misses reach the server); mmap: private
                            mapping of VMDIR/ram.img (extracted from mem.snap if missing);
                            eager: QEMU's own restore with RAM in the stream
        --policy NAME[:ARGS] fault policy for faultline (default ondemand), e.g. readahead:15
        --trace FILE        record faultline's faults and installs (faultline trace reads it)
        --learn DIR         keep the pages this resume used in DIR (per snapshot, as serve
                            --learn does); with no --policy, a later resume prefetches them
        --snapshot SNAP     serve this snapshot instead of VMDIR/mem.snap (a file or s3://)
        --cold              drop VMDIR's files from the page cache first
        --recheck           checksum a second time with all memory in: the workload's own cost
        --cpus LIST         pin QEMU and the page server to these CPUs (taskset -c)
        --json              print the report as one JSON line

  faultline vm resume --dir VMDIR [--policy P] [--trace FILE] [--snapshot SNAP] [--learn DIR]
                      -- QEMU ARGS...
      Resume a VM snapshotted with --qmp: runs your command line (the source's, its RAM
      backend made memory-backend-ram of the same id and size) with the shim preloaded and
      -incoming defer added, serves its RAM, loads the state and continues it, then waits
      for it to exit. QEMU keeps the terminal.

The test guest runs under TCG; FAULTLINE_VM_ACCEL=kvm asks for KVM.`

export async function vmCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv
  switch (sub) {
    case 'image':
      return imageCommand(rest)
    case 'snapshot':
      return snapshotCommand(rest)
    case 'resume':
      return resumeCommand(rest)
    case undefined:
      console.log(VM_USAGE)
      return 2
    case '--help':
    case '-h':
    case 'help':
      console.log(VM_USAGE)
      return 0
    default:
      console.error(`faultline vm: unknown subcommand '${sub}'\n${VM_USAGE}`)
      return 2
  }
}

function say(line: string): void {
  console.error(`faultline vm: ${line}`)
}

async function imageCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
  if (values.help) {
    console.log(VM_USAGE)
    return 0
  }
  if (positionals.length > 1) throw new UsageError(`vm image: expected at most one directory, got ${positionals.length}`)
  const dir = resolve(positionals[0] ?? DEFAULT_IMAGE_DIR)
  await buildGuestImage(dir, say)
  return 0
}

async function snapshotCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      ram: { type: 'string' },
      'workload-mib': { type: 'string' },
      image: { type: 'string' },
      'no-eager': { type: 'boolean' },
      'no-raw': { type: 'boolean' },
      qmp: { type: 'string' },
      'ram-id': { type: 'string' },
      quit: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(VM_USAGE)
    return 0
  }
  if (!values.dir) throw new UsageError('vm snapshot: --dir VMDIR is required')
  if (values.qmp !== undefined) {
    for (const flag of ['ram', 'workload-mib', 'image', 'no-eager', 'no-raw'] as const) {
      if (values[flag] !== undefined) throw new UsageError(`vm snapshot: --${flag} is for the test guest, not with --qmp`)
    }
    const progress = new Progress('compress RAM', 1)
    const vm = await snapshotExternalVm({
      qmpPath: values.qmp,
      dir: resolve(values.dir),
      ramId: values['ram-id'],
      quit: values.quit,
      log: line => {
        progress.clear()
        say(line)
      },
      onProgress: progress.update,
    })
    progress.done()
    console.log(`${vm.dir}: ${vm.meta.ramMiB} MiB of RAM in ${formatBytes(vm.meta.snapshotBytes)}, device state ${formatBytes(vm.meta.stateBytes)}`)
    return 0
  }
  if (values['ram-id'] !== undefined || values.quit) throw new UsageError('vm snapshot: --ram-id and --quit go with --qmp')
  const ramMiB = parseRamMiB(values.ram ?? '256M')
  const workloadMiB = values['workload-mib'] === undefined ? undefined : Number(values['workload-mib'])
  if (workloadMiB !== undefined && !Number.isInteger(workloadMiB))
    throw new UsageError(`--workload-mib ${values['workload-mib']}: expected a whole number of MiB`)
  const image = await ensureGuestImage(resolve(values.image ?? DEFAULT_IMAGE_DIR), say)
  const progress = new Progress('compress RAM', ramMiB * 2 ** 20)
  const vm = await snapshotTestGuest({
    dir: resolve(values.dir),
    image,
    ramMiB,
    workloadMiB,
    accel: accelFromEnv(),
    eager: !values['no-eager'],
    keepRaw: !values['no-raw'],
    log: line => {
      progress.clear()
      say(line)
    },
    onProgress: progress.update,
  })
  progress.done()
  const m = vm.guest
  console.log(
    `${vm.dir}: ${m.ramMiB} MiB guest, checksum ${m.checksum.hex} over ${m.checksum.pages} pages; ` +
      `snapshot ${formatBytes(m.snapshotBytes)}, device state ${formatBytes(m.stateBytes)}` +
      `${m.eagerStateBytes ? `, eager stream ${formatBytes(m.eagerStateBytes)}` : ''}; boot ${(m.bootMs / 1000).toFixed(1)} s, checkpoint ${(m.checkpointMs / 1000).toFixed(1)} s`,
  )
  return 0
}

async function resumeCommand(argvAll: string[]): Promise<number> {
  // Everything after `--` is the user's QEMU command line, untouched.
  const dash = argvAll.indexOf('--')
  const argv = dash < 0 ? argvAll : argvAll.slice(0, dash)
  const command = dash < 0 ? undefined : argvAll.slice(dash + 1)
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      mode: { type: 'string', default: 'faultline' },
      policy: { type: 'string' },
      trace: { type: 'string' },
      snapshot: { type: 'string' },
      learn: { type: 'string' },
      cold: { type: 'boolean' },
      recheck: { type: 'boolean' },
      cpus: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(VM_USAGE)
    return 0
  }
  if (!values.dir) throw new UsageError('vm resume: --dir VMDIR is required')
  const mode = values.mode as ResumeMode
  if (!RESUME_MODES.includes(mode)) throw new UsageError(`--mode ${values.mode}: expected one of ${RESUME_MODES.join(', ')}`)
  const vm = VmDir.open(values.dir)
  if (vm.meta.kind === 'external' || command !== undefined) return resumeExternalCommand(vm, command ?? [], values)
  if (values.cpus !== undefined) pinProcess(values.cpus)
  const progress = new Progress('extract RAM', vm.ramBytes)
  const report = await resumeVmDir(vm, {
    mode,
    policy: values.policy,
    tracePath: values.trace === undefined ? undefined : resolve(values.trace),
    snapshotPath: values.snapshot,
    learnDir: learnDirOption(values.learn),
    cpus: values.cpus,
    recheck: values.recheck,
    beforeLaunch: values.cold
      ? () => {
          for (const f of vm.files) dropFileCache(f)
        }
      : undefined,
    log: line => {
      progress.clear()
      say(line)
    },
    onProgress: progress.update,
  })
  progress.clear()
  if (values.json) console.log(JSON.stringify({ dir: vm.dir, ramMiB: vm.meta.ramMiB, cache: values.cold ? 'cold' : 'warm', ...report }))
  else console.log(formatReport(vm, report))
  return report.match ? 0 : 1
}

async function resumeExternalCommand(
  vm: VmDir,
  command: string[],
  values: {
    mode?: string
    policy?: string
    trace?: string
    snapshot?: string
    learn?: string
    cold?: boolean
    recheck?: boolean
    cpus?: string
    json?: boolean
  },
): Promise<number> {
  if (values.mode !== 'faultline' || values.recheck || values.json || values.cpus !== undefined) {
    throw new UsageError(
      'vm resume -- QEMU ...: only the faultline mode, without --recheck, --json or --cpus (the mmap and eager resumes of your own VM are your QEMU command line with share=off or with the stream)',
    )
  }
  if (values.cold) for (const f of vm.files) dropFileCache(f)
  const r = await resumeExternalVm(vm, {
    command,
    policy: values.policy,
    tracePath: values.trace === undefined ? undefined : resolve(values.trace),
    snapshotPath: values.snapshot,
    learnDir: learnDirOption(values.learn),
    log: say,
  })
  say(
    `${vm.dir}: resumed (pid ${r.child.pid}): state loaded ${ms(r.stateLoadedMs)}, running ${ms(r.runningMs)} after QEMU started; serving its RAM until it exits`,
  )
  // The terminal belongs to QEMU now: an interrupt goes to it, and it decides.
  const ignore = (): void => {}
  process.on('SIGINT', ignore)
  const end = await r.finished
  process.removeListener('SIGINT', ignore)
  const s = end.session
  if (s)
    say(
      `session ended (${s.endReason}): ${describeMap(s)}; ${s.faults} faults, pages installed ${s.pagesInstalled.join('/')} (fault/prefetch/background), ${formatBytes(s.bytesRead)} read`,
    )
  if (end.sessionError) say(`page server session failed: ${end.sessionError}`)
  return end.code ?? 1
}

/** The human summary of one resume. */
export function formatReport(vm: VmDir, r: VmDirResumeReport): string {
  const how = r.mode === 'faultline' ? `faultline (${r.policy})` : r.mode
  const t = r.timings
  const lines = [
    r.match
      ? `${vm.dir}: resumed ${vm.meta.ramMiB} MiB guest via ${how}: checksum ${r.checksum} matches`
      : `${vm.dir}: resumed ${vm.meta.ramMiB} MiB guest via ${how}: CHECKSUM MISMATCH: guest printed ${r.checksum}${r.recheckHex && r.recheckHex !== r.checksum ? ` then ${r.recheckHex}` : ''}, recorded ${r.expected}`,
    `  since QEMU started: monitor up ${ms(t.qmpReadyMs)}, state loaded ${ms(t.stateLoadedMs)}, running ${ms(t.runningMs)}, ` +
      `first reply ${ms(t.firstReplyMs)}, checksum ${ms(t.checksumMs)}`,
    `  workload (checksum of ${vm.guest.workloadMiB} MiB): ${ms(t.workloadMs)}${r.recheckMs !== undefined ? `; again with all memory in: ${ms(r.recheckMs)}` : ''}`,
  ]
  const s = r.session
  if (s) {
    lines.push(`  guest RAM: ${describeMap(s)}${s.map === 'cache' && r.cacheDescription ? ` (${r.cacheDescription})` : ''}`)
    if (r.learnedSet !== undefined) lines.push(`  --learn: prefetched the set learned for this snapshot by earlier resumes (${r.learnedSet})`)
    lines.push(
      `  page server: ${s.faults} faults, pages installed ${s.pagesInstalled.join('/')} (fault/prefetch/background), ` +
        `${s.zeroPagesInstalled} zero; ${formatBytes(s.bytesRead)} read; service p50 ${(s.latency.p50Ns / 1000).toFixed(1)} µs p99 ${(s.latency.p99Ns / 1000).toFixed(1)} µs; ` +
        `CPU ${Number.isFinite(s.cpuNs) ? `${(s.cpuNs / 1e6).toFixed(0)} ms` : '-'}`,
    )
  }
  if (r.serverError) lines.push(`  page server session failed: ${r.serverError}`)
  return lines.join('\n')
}

function learnDirOption(dir: string | undefined): string | undefined {
  return dir === undefined ? undefined : resolve(learnDir(dir)!)
}

/** What backed QEMU's RAM, as the session saw it. */
function describeMap(s: { map: 'anonymous' | 'cache'; cache: { wakes: number; privatePages: number } }): string {
  return s.map === 'cache'
    ? `the server's decoded cache mapped over it by the shim (MAP_PRIVATE; hits never reach the server; ${s.cache.privatePages} pages served privately on misses, ${s.cache.wakes} wakes)`
    : 'anonymous memory, every page copied in (UFFDIO_COPY): the server did not grant its decoded cache (its log says why)'
}

function ms(v: number): string {
  return v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${v.toFixed(0)} ms`
}
