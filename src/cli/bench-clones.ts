// `faultline bench clones`: N guests of one snapshot resumed at once (mmap, faultline anonymous,
// faultline cache-mapped): time until all are done and host memory while all are alive.
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { CLONE_MODES, MAX_CLONES, runClones, type CloneMode, type ClonesResult } from '../bench/clones.js'
import { formatRatio } from '../bench/report.js'
import type { ColdMethod } from '../bench/proc.js'
import { workloadLabel } from '../bench/resume.js'
import { UsageError } from '../errors.js'
import { formatBytes, formatTable, median } from '../util/format.js'
import { repoPath } from '../util/repo.js'
import { parseWorkload } from './bench-resume.js'
import { choiceItems, intOption, listOption } from './options.js'
import { Progress } from './progress.js'

export const BENCH_CLONES_USAGE = `usage: faultline bench clones --guests N --mib M [--cache cold|warm] [--json] [options]

Resumes N native guests of one snapshot at once, the same workload each, every touched page
verified, in three modes: mmap (MAP_PRIVATE of the raw image), faultline (one server, anonymous
guest memory) and faultline-cache (one server, its decoded cache mapped into every guest).
Reports the time until all are done and the host memory used while all are alive: the server's
shmem (decoded cache) + the guests' anonymous memory + the page cache of the file the mode reads
(docs/benchmarks.md). Needs root (userfaultfd; --cold drop-caches).

  --guests N            guests at once, 1..${MAX_CLONES} (default 16)
  --mib M               guest RAM and image size, MiB (default 256)
  --cache STATE         cold (the mode's file dropped from the page cache first) or warm
                        (default warm)
  --workload W          pattern:percent, e.g. random:25 or sequential:100 (default random:25)
  --modes LIST          of ${CLONE_MODES.join(', ')} (default all)
  --policy P            faultline's fault policy (default ondemand)
  --repeat N            rounds, modes interleaved; medians (default 1)
  --cold METHOD         drop-caches (default) or fadvise (drop only the files: kinder to a shared machine)
  --images DIR          cache of synthetic images (default .cache/bench-images)
  --seed N              image and workload seed (default 1)
  --json                print one JSON object: {"modes": [{"mode", "allDoneMs",
                        "hostMemoryBytes", "mismatches", ...}, ...], ...}`

export async function benchClonesCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      guests: { type: 'string' },
      mib: { type: 'string' },
      cache: { type: 'string', default: 'warm' },
      workload: { type: 'string', default: 'random:25' },
      modes: { type: 'string' },
      policy: { type: 'string', default: 'ondemand' },
      repeat: { type: 'string' },
      cold: { type: 'string', default: 'drop-caches' },
      images: { type: 'string' },
      seed: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(BENCH_CLONES_USAGE)
    return 0
  }
  const guests = intOption('guests', values.guests, 1, MAX_CLONES, 16)
  const mib = intOption('mib', values.mib, 1, 65536, 256)
  const [cache] = choiceItems<'cold' | 'warm'>('cache', [values.cache!], ['cold', 'warm'])
  const [cold] = choiceItems<ColdMethod>('cold', [values.cold!], ['drop-caches', 'fadvise'])
  const modes = choiceItems<CloneMode>('modes', listOption(values.modes ?? CLONE_MODES.join(',')), CLONE_MODES)
  if (modes.length === 0) throw new UsageError('--modes: expected at least one mode')
  const workload = parseWorkload(values.workload!)
  const repeat = intOption('repeat', values.repeat, 1, 100, 1)
  const seed = intOption('seed', values.seed, 0, Number.MAX_SAFE_INTEGER, 1)

  const total = repeat * modes.length * guests * mib * 2 ** 20
  const progress = new Progress(`clones ${guests} x ${mib} MiB`, total)
  let imageProgress: Progress | undefined
  let finishedRounds = 0
  const result = await runClones({
    guests,
    mib,
    cache,
    cold,
    workload,
    modes,
    repeat,
    seed,
    policy: values.policy!,
    imageDir: resolve(values.images ?? repoPath('.cache/bench-images')),
    log: line => {
      progress.clear()
      console.error(`bench: ${line}`)
    },
    onImageProgress: (done, all) => {
      imageProgress ??= new Progress(`image ${mib} MiB`, all)
      imageProgress.update(done, all)
      if (done >= all) imageProgress.done()
    },
    onProgress: (_mode, _round, done, all) => {
      progress.update((finishedRounds * guests + done) * mib * 2 ** 20)
      if (done === all) finishedRounds++
    },
  })
  progress.done()
  const command = `faultline bench clones ${argv.join(' ')}`.trim()
  if (values.json) console.log(JSON.stringify({ command, ...result }))
  else console.log(renderClones(result, command))
  const mismatches = result.modes.reduce((s, m) => s + m.mismatches, 0)
  if (mismatches) console.error(`bench: ${mismatches} touched pages differed from the image`)
  return mismatches === 0 ? 0 : 1
}

/** The human table: a row per mode, ratios to mmap when it ran. */
export function renderClones(result: ClonesResult, command: string): string {
  const o = result.options
  const mmap = result.modes.find(m => m.mode === 'mmap')
  const ratio = (v: number, ref: number | undefined) => (ref !== undefined && ref > 0 ? ` (${formatRatio(v / ref)})` : '')
  const rows = result.modes.map(m => {
    const mem = (pick: (r: ClonesResult['modes'][number]['rounds'][number]) => number | null) => {
      const v = m.rounds.map(pick).filter((x): x is number => x !== null)
      return v.length ? formatBytes(median(v)) : '-'
    }
    const firstAccess = median(m.rounds.flatMap(r => r.firstAccessMs))
    const faults = m.rounds[0].serverFaults === null ? '-' : String(Math.round(median(m.rounds.map(r => r.serverFaults!))))
    return [
      m.mode,
      `${m.allDoneMs.toFixed(1)}${ratio(m.allDoneMs, mmap?.allDoneMs)}`,
      `${formatBytes(m.hostMemoryBytes)}${ratio(m.hostMemoryBytes, mmap?.hostMemoryBytes)}`,
      mem(r => r.shmemBytes),
      mem(r => r.guestAnonBytes),
      mem(r => r.pageCacheBytes),
      mem(r => r.serverAnonBytes),
      firstAccess.toFixed(2),
      faults,
      String(m.mismatches),
    ]
  })
  return [
    `${command}`,
    `${o.guests} guests x ${o.mib} MiB at once, workload ${workloadLabel(o.workload)} (the same pages each), ${o.cache} page cache` +
      `${o.cache === 'cold' ? ` (${o.cold})` : ''}, faultline policy ${o.policy}; ${o.repeat} round(s), medians; ` +
      `${result.modes.reduce((s, m) => s + m.verifiedPages, 0)} touched pages verified`,
    ...(result.cacheDescription ? [`decoded cache: ${result.cacheDescription}`] : []),
    '',
    formatTable(
      [
        'mode',
        'all done ms',
        'host memory',
        'shmem',
        "guests' anon",
        'page cache',
        'server anon (not summed)',
        'first access p50 ms',
        'server faults',
        'mismatches',
      ],
      rows,
    ),
    '',
    "host memory = shmem the server holds (decoded cache) + the guests' anonymous memory + the page cache of the file the mode reads " +
      '(mmap: the raw image, faultline: the snapshot), measured once every guest is done and while all are alive.',
  ].join('\n')
}
