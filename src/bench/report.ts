// Turns a resume sweep's runs into medians, paired ratios to mmap, markdown tables and the
// resume-time-vs-RAM plot.
import { formatBytes, formatTable, median } from '../util/format.js'
import { renderSvgPlot, type Panel } from './plot.js'
import type { CacheState, RunRecord, SweepResult } from './resume.js'
import { formatSequentialRead } from './proc.js'

export interface SummaryRow {
  sizeMiB: number
  workload: string
  cache: CacheState
  mode: string
  runs: number
  firstAccessNs: number
  resumeNs: number
  workloadNs: number
  totalNs: number
  /** Median over rounds of this mode's time / mmap's time in the same round. */
  totalVsMmap: number
  firstAccessVsMmap: number
  storageReadBytes: number
  serverCpuNs: number
  serverPeakRssBytes: number
  faults: number
  serviceP50Ns: number
  mismatches: number
}

const key = (r: { sizeMiB: number; workload: string; cache: string }) => `${r.sizeMiB}|${r.workload}|${r.cache}`

function med(rows: RunRecord[], pick: (r: RunRecord) => number | null): number {
  const v = rows.map(pick).filter((x): x is number => x !== null && Number.isFinite(x))
  return median(v)
}

/** One row per (size, workload, cache, mode), in the order the runs came. */
export function summarize(runs: RunRecord[]): SummaryRow[] {
  const groups = new Map<string, RunRecord[]>()
  const mmap = new Map<string, RunRecord>()
  for (const r of runs) {
    const k = `${key(r)}|${r.mode}`
    if (!groups.has(k)) groups.set(k, [])
    groups.get(k)!.push(r)
    if (r.mode === 'mmap') mmap.set(`${key(r)}|${r.round}`, r)
  }
  const rows: SummaryRow[] = []
  for (const g of groups.values()) {
    const f = g[0]
    const ratio = (pick: (r: RunRecord) => number) =>
      median(
        g.flatMap(r => {
          const m = mmap.get(`${key(r)}|${r.round}`)
          return m && pick(m) > 0 && Number.isFinite(pick(r)) ? [pick(r) / pick(m)] : []
        }),
      )
    rows.push({
      sizeMiB: f.sizeMiB,
      workload: f.workload,
      cache: f.cache,
      mode: f.mode,
      runs: g.length,
      firstAccessNs: med(g, r => r.firstAccessNs),
      resumeNs: med(g, r => r.resumeNs),
      workloadNs: med(g, r => r.workloadNs),
      totalNs: med(g, r => r.totalNs),
      totalVsMmap: ratio(r => r.totalNs),
      firstAccessVsMmap: ratio(r => r.firstAccessNs),
      storageReadBytes: med(g, r => r.storageReadBytes),
      serverCpuNs: med(g, r => r.serverCpuNs),
      serverPeakRssBytes: med(g, r => r.serverPeakRssBytes),
      faults: med(g, r => r.faults),
      serviceP50Ns: med(g, r => r.serviceP50Ns),
      mismatches: g.reduce((s, r) => s + r.mismatches, 0),
    })
  }
  return rows
}

export function formatMs(ns: number): string {
  if (!Number.isFinite(ns)) return '-'
  const ms = ns / 1e6
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3)
}

export function formatRatio(x: number): string {
  return Number.isFinite(x) ? `${x >= 10 ? x.toFixed(1) : x.toFixed(2)}x` : '-'
}

export function formatSize(mib: number): string {
  return mib >= 1024 && mib % 1024 === 0 ? `${mib / 1024} GiB` : `${mib} MiB`
}

function unique<T>(xs: T[]): T[] {
  return [...new Set(xs)]
}

/** A table per cache state: rows (size, workload), a column per mode, cells `ms (ratio)`. */
export function timeTables(rows: SummaryRow[], pick: 'total' | 'first', cache: CacheState): string {
  const mine = rows.filter(r => r.cache === cache)
  const modes = unique(mine.map(r => r.mode))
  const at = new Map(mine.map(r => [`${key(r)}|${r.mode}`, r]))
  const lines: string[][] = []
  for (const size of unique(mine.map(r => r.sizeMiB)).sort((a, b) => a - b)) {
    for (const workload of unique(mine.filter(r => r.sizeMiB === size).map(r => r.workload))) {
      lines.push([
        formatSize(size),
        workload,
        ...modes.map(m => {
          const r = at.get(`${size}|${workload}|${cache}|${m}`)
          if (!r) return '-'
          return pick === 'total'
            ? `${formatMs(r.totalNs)} (${formatRatio(r.totalVsMmap)})`
            : `${formatMs(r.firstAccessNs)} (${formatRatio(r.firstAccessVsMmap)})`
        }),
      ])
    }
  }
  return formatTable(['RAM', 'workload', ...modes], lines, { markdown: true })
}

/** Per-run costs: storage bytes read, server CPU and peak RSS, faults, service time. */
export function costTable(rows: SummaryRow[], cache: CacheState, sizeMiB?: number): string {
  const mine = rows.filter(r => r.cache === cache && (sizeMiB === undefined || r.sizeMiB === sizeMiB))
  const fmtBytes = (b: number) => (Number.isFinite(b) ? formatBytes(Math.round(b)) : '-')
  return formatTable(
    ['RAM', 'workload', 'mode', 'read from storage', 'server CPU ms', 'server peak RSS', 'faults', 'service p50 µs'],
    mine.map(r => [
      formatSize(r.sizeMiB),
      r.workload,
      r.mode,
      fmtBytes(r.storageReadBytes),
      Number.isFinite(r.serverCpuNs) ? (r.serverCpuNs / 1e6).toFixed(1) : '-',
      fmtBytes(r.serverPeakRssBytes),
      Number.isFinite(r.faults) ? Math.round(r.faults) : '-',
      Number.isFinite(r.serviceP50Ns) ? (r.serviceP50Ns / 1000).toFixed(1) : '-',
    ]),
    { markdown: true },
  )
}

