// `faultline bench policies`: argument parsing and the tables; the work is in
// src/bench/policies.ts (live guests) and src/bench/trace-policies.ts (--traces, simulated).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { runPolicyBench, type PolicyRun } from '../bench/policies.js'
import {
  columnLabel,
  DEFAULT_TRACE_POLICIES,
  loadTraceSet,
  renderTracePoliciesSvg,
  runTracePolicies,
  winner,
  type TracePolicyResult,
} from '../bench/trace-policies.js'
import { UsageError } from '../errors.js'
import { DEFAULT_COST_MODEL, describeCostModel, loadCostModel, STORAGE_TIERS, type StorageTier } from '../bench/cost-model.js'
import { Progress } from './progress.js'
import { formatTable, median, ms } from '../util/format.js'
import { decimalOption, intOption, listOption } from './options.js'

export const BENCH_POLICIES_USAGE = `usage: faultline bench policies [--mib N] [--workload W] [--rounds N] [--policies A,B,...] [--dir DIR] [--markdown]

  --mib N          guest RAM and synthetic image size in MiB (default 64)
  --workload W     mixed (default: 4 interleaved sequential scans + random pages, ~31% of RAM),
                   or any guest workload: sequential[:F], random:F, pages:FILE
  --rounds N       runs of every policy, interleaved; the table shows medians (default 3)
  --seed N         image and workload seed (default 1)
  --policies LIST  comma-separated policy specs (default: every built-in; workingset and
                   background:TRACE use a trace recorded under ondemand in the same run)
  --dir DIR        keep the image, snapshot and recorded trace in DIR (default: temporary)
  --markdown       print the table as markdown

usage: faultline bench policies --traces DIR [--policies A,B,...] [--storage warm|cold|remote]
                                [--costs FILE] [--gap-scale F] [--out DIR] [--markdown]

  Every policy over every trace in DIR (its manifest.json, or every *.fltrace[.gz]; NAME-N is
  run N of program NAME) by simulation (trace simulate), no guest: one row per trace, faults
  per access and estimated time relative to ondemand, the best policy per trace, and a
  column learned from run 1 and tested on this run.
  --policies LIST  default ${DEFAULT_TRACE_POLICIES.join(',')}
                   ({self} = the trace itself, {run1} = run 1 of the same program)
  --storage TIER   where the stored bytes are: warm (page cache, default), cold, remote
  --costs FILE     cost model (default ${DEFAULT_COST_MODEL})
  --gap-scale F    multiplies the guest's recorded running time between faults (default 1;
                   0.05: a guest 20x faster, e.g. under KVM where the traces ran under TCG)
  --out DIR        also write DIR/results.md, DIR/results.json and DIR/policies.svg`

export async function benchPoliciesCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      mib: { type: 'string', default: '64' },
      workload: { type: 'string', default: 'mixed' },
      rounds: { type: 'string', default: '3' },
      seed: { type: 'string', default: '1' },
      policies: { type: 'string' },
      dir: { type: 'string' },
      markdown: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      traces: { type: 'string' },
      storage: { type: 'string' },
      costs: { type: 'string' },
      'gap-scale': { type: 'string' },
      out: { type: 'string' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(BENCH_POLICIES_USAGE)
    return 0
  }
  if (values.traces !== undefined) return tracesCommand(argv, values)
  for (const flag of ['storage', 'costs', 'gap-scale', 'out'] as const) if (values[flag] !== undefined) throw new UsageError(`--${flag} goes with --traces DIR`)
  const mib = intOption('mib', values.mib!, 1, 65536)
  const rounds = intOption('rounds', values.rounds!, 1, 100)
  const seed = intOption('seed', values.seed!, 0, 2 ** 31)
  const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'faultline-bench-policies-'))
  const imageProgress = new Progress(`image ${mib} MiB`, mib * 2 ** 20)
  const runProgress = new Progress('policy runs', 1)
  try {
    const result = await runPolicyBench({
      dir,
      mib,
      workload: values.workload!,
      rounds,
      seed,
      policies: values.policies
        ?.split(',')
        .map(s => s.trim())
        .filter(Boolean),
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
        result.names[p].split(result.recordedTrace).join('REC'),
        ms(total),
        `${(total / baseTotal).toFixed(2)}x`,
        ms(med(runs, r => r.resumeNs)),
        Math.round(med(runs, r => r.faults)),
        Math.round(med(runs, r => r.pagesInstalled)),
        Math.round(med(runs, r => r.pagesUntouched)),
        ms(med(runs, r => r.serverCpuNs)),
        (med(runs, r => r.faultP50Ns) / 1000).toFixed(1),
      ]
    })
    const verified = result.policies.reduce((s, p) => s + result.runs[p].reduce((a, r) => a + r.verifiedPages, 0), 0)
    const mismatches = result.policies.reduce((s, p) => s + result.runs[p].reduce((a, r) => a + r.mismatches, 0), 0)
    console.log(
      `guest: ${mib} MiB, workload ${result.workload} (${result.pagesTouched} distinct pages touched), ${rounds} round(s), medians; ` +
        `REC = a trace recorded under ondemand on the same workload\n`,
    )
    console.log(
      formatTable(
        [
          'policy',
          'total ms',
          `vs ${result.policies[0]}`,
          'resume ms',
          'faults',
          'pages installed',
          'installed never touched',
          'server CPU ms',
          'fault p50 µs',
        ],
        rows,
        { markdown: values.markdown },
      ),
    )
    console.log(`\nmemory verified: ${verified} touched pages compared with the raw image, ${mismatches} mismatches`)
    console.log(
      "total = resume + workload, as the guest measures it; server CPU = the session thread's CPU time;\n" +
        "installed never touched = pages the session's trace shows installed minus those the guest reports touching",
    )
    return mismatches === 0 ? 0 : 1
  } finally {
    if (!values.dir) rmSync(dir, { recursive: true, force: true })
  }
}

