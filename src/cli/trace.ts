// `faultline trace stats|export|plot|replay|simulate`: argument parsing and output only; the
// work is in src/trace/.
import { mkdtempSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { extname, join } from 'node:path'
import { parseArgs } from 'node:util'
import { exitStatusOf, fileError, UsageError } from '../errors.js'
import { runGuestProcess } from '../bench/guest.js'
import { createPolicy } from '../policy/registry.js'
import { PageServer } from '../server/page-server.js'
import { DEFAULT_COST_MODEL, describeCostModel, loadCostModel, STORAGE_TIERS, type StorageTier } from '../bench/cost-model.js'
import { readPageMap, type PageMap } from '../trace/page-map.js'
import { accessOrder, simSpace, simulatePolicy, type PolicySimulation } from '../bench/simulate.js'
import { exportChunks, exportTrace, type ExportFormat } from '../trace/export.js'
import { TRACE_CAUSE_NAMES } from '../trace/format.js'
import { renderTraceHtml, renderTraceSvg } from '../trace/plot.js'
import { readTrace, type Trace } from '../trace/reader.js'
import { replayPlan, writePagesFile } from '../trace/replay.js'
import { traceStats, type TraceStats } from '../trace/stats.js'
import { decodeLearnedSet, isLearnedSetFile, LEARNED_DEFAULT_KEEP, learnedPages, type LearnedSet } from '../trace/learned-set.js'
import { formatTable } from '../util/format.js'
import { checkOutputPath, identityOf, inputIdentities, ReplacementFile } from '../util/output-file.js'
import { decimalOption, intOption, joinNegativeValues, listOption } from './options.js'

export const TRACE_USAGE = `usage:
  faultline trace stats FILE [--json]
      unique pages, working-set growth, fault rate, service latency, pages installed per cause
  faultline trace export FILE --csv|--jsonl [-o OUT]
      one row per record (to stdout without -o)
  faultline trace plot FILE -o OUT.svg|OUT.html
      address over time, latency CDF and working-set curve
  faultline trace replay FILE (--socket PATH | --snapshot SNAP [--policy P] [--trace OUT])
                         [--verify RAW] [--threads N] [--touched-out FILE]
      the native guest touches the trace's pages in their recorded first-touch order, against
      a running server (--socket) or one started here (--snapshot)
  faultline trace simulate TRACE... --policy P[,Q...] [--snapshot SNAP | --page-map FILE]
                           [--storage warm|cold|remote] [--costs FILE] [--gap-scale F] [--json]
      replays each trace's access order (first touches) through the policies, no guest or uffd:
      faults, pages installed by cause, installed never touched, stored bytes read and the
      time a cost model (bench costs) estimates; --snapshot/--page-map give the page kinds;
      --gap-scale multiplies the guest's recorded running time between faults (0.05: 20x faster)`

/** Where a trace command writes (tests capture it). */
export interface TraceIo {
  stdout: { write(s: string): unknown }
  stderr: { write(s: string): unknown }
}

/** Entry point for `faultline trace ...`; returns the exit status (0 ok, 1 failed, 2 usage). */
export async function traceCommand(argv: string[], io: TraceIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [sub, ...rest] = argv
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    io.stdout.write(`${TRACE_USAGE}\n`)
    return sub === undefined ? 2 : 0
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(`${TRACE_USAGE}\n`)
    return 0
  }
  try {
    switch (sub) {
      case 'stats':
        return stats(rest, io)
      case 'export':
        return await exportCommand(rest, io)
      case 'plot':
        return plot(rest, io)
      case 'replay':
        return await replay(rest, io)
      case 'simulate':
        return await simulate(rest, io)
      default:
        throw new UsageError(`trace: unknown subcommand '${sub}' (stats, export, plot, replay, simulate)`)
    }
  } catch (err) {
    if (exitStatusOf(err) === 2) {
      io.stderr.write(`faultline: ${(err as Error).message}\n`)
      return 2
    }
    throw err
  }
}

function oneFile(positionals: string[], sub: string): string {
  if (positionals.length !== 1) throw new UsageError(`trace ${sub}: expected one trace FILE, got ${positionals.length}`)
  return positionals[0]
}

const us = (ns: number) => `${(ns / 1000).toFixed(1)} µs`
const msText = (ns: number) => `${(ns / 1e6).toFixed(1)} ms`

