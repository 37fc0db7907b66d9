// `faultline bench resume` (npm run bench): the resume sweep, written to DIR as results.json,
// results.md and resume-vs-ram.svg, with the time tables printed.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { cacheTitle, modeNotes, renderMarkdown, renderResumePlot, summarize, timeTables } from '../bench/report.js'
import { formatSequentialRead } from '../bench/proc.js'
import { CACHE_STATES, checkMode, defaultModes, runSweep, workloadLabel, type AccessPattern, type CacheState, type Workload } from '../bench/resume.js'
import type { ColdMethod } from '../bench/proc.js'
import { Progress } from './progress.js'
import { choiceItems, listOption } from './options.js'
import { repoPath } from '../util/repo.js'
import { UsageError } from '../errors.js'

export const BENCH_RESUME_USAGE = `usage: faultline bench resume [--quick] [options]

Resumes the native guest in every mode, interleaved, and writes DIR/results.json,
DIR/results.md and DIR/resume-vs-ram.svg. Needs root (userfaultfd, drop_caches).

  --quick               256 and 512 MiB, working sets 5% and 25%, 2 rounds (a few minutes)
  --sizes LIST          guest RAM sizes, e.g. 256M,1G,8G (default 256M,512M,1G,2G,4G,8G;
                        a size the free memory cannot hold is skipped and reported)
  --working-sets LIST   percent of RAM touched (default 5,25,100)
  --patterns LIST       sequential,random (default both)
  --workloads LIST      exactly these instead of patterns x working sets, e.g.
                        random:5,random:25,sequential:100 (pattern:percent)
  --modes LIST          eager, eager-lz4, mmap, faultline:<policy> (anonymous guest memory),
                        faultline-cache:<policy> (the server's decoded cache mapped), uffd-c;
                        faultline:learned and faultline-cache:learned prefetch the set an
                        earlier run of the same workload recorded (serve --learn)
                        (default: all, with every built-in policy that takes no argument)
  --cache LIST          cold, warm (page cache), hot (warm, and the server's decoded cache full
                        from an earlier guest) (default all three)
  --repeat N            rounds; tables show medians (default 3)
  --cold METHOD         drop-caches (echo 3 > /proc/sys/vm/drop_caches, default) or
                        fadvise (drop only the image and snapshot: kinder to a shared machine)
  --cpus LIST           pin guest and server to these CPUs (taskset -c), e.g. 0
  --ffi BACKEND         FFI of the faultline server: koffi (default) or ffi-napi
  --images DIR          cache of synthetic images, generated once (default .cache/bench-images)
  --out DIR             where results go (default bench-results)
  --plot-workload W     workload the plot shows (default the first random one, e.g. 'random 5%')
  --seed N              image and workload seed (default 1)
  --no-verify           skip checking touched pages against the raw image after each run`

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([MG])?(?:i?B)?$/i

/** `256M`, `1G`, `8GiB` or a plain number of MiB -> MiB. */
export function parseSizeMiB(text: string): number {
  const m = SIZE_RE.exec(text.trim())
  if (!m) throw new UsageError(`--sizes: expected a size like 256M or 2G, got '${text}'`)
  const mib = Number(m[1]) * ((m[2] ?? 'M').toUpperCase() === 'G' ? 1024 : 1)
  if (!Number.isInteger(mib) || mib < 1) throw new UsageError(`--sizes: '${text}' is not a whole number of MiB`)
  return mib
}

/** `random:25` -> random access to 25% of RAM. */
export function parseWorkload(text: string): Workload {
  const m = /^(random|sequential):(\d+(?:\.\d+)?)$/.exec(text.trim())
  const n = m ? Number(m[2]) : NaN
  if (!m || !(n > 0 && n <= 100)) throw new UsageError(`--workloads: expected pattern:percent like random:25 or sequential:100, got '${text}'`)
  return { pattern: m[1] as AccessPattern, fraction: n / 100 }
}

