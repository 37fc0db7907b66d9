// `faultline bench policies`: argument parsing and the table; the work is in src/bench/policies.ts.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { runPolicyBench, type PolicyRun } from '../bench/policies.js'
import { Progress } from './progress.js'
import { formatTable, median, ms } from '../util/format.js'
import { intOption } from './options.js'

export const BENCH_POLICIES_USAGE = `usage: faultline bench policies [--mib N] [--workload W] [--rounds N] [--policies A,B,...] [--dir DIR] [--markdown]

  --mib N          guest RAM and synthetic image size in MiB (default 64)
  --workload W     mixed (default: 4 interleaved sequential scans + random pages, ~31% of RAM),
                   or any guest workload: sequential[:F], random:F, pages:FILE
  --rounds N       runs of every policy, interleaved; the table shows medians (default 3)
  --seed N         image and workload seed (default 1)
  --policies LIST  comma-separated policy specs (default: every built-in; workingset and
                   background:TRACE use a trace recorded under ondemand in the same run)
  --dir DIR        keep the image, snapshot and recorded trace in DIR (default: temporary)
  --markdown       print the table as markdown`

export async function benchPoliciesCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      mib: { type: 'string', default: '64' }, workload: { type: 'string', default: 'mixed' },
      rounds: { type: 'string', default: '3' }, seed: { type: 'string', default: '1' }, policies: { type: 'string' },
      dir: { type: 'string' }, markdown: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) { console.log(BENCH_POLICIES_USAGE); return 0 }
  const mib = intOption('mib', values.mib!, 1, 65536)
  const rounds = intOption('rounds', values.rounds!, 1, 100)
  const seed = intOption('seed', values.seed!, 0, 2 ** 31)
  const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'faultline-bench-policies-'))
  const imageProgress = new Progress(`image ${mib} MiB`, mib * 2 ** 20)
  const runProgress = new Progress('policy runs', 1)
  try {
    const result = await runPolicyBench({
      dir, mib, workload: values.workload!, rounds, seed,
      policies: values.policies?.split(',').map(s => s.trim()).filter(Boolean),
      onImageProgress: imageProgress.update,
      onProgress: (done, total) => runProgress.update(done, total),
    })
    runProgress.done(`${rounds} round(s) of ${result.policies.length} policies done`)
    const med = (runs: PolicyRun[], f: (r: PolicyRun) => number) => median(runs.map(f))
    const base = result.runs[result.policies[0]]
    const baseTotal = med(base, r => r.totalNs)
    const rows = result.policies.map(p => {
      const runs = result.runs[p]
      const total = med(runs, r => r.totalNs)
      return [
        result.names[p].split(result.recordedTrace).join('REC'), ms(total), `${(total / baseTotal).toFixed(2)}x`, ms(med(runs, r => r.resumeNs)),
        Math.round(med(runs, r => r.faults)), Math.round(med(runs, r => r.pagesInstalled)), Math.round(med(runs, r => r.pagesUntouched)),
        ms(med(runs, r => r.serverCpuNs)), (med(runs, r => r.faultP50Ns) / 1000).toFixed(1),
      ]
    })
    const verified = result.policies.reduce((s, p) => s + result.runs[p].reduce((a, r) => a + r.verifiedPages, 0), 0)
    const mismatches = result.policies.reduce((s, p) => s + result.runs[p].reduce((a, r) => a + r.mismatches, 0), 0)
    console.log(`guest: ${mib} MiB, workload ${result.workload} (${result.pagesTouched} distinct pages touched), ${rounds} round(s), medians; ` +
      `REC = a trace recorded under ondemand on the same workload\n`)
    console.log(formatTable(['policy', 'total ms', `vs ${result.policies[0]}`, 'resume ms', 'faults', 'pages installed',
      'installed never touched', 'server CPU ms', 'fault p50 µs'], rows, { markdown: values.markdown }))
    console.log(`\nmemory verified: ${verified} touched pages compared with the raw image, ${mismatches} mismatches`)
    console.log('total = resume + workload, as the guest measures it; server CPU = the session thread\'s CPU time;\n' +
      'installed never touched = pages the session\'s trace shows installed minus those the guest reports touching')
    return mismatches === 0 ? 0 : 1
  } finally {
    if (!values.dir) rmSync(dir, { recursive: true, force: true })
  }
}