export function describeTrace(t: Trace): string {
  const h = t.header
  const regions = h.regions.map(r => `${((r.pageCount * h.pageSize) / 2 ** 20).toFixed(1)} MiB at snapshot page ${r.firstPage}`).join(', ')
  return (
    `trace ${t.path}: session ${h.sessionId}, pid ${h.pid}, policy ${h.policy || '?'}, ${h.pageSize}-byte pages, ` +
    `${h.regions.length} region(s) (${regions}), ${t.length} records${t.incomplete ? ' (incomplete: the server did not close it; records up to the last whole one)' : ''}`
  )
}

export function formatStats(t: Trace, s: TraceStats): string {
  const final = s.uniquePagesFaulted
  const lines = [
    describeTrace(t),
    '',
    formatTable(
      ['measure', 'value'],
      [
        ['duration since resume', msText(s.durationNs)],
        ['faults', `${s.faults} (${s.writeFaults} writes, ${s.faultsOnPresentPages} on pages already present) from ${s.threads} thread(s)`],
        ['distinct pages faulted', s.uniquePagesFaulted],
        ['distinct pages installed', s.uniquePagesInstalled],
        ...TRACE_CAUSE_NAMES.map(c => [`pages installed by ${c}`, s.pagesByCause[c]] as [string, number]),
        ['pages installed before resume', `${s.pagesBeforeResume} (in ${msText(s.beforeResumeNs)})`],
        ['fault rate', `${Math.round(s.faultsPerSec)}/s mean, ${Math.round(s.peakFaultsPerSec)}/s peak (10 ms window)`],
        ['service latency', `p50 ${us(s.latency.p50Ns)}, p90 ${us(s.latency.p90Ns)}, p99 ${us(s.latency.p99Ns)}, max ${us(s.latency.maxNs)}`],
        [
          'working set reached',
          `50% at ${msText(s.workingSetTimeNs.p50)}, 90% at ${msText(s.workingSetTimeNs.p90)}, 100% at ${msText(s.workingSetTimeNs.p100)}`,
        ],
      ],
    ),
    '',
    'working-set growth (distinct pages faulted so far)',
    formatTable(
      ['time ms', 'pages', 'of final'],
      s.workingSetGrowth.map(g => [(g.timeNs / 1e6).toFixed(1), g.pages, final ? `${((100 * g.pages) / final).toFixed(0)}%` : '-']),
    ),
  ]
  return lines.join('\n')
}

/** What a learned working set (serve --learn) holds: its sessions, and the set prefetched for
 * each k of the sessions kept. */
function learnedStats(path: string, json: boolean): string {
  let set: LearnedSet
  try {
    set = decodeLearnedSet(readFileSync(path), path)
  } catch (err) {
    throw fileError(path, err, 'cannot read learned set')
  }
  const n = set.sessions.length
  const byK = Array.from({ length: Math.min(n, LEARNED_DEFAULT_KEEP) }, (_, i) => ({ k: i + 1, pages: learnedPages(set, i + 1).length }))
  const last = set.sessions.at(-1)?.pages,
    prev = set.sessions.at(-2)?.pages
  let overlap: number | undefined
  if (last && prev) {
    const p = new Set(prev)
    overlap = [...last].filter(x => p.has(x)).length
  }
  if (json) {
    return JSON.stringify({
      path,
      snapshot: set.snapshot,
      sessions: set.sessions.map(x => ({ endedMs: x.endedMs, pages: x.pages.length })),
      prefetched: byK,
      lastTwoOverlap: overlap,
    })
  }
  const h = set.snapshot
  return [
    `${path}: learned working set of snapshot index CRC ${h.indexCrc.toString(16).padStart(8, '0')} (${h.pageCount} pages of ${h.pageSize} bytes), ${n} session(s) kept`,
    '',
    formatTable(
      ['session', 'ended', 'pages used'],
      set.sessions.map((x, i) => [i + 1, new Date(x.endedMs).toISOString(), x.pages.length]),
    ),
    '',
    formatTable(
      [`seen in at least k of the last ${Math.min(n, LEARNED_DEFAULT_KEEP)}`, 'pages prefetched'],
      byK.map(b => [`k = ${b.k}`, b.pages]),
    ),
    ...(overlap === undefined ? [] : ['', `the last two sessions share ${overlap} of ${last!.length} pages`]),
  ].join('\n')
}

