// `bench policies --traces DIR`: every policy over every trace of a collection, by simulation,
// in the manner of libCacheSim's miss-ratio tables (one row per trace, one column per policy):
// faults per access and estimated time relative to ondemand, with a learned-set column (a
// working set recorded on a program's run 1, tested on its run 2), and an SVG of the second.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { UsageError } from '../errors.js'
import { createPolicy } from '../policy/registry.js'
import type { CostModel, StorageTier } from './cost-model.js'
import { readPageMap, type PageMap } from '../trace/page-map.js'
import { readTrace } from '../trace/reader.js'
import { accessOrder, simSpace, simulatePolicy, type PolicySimulation } from './simulate.js'
import { BenchError } from './errors.js'
import { escapeXml, PALETTE } from './plot.js'

export interface TraceEntry {
  /** Short name: the file name without .fltrace[.gz]. */
  name: string
  path: string
  /** Runs of one program share it; `run` numbers them (1, 2, ...). */
  program: string
  run: number
  pageMap?: string
  what?: string
  ramMiB?: number
}

/** `{self}` is the trace being simulated; `{run1}` the same program's run 1 (only on its other
 * runs: the learned set, tested on a run it was not learned from). */
export const DEFAULT_TRACE_POLICIES = [
  'ondemand',
  'readahead',
  'readahead:63',
  'adaptive',
  'eager',
  'background',
  'workingset:{self}',
  'workingset:{run1}',
  'primed:{run1}',
]

const TRACE_FILE = /^(.*)\.fltrace(\.gz)?$/

/** The traces of `dir`: its manifest.json (as scripts/vm/record-traces.mjs writes it) or
 * every *.fltrace[.gz] in it, `NAME-N` being run N of program NAME. */
export function loadTraceSet(dir: string): TraceEntry[] {
  // Paths stay as relative as `dir` is: the tables print them.
  const root = dir
  if (!existsSync(resolve(root))) throw new UsageError(`--traces ${dir}: no such directory`)
  const manifest = join(root, 'manifest.json')
  if (existsSync(manifest)) {
    let m: { traces?: Array<{ trace: string; pageMap?: string; program?: string; run?: number; what?: string; ramMiB?: number }> }
    try {
      m = JSON.parse(readFileSync(manifest, 'utf8'))
    } catch (err) {
      throw new BenchError(`${manifest}: not valid JSON (${(err as Error).message})`)
    }
    if (!Array.isArray(m.traces) || m.traces.length === 0) throw new BenchError(`${manifest}: lists no traces`)
    return m.traces.map(e => {
      const name = TRACE_FILE.exec(e.trace)?.[1] ?? e.trace
      const guess = splitRun(name)
      const entry: TraceEntry = {
        name,
        path: join(root, e.trace),
        program: e.program ?? guess.program,
        run: e.run ?? guess.run,
        what: e.what,
        ramMiB: e.ramMiB,
      }
      if (e.pageMap) entry.pageMap = join(root, e.pageMap)
      for (const f of [entry.path, entry.pageMap]) if (f && !existsSync(f)) throw new BenchError(`${manifest}: lists ${f}, which is missing`)
      return entry
    })
  }
  const files = readdirSync(root)
    .filter(f => TRACE_FILE.test(f))
    .sort()
  if (files.length === 0) throw new UsageError(`--traces ${dir}: no *.fltrace or *.fltrace.gz files (and no manifest.json)`)
  return files.map(f => {
    const name = TRACE_FILE.exec(f)![1]
    return { name, path: join(root, f), ...splitRun(name) }
  })
}

function splitRun(name: string): { program: string; run: number } {
  const m = /^(.*)-(\d+)$/.exec(name)
  return m ? { program: m[1], run: Number(m[2]) } : { program: name, run: 1 }
}

export interface TracePolicyOptions {
  traces: TraceEntry[]
  policies: string[]
  model: CostModel
  tier: StorageTier
  /** Multiplies the guest's recorded running time between faults (SimulateOptions.gapScale). */
  gapScale?: number
  onProgress?: (done: number, total: number) => void
}

export interface TraceRow {
  entry: TraceEntry
  accesses: number
  threads: number
  regionMiB: number
  durationMs: number
  pagesFrom: string
  /** One per policy column; undefined where the column does not apply ({run1} on run 1). */
  cells: Array<PolicySimulation | undefined>
}

export interface TracePolicyResult {
  policies: string[]
  rows: TraceRow[]
}