async function tracesCommand(
  argv: string[],
  values: { traces?: string; policies?: string; storage?: string; costs?: string; 'gap-scale'?: string; out?: string; markdown?: boolean },
): Promise<number> {
  for (const flag of ['mib', 'workload', 'rounds', 'seed', 'dir']) {
    if (argv.includes(`--${flag}`)) throw new UsageError(`--${flag} is for live runs, not with --traces (which simulates recorded traces)`)
  }
  const storage = (values.storage ?? 'warm') as StorageTier
  if (!STORAGE_TIERS.includes(storage)) throw new UsageError(`--storage: expected ${STORAGE_TIERS.join(', ')}, got '${values.storage}'`)
  const costs = values.costs ?? DEFAULT_COST_MODEL
  const gapScale = decimalOption('gap-scale', values['gap-scale'], 0, 1000, 1)
  const model = loadCostModel(costs)
  const traces = loadTraceSet(values.traces!)
  const policies = values.policies ? listOption(values.policies) : DEFAULT_TRACE_POLICIES
  const progress = new Progress('simulations', 1)
  const result = await runTracePolicies({ traces, policies, model, tier: storage, gapScale, onProgress: (d, t) => progress.update(d, t) })
  progress.done()
  const command = `faultline bench policies ${argv.join(' ')}`
  const date = new Date().toISOString().slice(0, 10)
  const md = formatTraceTables(result, {
    command,
    date,
    markdown: values.markdown === true || values.out !== undefined,
    modelLines: describeCostModel(model, costs, storage),
  })
  console.log(
    values.markdown || values.out ? md : formatTraceTables(result, { command, date, markdown: false, modelLines: describeCostModel(model, costs, storage) }),
  )
  if (values.out) {
    const out = resolve(values.out)
    mkdirSync(out, { recursive: true })
    writeFileSync(join(out, 'results.md'), `${md}\n`)
    writeFileSync(
      join(out, 'results.json'),
      `${JSON.stringify({ command, date, storage, gapScale, costModel: { path: costs, ...model }, policies, rows: result.rows }, null, 2)}\n`,
    )
    writeFileSync(join(out, 'policies.svg'), renderTracePoliciesSvg(result, `estimated time relative to ondemand per trace (${storage} storage; ${date})`))
    console.error(`faultline: wrote ${join(out, 'results.md')}, results.json and policies.svg`)
  }
  return 0
}

/** The per-trace tables: faults per access, estimated time relative to ondemand, pages never
 * touched; libCacheSim's miss-ratio tables are the model (a row per trace, a column per policy). */
export function formatTraceTables(r: TracePolicyResult, o: { command: string; date: string; markdown: boolean; modelLines: string[] }): string {
  const labels = r.policies.map(columnLabel)
  const base = r.policies.indexOf('ondemand')
  const cell = (v: number | undefined, digits = 3) => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits))
  const learned = (spec: string) => spec.includes('{self}')
  const faults = r.rows.map(row => [row.entry.name, row.accesses, ...row.cells.map(c => cell(c ? c.faults / Math.max(1, row.accesses) : undefined))])
  const time = r.rows.map(row => {
    const b = base >= 0 ? row.cells[base] : undefined
    const best = winner(row, learned, r.policies)
    return [
      row.entry.name,
      b ? b.estimatedMs.toFixed(1) : '-',
      ...row.cells.map(c => cell(c && b ? c.estimatedMs / b.estimatedMs : undefined, 2)),
      best >= 0 ? labels[best] : '-',
    ]
  })
  const wasted = r.rows.map(row => [row.entry.name, ...row.cells.map(c => (c ? `${c.wastedPages}` : '-'))])
  const traces = r.rows.map(row => [
    row.entry.name,
    row.entry.what ?? '-',
    `${row.regionMiB.toFixed(0)} MiB`,
    row.accesses,
    row.threads,
    row.durationMs.toFixed(0),
    row.pagesFrom.split(' (')[0],
  ])
  const md = { markdown: o.markdown }
  return [
    `Command: \`${o.command}\` (${o.date}); simulated with trace simulate's session model, no guest.`,
    '',
    formatTable(['trace', 'what it ran', 'RAM', 'accesses', 'threads', 'last access ms', 'page kinds from'], traces, md),
    '',
    'Faults per access (faults / pages first touched; ondemand = 1). Lower is better.',
    '',
    formatTable(['trace', 'accesses', ...labels], faults, md),
    '',
    'Estimated time relative to ondemand (its estimate in ms). Lower is better; best = the lowest of the policies that need no trace of the same run.',
    '',
    formatTable(['trace', 'ondemand ms', ...labels, 'best'], time, md),
    '',
    'Pages installed that the trace never touched.',
    '',
    formatTable(['trace', ...labels], wasted, md),
    '',
    ...o.modelLines,
  ].join('\n')
}