function stats(argv: string[], io: TraceIo): number {
  const { values, positionals } = parseArgs({ args: argv, options: { json: { type: 'boolean' } }, allowPositionals: true, strict: true })
  const file = oneFile(positionals, 'stats')
  if (isLearnedSetFile(file)) {
    io.stdout.write(`${learnedStats(file, values.json === true)}\n`)
    return 0
  }
  const t = readTrace(file)
  const s = traceStats(t)
  io.stdout.write(values.json ? `${JSON.stringify({ path: t.path, header: t.header, incomplete: t.incomplete, ...s })}\n` : `${formatStats(t, s)}\n`)
  return 0
}

async function exportCommand(argv: string[], io: TraceIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { csv: { type: 'boolean' }, jsonl: { type: 'boolean' }, output: { type: 'string', short: 'o' } },
    allowPositionals: true,
    strict: true,
  })
  const file = oneFile(positionals, 'export')
  if (values.csv === values.jsonl) throw new UsageError('trace export: give exactly one of --csv or --jsonl')
  const format: ExportFormat = values.csv ? 'csv' : 'jsonl'
  const out = values.output
  if (!out) {
    const t = readTrace(file)
    // A reader that stops early (| head) closes the pipe: that is not an error.
    if (io.stdout === process.stdout)
      process.stdout.on('error', err => {
        if ((err as NodeJS.ErrnoException).code !== 'EPIPE') throw err
      })
    exportTrace(t, format, chunk => {
      io.stdout.write(chunk)
    })
    return 0
  }
  const input = identityOf(file, `the trace ${file}`)
  const t = readTrace(file)
  // Written beside OUT and renamed over it once complete: an interrupted export leaves OUT as
  // it was (and no temporary behind).
  const dest = ReplacementFile.create(out, { what: `-o ${out}`, inputs: input ? [input] : [], removeOnSignal: true })
  try {
    for (const chunk of exportChunks(t, format)) {
      const buf = Buffer.from(chunk)
      try {
        for (let done = 0; done < buf.length; ) done += writeSync(dest.fd, buf, done, buf.length - done)
      } catch (err) {
        throw fileError(`-o ${out}`, err, 'cannot write')
      }
      // Let a signal (Ctrl-C) in between chunks.
      await new Promise(r => setImmediate(r))
    }
    dest.commit()
  } finally {
    dest.abort()
  }
  io.stderr.write(`faultline: wrote ${t.length} records to ${out}\n`)
  return 0
}

function plot(argv: string[], io: TraceIo): number {
  const { values, positionals } = parseArgs({ args: argv, options: { output: { type: 'string', short: 'o' } }, allowPositionals: true, strict: true })
  const file = oneFile(positionals, 'plot')
  const out = values.output
  if (!out) throw new UsageError('trace plot: -o OUT.svg or -o OUT.html is required')
  const kind = extname(out).toLowerCase()
  if (kind !== '.svg' && kind !== '.html' && kind !== '.htm') throw new UsageError(`trace plot: -o ${out}: expected a .svg or .html file`)
  const input = identityOf(file, `the trace ${file}`)
  const t = readTrace(file)
  const doc = kind === '.svg' ? renderTraceSvg(t) : renderTraceHtml(t)
  const dest = ReplacementFile.create(out, { what: `-o ${out}`, inputs: input ? [input] : [] })
  try {
    const buf = Buffer.from(doc)
    try {
      for (let done = 0; done < buf.length; ) done += writeSync(dest.fd, buf, done, buf.length - done)
    } catch (err) {
      throw fileError(`-o ${out}`, err, 'cannot write')
    }
    dest.commit()
  } finally {
    dest.abort()
  }
  io.stderr.write(`faultline: wrote ${out} (${t.length} records, ${(doc.length / 1024).toFixed(0)} KiB)\n`)
  return 0
}

const REPLAY_OPTIONS = {
  socket: { type: 'string' },
  snapshot: { type: 'string' },
  policy: { type: 'string' },
  trace: { type: 'string' },
  verify: { type: 'string' },
  threads: { type: 'string' },
  'touched-out': { type: 'string' },
} as const

