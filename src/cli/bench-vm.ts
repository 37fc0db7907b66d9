// `faultline bench vm`: real QEMU guests resumed eager / mmap / faultline / uffd-c over RAM
// sizes, written to DIR as vm-results.json, vm-results.md and vm-resume-vs-ram*.svg.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import type { ColdMethod } from '../bench/proc.js'
import type { CacheState } from '../bench/resume.js'
import { planMode, runVmSweep, VM_DEFAULT_MODES, type Pinning } from '../bench/vm.js'
import { renderVmMarkdown, renderVmPlot, summarizeVm, vmTimeTable } from '../bench/vm-report.js'
import { DEFAULT_IMAGE_DIR } from '../vm/image.js'
import { parseRamMiB } from '../vm/qemu.js'
import { Progress } from './progress.js'
import { choiceItems, listOption } from './options.js'
import { repoPath } from '../util/repo.js'
import { UsageError } from '../errors.js'

export const BENCH_VM_USAGE = `usage: faultline bench vm [options]

Boots the test guest once per RAM size (kept in --checkpoints), then resumes it in every mode,
interleaved, and checks its memory checksum each time. Writes DIR/vm-results.json,
DIR/vm-results.md and DIR/vm-resume-vs-ram.svg. Needs root, QEMU and about 2.5x each size
of disk for its checkpoint.

  --sizes LIST          guest RAM sizes (default 256M,512M,1G,2G,4G; a size the free
                        memory cannot hold is skipped and reported)
  --modes LIST          eager, mmap, faultline:<policy>, uffd-c[:<pages per fault>]
                        (default ${VM_DEFAULT_MODES.join(',')})
  --cache LIST          warm,cold (default both)
  --cold METHOD         fadvise (drop the VM directory's files, default) or drop-caches
                        (echo 3 > /proc/sys/vm/drop_caches: the whole machine's)
  --pin LIST            unpinned,pinned (default unpinned; pinned needs --cpus)
  --cpus LIST           CPUs for pinned runs: QEMU and the page server (taskset -c), e.g. 0
  --repeat N            rounds; tables show medians and ratios to mmap per round (default 3)
  --workload-fraction F memory the guest's workload fills, 0..0.75 of RAM (default 0.625)
  --checkpoints DIR     one VM directory per size, reused (default .cache/vm-bench)
  --image DIR           guest image (default .cache/vm; built when missing)
  --timeout SECONDS     per resume (default 900)
  --out DIR             where results go (default bench-results)`

export async function benchVmCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      sizes: { type: 'string', default: '256M,512M,1G,2G,4G' },
      modes: { type: 'string' },
      cache: { type: 'string', default: 'warm,cold' },
      cold: { type: 'string', default: 'fadvise' },
      pin: { type: 'string' },
      cpus: { type: 'string' },
      repeat: { type: 'string', default: '3' },
      'workload-fraction': { type: 'string' },
      checkpoints: { type: 'string' },
      image: { type: 'string' },
      timeout: { type: 'string', default: '900' },
      out: { type: 'string', default: 'bench-results' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(BENCH_VM_USAGE)
    return 0
  }
  const sizesMiB = listOption(values.sizes!).map(s => parseRamMiB(s, '--sizes'))
  const modes = values.modes ? listOption(values.modes) : VM_DEFAULT_MODES
  modes.forEach(planMode)
  const caches = choiceItems<CacheState>('cache', listOption(values.cache!), ['warm', 'cold'])
  if (values.cold !== 'drop-caches' && values.cold !== 'fadvise') throw new UsageError(`--cold: expected fadvise or drop-caches, got '${values.cold}'`)
  const pinnings = choiceItems<Pinning>('pin', listOption(values.pin ?? (values.cpus ? 'pinned' : 'unpinned')), ['unpinned', 'pinned'])
  const repeat = Number(values.repeat)
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > 100) throw new UsageError(`--repeat: expected 1..100, got '${values.repeat}'`)
  const fraction = values['workload-fraction'] === undefined ? undefined : Number(values['workload-fraction'])
  if (fraction !== undefined && !(fraction > 0 && fraction <= 0.75))
    throw new UsageError(`--workload-fraction: expected a number in (0, 0.75], got '${values['workload-fraction']}'`)
  const timeoutS = Number(values.timeout)
  if (!(timeoutS > 0)) throw new UsageError(`--timeout: expected seconds > 0, got '${values.timeout}'`)
  const outDir = resolve(values.out!)
  mkdirSync(outDir, { recursive: true })

  const progress = new Progress('vm sweep', 1)
  const snapProgress = new Progress('compress RAM', 1)
  const result = await runVmSweep({
    sizesMiB,
    modes,
    caches,
    pinnings,
    cpus: values.cpus,
    repeat,
    workloadFraction: fraction,
    checkpointDir: resolve(values.checkpoints ?? repoPath('.cache/vm-bench')),
    imageDir: resolve(values.image ?? DEFAULT_IMAGE_DIR),
    cold: values.cold as ColdMethod,
    timeoutMs: timeoutS * 1000,
    log: line => {
      progress.clear()
      snapProgress.clear()
      console.error(`bench vm: ${line}`)
    },
    onProgress: progress.update,
    onSnapshotProgress: snapProgress.update,
  })
  progress.done()
  const command = `faultline bench vm ${argv.join(' ')}`.trim()
  writeFileSync(join(outDir, 'vm-results.json'), JSON.stringify({ command, ...result }, null, 1) + '\n')
  writeFileSync(join(outDir, 'vm-results.md'), renderVmMarkdown(result, command))
  const plots: string[] = []
  for (const pinning of pinnings) {
    const name = pinnings.length > 1 ? `vm-resume-vs-ram-${pinning}.svg` : 'vm-resume-vs-ram.svg'
    writeFileSync(join(outDir, name), renderVmPlot(result, pinning))
    plots.push(name)
  }
  const rows = summarizeVm(result.runs)
  for (const pinning of pinnings) {
    for (const cache of caches) {
      console.log(`\nUntil the guest answers, ms from QEMU's start (ratio to mmap), ${cache} cache, ${pinning}\n`)
      console.log(vmTimeTable(rows, 'firstReply', cache, pinning))
      console.log(`\nWorkload right after resume, ms (ratio to mmap), ${cache} cache, ${pinning}\n`)
      console.log(vmTimeTable(rows, 'workload', cache, pinning))
    }
  }
  for (const s of result.skipped) console.log(`skipped ${s.sizeMiB} MiB: ${s.reason}`)
  console.log(`\nwrote ${join(outDir, 'vm-results.json')}, vm-results.md, ${plots.join(', ')}`)
  const bad = result.runs.filter(r => !r.ok)
  if (bad.length) console.error(`bench vm: ${bad.length} of ${result.runs.length} resumes failed or printed another checksum`)
  // A size skipped for lack of memory is reported above, not a failure.
  return bad.length === 0 ? 0 : 1
}