/** How a table names a cache state. */
export function cacheTitle(cache: CacheState): string {
  return cache === 'hot' ? "hot (page cache warm, and the server's decoded cache full from an earlier guest)" : `${cache} page cache`
}

/** What the reader must know about the modes a table shows, one line each. */
export function modeNotes(modes: string[]): string[] {
  const notes = [
    "`faultline:<policy>`: the guest's memory is anonymous, each page copied in (UFFDIO_COPY); " +
      "`faultline-cache:<policy>`: the server's decoded cache is mapped over it (MAP_PRIVATE), only misses reach the server. " +
      'Hot: an earlier guest of the same server touched every page, so the decoded cache holds them all; for eager, mmap ' +
      'and uffd-c (no decoded cache) hot is warm.',
  ]
  if (modes.some(m => m.endsWith(':learned'))) {
    notes.push(
      '`learned` modes: the set was recorded (serve --learn) by an earlier run of the same workload, same seed: ' +
        "REAP's stable-working-set case, the guest touching what it touched before; not a prediction of a different input.",
    )
  }
  return notes
}

export function renderMarkdown(result: SweepResult, command: string): string {
  const rows = summarize(result.runs)
  const caches = unique(rows.map(r => r.cache))
  const m = result.machine
  const o = result.options
  const out: string[] = []
  out.push('# Resume benchmark', '')
  out.push(`Command: \`${command}\``, '')
  out.push(
    `Machine: Linux ${m.kernel}, ${m.cpus} CPUs, ${formatBytes(m.memTotalBytes)} RAM, Node ${m.node}; ` +
      `load average ${m.loadAvgStart.map(x => x.toFixed(1)).join(' ')} at the start, ${m.loadAvgEnd.map(x => x.toFixed(1)).join(' ')} at the end; ` +
      `${result.startedAt} to ${result.finishedAt}.`,
    '',
  )
  out.push(
    `Each cell: median of ${o.repeat} run(s), and in brackets the median ratio to \`mmap\` in the same rounds ` +
      `(runs of all modes interleaved). Cold = page cache emptied before each run (${o.cold}); the page servers are ` +
      `started before that with the snapshot's index in memory. ${o.cpus ? `Guest and server pinned to CPU ${o.cpus}.` : 'Unpinned.'} ` +
      `${o.verify ? 'Every touched page was verified against the raw image after each run (not timed).' : ''}`,
    '',
  )
  const mismatches = result.runs.reduce((s, r) => s + r.mismatches, 0)
  out.push(`Memory check: ${result.runs.reduce((s, r) => s + r.verifiedPages, 0)} touched pages verified, ${mismatches} mismatches.`, '')
  if (result.skipped.length) {
    out.push(
      'Skipped:',
      '',
      ...result.skipped.map(s => `- ${s.sizeMiB !== undefined ? formatSize(s.sizeMiB) : ''}${s.mode ? ` ${s.mode}` : ''}: ${s.reason}`),
      '',
    )
  }
  for (const d of result.diskReads ?? []) out.push(`Disk, before the ${formatSize(d.sizeMiB)} runs: ${formatSequentialRead(d)}.`, '')
  out.push(...modeNotes(rows.map(r => r.mode)).map(n => `${n}`), '')
  for (const cache of caches) {
    out.push(`## Time until the workload is done (resume + workload), ms, ${cacheTitle(cache)}`, '', timeTables(rows, 'total', cache), '')
  }
  for (const cache of caches) {
    out.push(`## Time to first guest access after resume starts, ms, ${cacheTitle(cache)}`, '', timeTables(rows, 'first', cache), '')
  }
  for (const cache of caches) {
    const largest = Math.max(...rows.filter(r => r.cache === cache).map(r => r.sizeMiB))
    out.push(`## Costs at ${formatSize(largest)}, ${cacheTitle(cache)} (medians)`, '', costTable(rows, cache, largest), '')
  }
  out.push(
    'Read from storage: /proc/PID/io read_bytes of the guest and the server. Server CPU: all its threads, ' +
      'from the moment it listens to the end of the session. Peak RSS: VmHWM, reset when it starts listening. ' +
      'Faults: served by the uffd server, or taken by the guest itself (eager, mmap).',
    '',
  )
  return out.join('\n')
}

/** The seed's figure: time until the workload is done vs guest RAM, a line per mode, one
 * panel per cache state, for one workload. */
export function renderResumePlot(result: SweepResult, workload: string): string {
  const rows = summarize(result.runs).filter(r => r.workload === workload)
  const caches = unique(rows.map(r => r.cache))
  const panels: Panel[] = caches.map(cache => ({
    title: `${cache === 'hot' ? 'hot' : `${cache} page cache`}, ${workload}`,
    series: unique(rows.map(r => r.mode)).map(mode => ({
      name: mode,
      points: rows.filter(r => r.cache === cache && r.mode === mode).map(r => ({ x: r.sizeMiB, y: r.totalNs / 1e6 })),
    })),
  }))
  return renderSvgPlot({
    title: 'Resume time (until the workload is done) vs guest RAM',
    xLabel: 'guest RAM',
    yLabel: 'time, ms (log)',
    panels,
    logX: true,
    logY: true,
    formatX: formatSize,
    formatY: v => String(+v.toPrecision(3)),
  })
}