async function replay(argv: string[], io: TraceIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: joinNegativeValues(argv, REPLAY_OPTIONS),
    options: REPLAY_OPTIONS,
    allowPositionals: true,
    strict: true,
  })
  const file = oneFile(positionals, 'replay')
  if ((values.socket === undefined) === (values.snapshot === undefined)) {
    throw new UsageError('trace replay: give either --socket PATH (a running server) or --snapshot SNAP (serve it here)')
  }
  if (values.socket && (values.policy || values.trace))
    throw new UsageError('trace replay: --policy and --trace go with --snapshot (the running server has its own)')
  const threads = intOption('threads', values.threads, 1, 1024, 1)
  // What this command reads, that neither --trace nor --touched-out may overwrite.
  const inputs = inputIdentities([
    { path: file, name: `the trace ${file}` },
    ...(values.verify ? [{ path: values.verify, name: `--verify ${values.verify}` }] : []),
    ...(values.snapshot ? [{ path: values.snapshot, name: `the snapshot ${values.snapshot}` }] : []),
  ])
  if (values['touched-out']) checkOutputPath(values['touched-out'], `--touched-out ${values['touched-out']}`, inputs)
  const t = readTrace(file)
  const plan = replayPlan(t)
  const dir = mkdtempSync(join(tmpdir(), 'faultline-replay-'))
  let server: PageServer | undefined
  try {
    const pagesFile = join(dir, 'pages.txt')
    writePagesFile(pagesFile, plan, file)
    let socket = values.socket!
    if (values.snapshot) {
      socket = join(dir, 'replay.sock')
      server = await PageServer.start({
        snapshotPath: values.snapshot,
        socketPath: socket,
        policy: values.policy,
        tracePath: values.trace,
        singleGuest: true,
        protectedFiles: inputs,
      })
    }
    const args = [
      '--socket',
      socket,
      '--mib',
      String(plan.mib),
      '--offset',
      String(plan.offsetBytes),
      '--workload',
      `pages:${pagesFile}`,
      '--threads',
      String(threads),
    ]
    if (values.verify) args.push('--verify', values.verify)
    if (values['touched-out']) args.push('--touched-out', values['touched-out'])
    io.stderr.write(
      `faultline: replaying ${plan.pages.length} pages of ${file} in first-touch order` +
        `${plan.skipped ? ` (${plan.skipped} faulted pages outside the first region left out)` : ''}\n`,
    )
    const report = await runGuestProcess(args, { timeoutMs: 600_000 })
    const rows: Array<[string, string | number]> = [
      ['pages touched', report.pages_touched],
      ['resume', msText(report.resume_ns)],
      ['workload', msText(report.workload_ns)],
      ['recorded faults', traceStats(t).faults],
    ]
    if (values.verify) rows.push(['pages verified', `${report.verified_pages} (${report.mismatches} mismatches)`])
    if (server) {
      await server.close({ drain: true })
      const st = server.ended[server.ended.length - 1]?.stats
      if (st) rows.push(['faults now', st.faults], ['pages installed now', st.pagesInstalled.reduce((a, b) => a + b, 0)])
      server = undefined
    }
    io.stdout.write(`${formatTable(['replay', 'value'], rows)}\n`)
    return report.mismatches === 0 ? 0 : 1
  } finally {
    if (server) await server.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Simulation results of every trace under every policy, with the page kinds and model used. */
export interface SimulationReport {
  costModel: string
  storage: StorageTier
  traces: Array<{ trace: string; accesses: number; threads: number; pagesFrom: string; recordedUnder: string }>
  policies: PolicySimulation[]
  gapScale: number
}

/** Simulates `specs` over `traces` (one policy instance per trace: policies keep state). */
export async function simulateTraces(
  traces: string[],
  specs: string[],
  o: { pageMap?: PageMap; storage: StorageTier; costs: string; gapScale?: number },
): Promise<SimulationReport> {
  const model = loadCostModel(o.costs)
  const gapScale = o.gapScale ?? 1
  const report: SimulationReport = { costModel: o.costs, storage: o.storage, traces: [], policies: [], gapScale }
  for (const file of traces) {
    const t = readTrace(file)
    const access = accessOrder(t)
    const space = simSpace(t, o.pageMap)
    report.traces.push({ trace: file, accesses: access.length, threads: access.threads, pagesFrom: space.pagesFrom, recordedUnder: t.header.policy })
    for (const spec of specs) report.policies.push(simulatePolicy(await createPolicy(spec), access, space, { model, tier: o.storage, spec, gapScale }))
  }
  return report
}

const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1)