export async function benchResumeCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      sizes: { type: 'string' },
      'working-sets': { type: 'string' },
      patterns: { type: 'string' },
      workloads: { type: 'string' },
      modes: { type: 'string' },
      cache: { type: 'string' },
      repeat: { type: 'string' },
      cold: { type: 'string', default: 'drop-caches' },
      cpus: { type: 'string' },
      ffi: { type: 'string', default: 'koffi' },
      images: { type: 'string' },
      out: { type: 'string', default: 'bench-results' },
      'plot-workload': { type: 'string' },
      seed: { type: 'string', default: '1' },
      'no-verify': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(BENCH_RESUME_USAGE)
    return 0
  }
  const quick = values.quick ?? false
  const sizesMiB = listOption(values.sizes ?? (quick ? '256M,512M' : '256M,512M,1G,2G,4G,8G')).map(parseSizeMiB)
  const percents = listOption(values['working-sets'] ?? (quick ? '5,25' : '5,25,100')).map(p => {
    const n = Number(p)
    if (!(n > 0 && n <= 100)) throw new UsageError(`--working-sets: expected percentages in (0, 100], got '${p}'`)
    return n / 100
  })
  const patterns = choiceItems<AccessPattern>('patterns', listOption(values.patterns ?? 'random,sequential'), ['sequential', 'random'])
  const workloads: Workload[] =
    values.workloads !== undefined
      ? listOption(values.workloads).map(parseWorkload)
      : patterns.flatMap(pattern => percents.map(fraction => ({ pattern, fraction })))
  const caches = choiceItems<CacheState>('cache', listOption(values.cache ?? CACHE_STATES.join(',')), [...CACHE_STATES])
  const repeat = Number(values.repeat ?? (quick ? 2 : 3))
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > 100) throw new UsageError(`--repeat: expected 1..100, got '${values.repeat}'`)
  if (values.cold !== 'drop-caches' && values.cold !== 'fadvise') throw new UsageError(`--cold: expected drop-caches or fadvise, got '${values.cold}'`)
  if (values.ffi !== 'koffi' && values.ffi !== 'ffi-napi') throw new UsageError(`--ffi: expected koffi or ffi-napi, got '${values.ffi}'`)
  const seed = Number(values.seed)
  if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed: expected a non-negative integer, got '${values.seed}'`)
  const modes = values.modes ? listOption(values.modes) : await defaultModes()
  modes.forEach(checkMode)
  const outDir = resolve(values.out!)
  mkdirSync(outDir, { recursive: true })

  const progress = new Progress('resume sweep', 1)
  let imageProgress: Progress | undefined
  const onImageProgress = (mib: number, done: number, total: number) => {
    if (!imageProgress || imageProgress.label !== `image ${mib} MiB`) {
      progress.clear()
      imageProgress = new Progress(`image ${mib} MiB`, total)
    }
    imageProgress.update(done, total)
    if (done >= total) imageProgress.done()
  }
  const result = await runSweep({
    sizesMiB,
    workloads,
    modes,
    caches,
    repeat,
    seed,
    imageDir: resolve(values.images ?? repoPath('.cache/bench-images')),
    cold: values.cold as ColdMethod,
    cpus: values.cpus,
    verify: !values['no-verify'],
    serverEnv: values.ffi === 'ffi-napi' ? { FAULTLINE_FFI: 'ffi-napi' } : undefined,
    log: line => {
      progress.clear()
      console.error(`bench: ${line}`)
    },
    onProgress: progress.update,
    onImageProgress,
  })
  progress.done()
  const command = `faultline bench resume ${argv.join(' ')}`.trim()
  writeFileSync(join(outDir, 'results.json'), JSON.stringify({ command, ...result }, null, 1) + '\n')
  writeFileSync(join(outDir, 'results.md'), renderMarkdown(result, command))
  const plotWorkload = values['plot-workload'] ?? workloadLabel(workloads.find(w => w.pattern === 'random') ?? workloads[0])
  writeFileSync(join(outDir, 'resume-vs-ram.svg'), renderResumePlot(result, plotWorkload))
  const rows = summarize(result.runs)
  console.log('')
  for (const d of result.diskReads) console.log(`disk, before the ${d.sizeMiB} MiB runs: ${formatSequentialRead(d)}`)
  for (const note of modeNotes(modes)) console.log(note)
  for (const cache of caches) {
    console.log(`\nTime until the workload is done, ms (ratio to mmap), ${cacheTitle(cache)}\n`)
    console.log(timeTables(rows, 'total', cache))
    console.log(`\nTime to first access after resume starts, ms (ratio to mmap), ${cacheTitle(cache)}\n`)
    console.log(timeTables(rows, 'first', cache))
  }
  for (const s of result.skipped) console.log(`skipped ${s.sizeMiB ?? ''} ${s.mode ?? ''}: ${s.reason}`)
  console.log(`\nwrote ${join(outDir, 'results.json')}, results.md, resume-vs-ram.svg`)
  const mismatches = result.runs.reduce((s, r) => s + r.mismatches, 0)
  if (mismatches) console.error(`bench: ${mismatches} touched pages differed from the image`)
  return mismatches === 0 ? 0 : 1
}
