// Scratch driver: boot a guest, checksum, checkpoint, then resume it eager / mmap / floor
// (uffd-floor) / faultline (faultline serve), the last two through the LD_PRELOAD shim,
// and check each resumed guest's checksum against the source's.
// Run through scripts/vm/try.sh, which compiles this file and src/vm/ to a scratch dir.
import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { describeError } from '../../src/errors.js'
import {
  accelFromEnv, bootSource, checkpointVm, dropFileCache, faultlineServer, floorServer,
  loadGuestImage, PageServerProcess, parseFloorStats, requestChecksum, resumeVm,
  type ResumeMode, type ServerProcessOptions,
} from '../../src/vm/index.js'

type TryMode = 'eager' | 'mmap' | 'floor' | 'faultline'

interface Row {
  mode: string
  cache: string
  ok: boolean
  qmpReadyMs: number
  stateLoadedMs: number
  runningMs: number
  checksumMs: number
  recheckMs: number
  server?: string
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      repo: { type: 'string', default: process.cwd() },
      image: { type: 'string' },
      work: { type: 'string', default: '/tmp/fl-vm-try' },
      'ram-mib': { type: 'string', default: '256' },
      'workload-mib': { type: 'string' },
      modes: { type: 'string', default: 'eager,mmap,floor,faultline' },
      policy: { type: 'string', default: 'ondemand,readahead:15' },
      cache: { type: 'string', default: 'warm,cold' },
      'batch-pages': { type: 'string', default: '1,16' },
      'reuse-checkpoint': { type: 'boolean', default: false },
      repeat: { type: 'string', default: '1' },
    },
  })
  const repo = values.repo!
  const image = loadGuestImage(values.image ?? join(repo, '.cache/vm'))
  const ramMiB = Number(values['ram-mib'])
  const workloadMiB = values['workload-mib'] ? Number(values['workload-mib']) : undefined
  const accel = accelFromEnv()
  const work = values.work!
  mkdirSync(work, { recursive: true })
  const ramFile = join(work, 'ram.img')
  const stateFile = join(work, 'state.mig')
  const eagerStateFile = join(work, 'state-with-ram.mig')

  let before: string
  if (values['reuse-checkpoint']) {
    before = readFileSync(join(work, 'checksum'), 'utf8').trim()
    log(`reusing checkpoint in ${work}, checksum ${before}`)
  } else {
    log(`booting ${ramMiB} MiB guest (${accel})`)
    const src = await bootSource({ image, ramMiB, workloadMiB, ramFile, accel })
    log(`source: checksum ${src.checksum.hex} over ${src.checksum.pages} pages, ${ms(src.bootMs)} after launch`)
    const again = await requestChecksum(src.vm.console, 60_000)
    if (again.hex !== src.checksum.hex) throw new Error(`source checksum changed on its own: ${src.checksum.hex} -> ${again.hex}`)
    const cp = await checkpointVm(src.vm, { stateFile, eagerStateFile })
    await src.vm.quit()
    before = src.checksum.hex
    writeFileSync(join(work, 'checksum'), before + '\n')
    log(`checkpoint: RAM ${mib(cp.ramBytes)}, state ${kib(cp.stateBytes)} in ${ms(cp.stateMs)}, state+RAM ${mib(cp.eagerStateBytes!)} in ${ms(cp.eagerStateMs!)}`)
  }

  const modes = values.modes!.split(',') as TryMode[]
  // Private copies of the native binaries: native/build/ may be rebuilt under a long run.
  const bin = join(work, 'bin')
  mkdirSync(bin, { recursive: true })
  for (const name of ['uffd-floor', 'libfaultline-shim.so']) {
    const from = join(repo, 'native/build', name)
    if (existsSync(from)) copyFileSync(from, join(bin, name))
  }
  const snapFile = join(work, 'ram.flsnap')
  if (modes.includes('faultline') && (!existsSync(snapFile) || statSync(snapFile).mtimeMs < statSync(ramFile).mtimeMs)) {
    log('compressing the RAM image: faultline snapshot create')
    execFileSync(process.execPath, [join(repo, 'bin/faultline.js'), 'snapshot', 'create', ramFile, snapFile], { stdio: 'inherit' })
  }

  // Every variant: [label, resume mode, page server to start first].
  const variants: Array<[string, ResumeMode, ServerProcessOptions | undefined]> = []
  const socketPath = join(work, 'server.sock')
  for (const mode of modes) {
    if (mode === 'floor') {
      for (const b of values['batch-pages']!.split(',').map(Number)) {
        variants.push([`floor/${b}p`, 'faultline', floorServer({ binary: join(bin, 'uffd-floor'), socketPath, rawPath: ramFile, batchPages: b })])
      }
    } else if (mode === 'faultline') {
      for (const policy of values.policy!.split(',')) {
        variants.push([`fl/${policy}`, 'faultline', faultlineServer({ cliPath: join(repo, 'bin/faultline.js'), snapshotPath: snapFile, socketPath, policy })])
      }
    } else {
      variants.push([mode, mode, undefined])
    }
  }

  const rows: Row[] = []
  for (let i = 0; i < Number(values.repeat); i++) {
    for (const cache of values.cache!.split(',')) {
      for (const [label, mode, server] of variants) {
        if (cache === 'cold') for (const f of [ramFile, stateFile, eagerStateFile, snapFile]) if (existsSync(f)) dropFileCache(f)
        rows.push(await runOne(label, mode, server, cache))
      }
    }
  }

  async function runOne(label: string, mode: ResumeMode, serverOptions: ServerProcessOptions | undefined, cache: string): Promise<Row> {
    const server = serverOptions ? await PageServerProcess.start(serverOptions) : undefined
    try {
      const r = await resumeVm({
        mode, image, ramMiB, workloadMiB, ramFile, stateFile, eagerStateFile, accel,
        name: label,
        faultline: server ? { socketPath: server.socketPath, shimPath: join(bin, 'libfaultline-shim.so') } : undefined,
      })
      // A second checksum with every page resident: what the guest's own work costs.
      const t0 = Number(process.hrtime.bigint())
      const again = await requestChecksum(r.vm.console, 120_000)
      const recheckMs = (again.atNs - t0) / 1e6
      await r.vm.quit()
      const summary = server ? serverSummary(server.label, await server.stop()) : undefined
      const ok = r.checksum.hex === before && again.hex === before
      const row: Row = { mode: label, cache, ok, ...r.timings, recheckMs, server: summary }
      log(`${label.padEnd(16)} ${cache}: ${ok ? 'checksum OK' : `CHECKSUM MISMATCH ${r.checksum.hex}`}; qmp ${ms(row.qmpReadyMs)}, state loaded ${ms(row.stateLoadedMs)}, running ${ms(row.runningMs)}, checksum ${ms(row.checksumMs)} (recheck ${ms(recheckMs)})` +
        (summary ? `; ${summary}` : ''))
      return row
    } catch (err) {
      if (server) log(`${server.label} said: ${server.lastLine()}`)
      throw err
    }
  }

  console.log(`\n${'mode'.padEnd(16)} cache  qmp    loaded  running  checksum  recheck  ok`)
  for (const r of rows) {
    console.log(`${r.mode.padEnd(16)} ${r.cache.padEnd(5)} ${f(r.qmpReadyMs, 6)} ${f(r.stateLoadedMs, 7)} ${f(r.runningMs, 8)} ${f(r.checksumMs, 9)} ${f(r.recheckMs, 8)}  ${r.ok ? 'yes' : 'NO'}`)
  }
  if (rows.some((r) => !r.ok)) process.exitCode = 1
}

/** One line on how the page server did: faults and service time. */
function serverSummary(label: string, out: { stdout: string; stderr: string }): string {
  if (label === 'uffd-floor') {
    const st = parseFloorStats(out)
    return `${st.faults} faults, median ${((st.service_median_ns ?? 0) / 1000).toFixed(1)} us`
  }
  const ended = out.stderr.split('\n').find((l) => l.includes(' ended ')) ?? out.stderr.trim().split('\n').pop() ?? ''
  return ended.replace(/^faultline: session \d+ /, '')
}

const f = (v: number, w: number): string => v.toFixed(0).padStart(w)
const ms = (v: number): string => `${v.toFixed(0)} ms`
const kib = (b: number): string => `${(b / 1024).toFixed(0)} KiB`
const mib = (b: number): string => `${(b / 1048576).toFixed(1)} MiB`
function log(s: string): void {
  console.log(`try: ${s}`)
}

main().catch((err: unknown) => {
  console.error(`try: ${describeError(err)}`)
  process.exitCode = 1
})