/** Simulates every policy over every trace (a fresh policy instance each time). */
export async function runTracePolicies(o: TracePolicyOptions): Promise<TracePolicyResult> {
  const rows: TraceRow[] = []
  const maps = new Map<string, PageMap>()
  const total = o.traces.length * o.policies.length
  let done = 0
  for (const entry of o.traces) {
    const t = readTrace(entry.path)
    let map: PageMap | undefined
    if (entry.pageMap) {
      map = maps.get(entry.pageMap) ?? readPageMap(entry.pageMap)
      maps.set(entry.pageMap, map)
    }
    const access = accessOrder(t)
    const space = simSpace(t, map)
    const run1 = o.traces.find(e => e.program === entry.program && e.run === 1 && e !== entry)
    const cells: Array<PolicySimulation | undefined> = []
    for (const spec of o.policies) {
      let resolved: string | undefined = spec.replaceAll('{self}', entry.path)
      if (resolved.includes('{run1}')) resolved = run1 ? resolved.replaceAll('{run1}', run1.path) : undefined
      cells.push(
        resolved === undefined
          ? undefined
          : simulatePolicy(await createPolicy(resolved), access, space, { model: o.model, tier: o.tier, spec, gapScale: o.gapScale }),
      )
      o.onProgress?.(++done, total)
    }
    const regionPages = t.header.regions.reduce((n, r) => n + r.pageCount, 0)
    rows.push({
      entry,
      accesses: access.length,
      threads: access.threads,
      regionMiB: (regionPages * t.header.pageSize) / 2 ** 20,
      durationMs: access.length ? access.timeNs[access.length - 1] / 1e6 : 0,
      pagesFrom: space.pagesFrom,
      cells,
    })
  }
  return { policies: o.policies, rows }
}

/** How a column is titled: `{self}`/`{run1}` spelt out. */
export function columnLabel(spec: string): string {
  if (spec === 'workingset:{self}') return 'workingset (same run)'
  if (spec === 'workingset:{run1}') return 'learned run 1 -> this run'
  if (spec === 'primed:{run1}') return 'primed (run 1) + readahead'
  return spec.replaceAll('{self}', 'SELF').replaceAll('{run1}', 'RUN1')
}

/** The policy with the least estimated time on a row (ties: the first), by column index. */
export function winner(row: TraceRow, exclude: (spec: string) => boolean = () => false, policies: string[] = []): number {
  let best = -1
  row.cells.forEach((c, i) => {
    if (!c || exclude(policies[i] ?? '')) return
    if (best < 0 || c.estimatedMs < row.cells[best]!.estimatedMs) best = i
  })
  return best
}

/** Grouped bars: per trace, each policy's estimated time over ondemand's (log scale). */
export function renderTracePoliciesSvg(r: TracePolicyResult, title: string): string {
  const base = r.policies.indexOf('ondemand')
  const groups = r.rows.map(row => ({
    name: row.entry.name,
    values: row.cells.map(c => (c && base >= 0 && row.cells[base] ? c.estimatedMs / row.cells[base]!.estimatedMs : NaN)),
  }))
  const all = groups.flatMap(g => g.values).filter(v => Number.isFinite(v) && v > 0)
  const lo = Math.max(1e-3, 10 ** Math.floor(Math.log10(Math.min(0.1, ...all)))),
    hi = 10 ** Math.ceil(Math.log10(Math.max(10, ...all)))
  const bar = 9,
    gap = 14,
    left = 70,
    top = 40,
    height = 300
  const groupWidth = r.policies.length * bar + gap
  const width = left + groups.length * groupWidth + 20
  const legendTop = top + height + 90
  const y = (v: number) => top + height - ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * height
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${legendTop + 18 * Math.ceil(r.policies.length / 3) + 10}" font-family="sans-serif" font-size="11">`,
    `<text x="${left}" y="20" font-size="13" font-weight="bold">${escapeXml(title)}</text>`,
  ]
  for (let e = Math.log10(lo); e <= Math.log10(hi); e++) {
    const v = 10 ** e
    out.push(
      `<line x1="${left}" x2="${width - 20}" y1="${y(v)}" y2="${y(v)}" stroke="${v === 1 ? '#000' : '#ddd'}"/>`,
      `<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${v >= 1 ? v : v.toFixed(-e)}x</text>`,
    )
  }
  out.push(`<text transform="translate(16 ${top + height / 2}) rotate(-90)" text-anchor="middle">estimated time / ondemand's (log)</text>`)
  groups.forEach((g, gi) => {
    const x0 = left + gi * groupWidth + gap / 2
    g.values.forEach((v, pi) => {
      if (!Number.isFinite(v)) return
      // No wait at all (a background fill inside the quiet gaps) sits on the axis floor.
      const yv = y(Math.max(v, lo)),
        y1 = y(1)
      out.push(
        `<rect x="${x0 + pi * bar}" y="${Math.min(yv, y1)}" width="${bar - 1}" height="${Math.max(1, Math.abs(y1 - yv))}" fill="${PALETTE[pi % PALETTE.length]}"><title>${escapeXml(`${g.name} ${columnLabel(r.policies[pi])}: ${v.toFixed(3)}x`)}</title></rect>`,
      )
    })
    out.push(`<text transform="translate(${x0 + (r.policies.length * bar) / 2} ${top + height + 10}) rotate(40)" font-size="10">${escapeXml(g.name)}</text>`)
  })
  r.policies.forEach((p, i) => {
    const lx = left + (i % 3) * 220,
      ly = legendTop + Math.floor(i / 3) * 18
    out.push(
      `<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${PALETTE[i % PALETTE.length]}"/>`,
      `<text x="${lx + 14}" y="${ly}">${escapeXml(columnLabel(p))}</text>`,
    )
  })
  out.push('</svg>')
  return `${out.join('\n')}\n`
}