export function formatSimulation(r: SimulationReport): string {
  const model = loadCostModel(r.costModel)
  const lines: string[] = []
  for (const tr of r.traces) {
    const rows = r.policies.filter(p => p.trace === tr.trace)
    const base = rows[0]?.estimatedMs ?? NaN
    lines.push(
      `trace ${tr.trace}: ${tr.accesses} accesses (pages in order of first touch) from ${tr.threads} thread(s), recorded under ${tr.recordedUnder || '?'}` +
        (tr.recordedUnder && !tr.recordedUnder.startsWith('ondemand')
          ? ' (not ondemand: pages it installed before the guest touched them left no fault, so their touches are missing)'
          : ''),
    )
    lines.push(`page kinds: ${tr.pagesFrom}`)
    if (r.gapScale !== 1) lines.push(`guest running time between faults: the recorded one x ${r.gapScale}`)
    lines.push(
      formatTable(
        [
          'policy',
          'faults',
          'pages installed',
          'fault/prefetch/background',
          'start set/waits',
          'never touched',
          'MiB read',
          'est. ms',
          `vs ${rows[0]?.policy ?? '-'}`,
        ],
        rows.map(p => [
          p.policy,
          p.faults,
          p.pagesInstalled,
          `${p.pagesByCause.fault}/${p.pagesByCause.prefetch}/${p.pagesByCause.background}`,
          p.pagesStartSet || p.startSetWaits ? `${p.pagesStartSet}/${p.startSetWaits}` : '-',
          p.wastedPages,
          mib(p.bytesRead),
          p.estimatedMs.toFixed(1),
          `${(p.estimatedMs / base).toFixed(2)}x`,
        ]),
      ),
    )
    lines.push('')
  }
  lines.push(...describeCostModel(model, r.costModel, r.storage))
  lines.push('start set/waits = pages the start set installed while the guest ran / accesses that waited for a page of it still going in')
  lines.push(
    "est. ms = installs before resume + per fault (fault + its plan's installs) + waits for a batch in progress (background or start set); work inside the trace's quiet gaps costs the guest nothing",
  )
  return lines.join('\n')
}

async function simulate(argv: string[], io: TraceIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      policy: { type: 'string' },
      snapshot: { type: 'string' },
      'page-map': { type: 'string' },
      storage: { type: 'string', default: 'warm' },
      costs: { type: 'string' },
      'gap-scale': { type: 'string' },
      json: { type: 'boolean' },
    },
    allowPositionals: true,
    strict: true,
  })
  if (positionals.length === 0) throw new UsageError('trace simulate: expected one or more TRACE files')
  if (!values.policy) throw new UsageError('trace simulate: --policy P[,Q...] is required (e.g. --policy ondemand,readahead,adaptive)')
  const specs = listOption(values.policy)
  if (specs.length === 0) throw new UsageError('trace simulate: --policy lists no policy')
  if (values.snapshot && values['page-map']) throw new UsageError('trace simulate: give --snapshot or --page-map, not both')
  const storage = values.storage as StorageTier
  if (!STORAGE_TIERS.includes(storage)) throw new UsageError(`--storage: expected ${STORAGE_TIERS.join(', ')}, got '${values.storage}'`)
  const gapScale = decimalOption('gap-scale', values['gap-scale'], 0, 1000, 1)
  const mapPath = values.snapshot ?? values['page-map']
  const pageMap = mapPath ? readPageMap(mapPath) : undefined
  const report = await simulateTraces(positionals, specs, { pageMap, storage, costs: values.costs ?? DEFAULT_COST_MODEL, gapScale })
  if (values.json) {
    const policies = report.policies.map(p => ({
      policy: p.policy,
      faults: p.faults,
      pagesInstalled: p.pagesInstalled,
      wastedPages: p.wastedPages,
      bytesRead: p.bytesRead,
      estimatedMs: Number(p.estimatedMs.toFixed(3)),
      trace: p.trace,
      spec: p.spec,
      accesses: p.accesses,
      pagesByCause: p.pagesByCause,
      pagesBeforeResume: p.pagesBeforeResume,
      pagesStartSet: p.pagesStartSet,
      startSetWaits: p.startSetWaits,
      zeroPages: p.zeroPages,
      estimate: p.estimate,
    }))
    io.stdout.write(
      `${JSON.stringify({ policies, traces: report.traces, gapScale, costModel: { path: report.costModel, storage, ...loadCostModel(report.costModel) } })}\n`,
    )
  } else {
    io.stdout.write(`${formatSimulation(report)}\n`)
  }
  return 0
}
