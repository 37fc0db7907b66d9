// Turns a real-VM resume sweep into medians, ratios to mmap paired by round, markdown tables
// and the plot of resume and workload time against guest RAM.
import { formatBytes, formatTable, median } from '../util/format.js'
import { renderSvgPlot, type Panel } from './plot.js'
import { formatRatio, formatSize } from './report.js'
import type { Pinning, VmRunRecord, VmSweepResult } from './vm.js'
import type { CacheState } from './resume.js'

export interface VmSummaryRow {
  sizeMiB: number
  cache: CacheState
  pinning: Pinning
  mode: string
  runs: number
  /** Runs that failed or printed another checksum. */
  failures: number
  stateLoadedMs: number
  firstReplyMs: number
  checksumMs: number
  workloadMs: number
  recheckMs: number
  /** Median over rounds of this mode's time / mmap's in the same round (same size, cache, pinning). */
  firstReplyVsMmap: number
  workloadVsMmap: number
  checksumVsMmap: number
  faults: number
  pagesInstalled: number
  serverCpuMs: number
  serviceP50Us: number
}

const groupKey = (r: { sizeMiB: number; cache: string; pinning: string }): string => `${r.sizeMiB}|${r.cache}|${r.pinning}`

function med(rows: VmRunRecord[], pick: (r: VmRunRecord) => number | undefined): number {
  return median(rows.map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v)))
}

/** One row per (size, cache, pinning, mode), in the order the runs came. Medians are over
 * the runs that resumed with the right checksum. */
export function summarizeVm(runs: VmRunRecord[]): VmSummaryRow[] {
  const groups = new Map<string, VmRunRecord[]>()
  const mmap = new Map<string, VmRunRecord>()
  for (const r of runs) {
    const k = `${groupKey(r)}|${r.mode}`
    if (!groups.has(k)) groups.set(k, [])
    groups.get(k)!.push(r)
    if (r.mode === 'mmap' && r.ok) mmap.set(`${groupKey(r)}|${r.round}`, r)
  }
  const rows: VmSummaryRow[] = []
  for (const all of groups.values()) {
    const g = all.filter(r => r.ok)
    const f = all[0]
    const ratio = (pick: (r: VmRunRecord) => number): number =>
      median(
        g.flatMap(r => {
          const m = mmap.get(`${groupKey(r)}|${r.round}`)
          return m && pick(m) > 0 && Number.isFinite(pick(r)) ? [pick(r) / pick(m)] : []
        }),
      )
    rows.push({
      sizeMiB: f.sizeMiB,
      cache: f.cache,
      pinning: f.pinning,
      mode: f.mode,
      runs: all.length,
      failures: all.length - g.length,
      stateLoadedMs: med(g, r => r.stateLoadedMs),
      firstReplyMs: med(g, r => r.firstReplyMs),
      checksumMs: med(g, r => r.checksumMs),
      workloadMs: med(g, r => r.workloadMs),
      recheckMs: med(g, r => r.recheckMs),
      firstReplyVsMmap: ratio(r => r.firstReplyMs),
      workloadVsMmap: ratio(r => r.workloadMs),
      checksumVsMmap: ratio(r => r.checksumMs),
      faults: med(g, r => r.faults),
      pagesInstalled: med(g, r => r.pagesInstalled),
      serverCpuMs: med(g, r => r.serverCpuMs),
      serviceP50Us: med(g, r => r.serviceP50Us),
    })
  }
  return rows
}

function unique<T>(xs: T[]): T[] {
  return [...new Set(xs)]
}

function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return '-'
  return ms >= 100 ? ms.toFixed(0) : ms.toFixed(1)
}

export type VmMetric = 'firstReply' | 'workload' | 'checksum'

const METRIC: Record<VmMetric, { value: (r: VmSummaryRow) => number; ratio: (r: VmSummaryRow) => number }> = {
  firstReply: { value: r => r.firstReplyMs, ratio: r => r.firstReplyVsMmap },
  workload: { value: r => r.workloadMs, ratio: r => r.workloadVsMmap },
  checksum: { value: r => r.checksumMs, ratio: r => r.checksumVsMmap },
}

/** Rows: RAM sizes; a column per mode with `ms (ratio to mmap)`; for the workload, a last
 * column with the same checksum once all memory is in (the guest's own cost under TCG). */
export function vmTimeTable(rows: VmSummaryRow[], metric: VmMetric, cache: CacheState, pinning: Pinning): string {
  const mine = rows.filter(r => r.cache === cache && r.pinning === pinning)
  const modes = unique(mine.map(r => r.mode))
  const at = new Map(mine.map(r => [`${r.sizeMiB}|${r.mode}`, r]))
  const m = METRIC[metric]
  const lines = unique(mine.map(r => r.sizeMiB))
    .sort((a, b) => a - b)
    .map(size => {
      const cells = modes.map(mode => {
        const r = at.get(`${size}|${mode}`)
        if (!r) return '-'
        if (r.failures === r.runs) return 'failed'
        return `${formatMs(m.value(r))} (${formatRatio(m.ratio(r))})${r.failures ? ` ${r.failures} failed` : ''}`
      })
      if (metric === 'workload')
        cells.push(
          formatMs(
            median(
              mine
                .filter(r => r.sizeMiB === size)
                .map(r => r.recheckMs)
                .filter(Number.isFinite),
            ),
          ),
        )
      return [formatSize(size), ...cells]
    })
  return formatTable(['RAM', ...modes, ...(metric === 'workload' ? ['all memory in'] : [])], lines, { markdown: true })
}

/** Faults, pages installed, server CPU and service time of the uffd modes. */
export function vmCostTable(rows: VmSummaryRow[], cache: CacheState, pinning: Pinning): string {
  const mine = rows.filter(r => r.cache === cache && r.pinning === pinning && Number.isFinite(r.faults))
  const n = (v: number, digits = 0): string => (Number.isFinite(v) ? v.toFixed(digits) : '-')
  return formatTable(
    ['RAM', 'mode', 'faults', 'pages installed', 'server CPU ms', 'service p50 µs'],
    mine.map(r => [formatSize(r.sizeMiB), r.mode, n(r.faults), n(r.pagesInstalled), n(r.serverCpuMs), n(r.serviceP50Us, 1)]),
    { markdown: true },
  )
}

export function renderVmMarkdown(result: VmSweepResult, command: string): string {
  const rows = summarizeVm(result.runs)
  const m = result.machine
  const o = result.options
  const out: string[] = ['# Real VM resume benchmark', '', `Command: \`${command}\``, '']
  out.push(
    `Machine: Linux ${m.kernel}, ${m.cpus} CPUs, ${formatBytes(m.memTotalBytes)} RAM, Node ${m.node}, ${m.qemu} (TCG); load average ` +
      `${m.loadAvgStart.map(x => x.toFixed(1)).join(' ')} at the start, ${m.loadAvgEnd.map(x => x.toFixed(1)).join(' ')} at the end; ${result.startedAt} to ${result.finishedAt}.`,
    '',
  )
  out.push(
    `The test guest (Debian kernel, busybox, a workload filling ${o.workloadFraction === undefined ? '5/8' : `${Math.round(o.workloadFraction * 100)}%`} of RAM) ` +
      `checkpointed once per size, resumed in every mode, ${o.repeat} round(s), modes interleaved. Each cell: median, and in brackets the median ` +
      `ratio to \`mmap\` in the same round. Times are from QEMU's start: *first reply* is the guest answering a ping (memory not read yet), ` +
      `*workload* is the guest checksumming its workload memory right after that. Every run compared the guest's checksums with the one ` +
      `recorded before the checkpoint. Cold: the VM directory's files dropped from the page cache (${o.cold}) after the page server started. ` +
      `${o.cpus ? `Pinned runs: QEMU and the page server on CPU(s) ${o.cpus}.` : ''}`,
    '',
  )
  const bad = result.runs.filter(r => !r.ok)
  out.push(`Memory check: ${result.runs.length - bad.length} of ${result.runs.length} resumes printed the recorded checksum.`, '')
  if (bad.length) out.push(...bad.map(r => `- ${formatSize(r.sizeMiB)} ${r.cache} ${r.pinning} ${r.mode} round ${r.round + 1}: ${r.error}`), '')
  if (result.skipped.length) out.push('Skipped:', '', ...result.skipped.map(s => `- ${formatSize(s.sizeMiB)}: ${s.reason}`), '')
  for (const pinning of unique(rows.map(r => r.pinning))) {
    for (const cache of unique(rows.map(r => r.cache))) {
      out.push(`## Resume: until the guest answers, ms, ${cache} cache, ${pinning}`, '', vmTimeTable(rows, 'firstReply', cache, pinning), '')
      out.push(
        `## Workload: checksum of the workload memory after resume, ms, ${cache} cache, ${pinning}`,
        '',
        vmTimeTable(rows, 'workload', cache, pinning),
        '',
      )
      const costs = vmCostTable(rows, cache, pinning)
      if (costs.split('\n').length > 2) out.push(`## Page server costs, ${cache} cache, ${pinning} (medians)`, '', costs, '')
    }
  }
  out.push(
    '## Checkpoints',
    '',
    formatTable(
      ['RAM', 'workload MiB', 'boot s', 'checkpoint s', 'snapshot', 'device state', 'eager stream', 'reused'],
      result.checkpoints.map(c => [
        formatSize(c.sizeMiB),
        c.workloadMiB,
        (c.bootMs / 1000).toFixed(1),
        (c.checkpointMs / 1000).toFixed(1),
        formatBytes(c.snapshotBytes),
        formatBytes(c.stateBytes),
        c.eagerStateBytes ? formatBytes(c.eagerStateBytes) : '-',
        c.reused ? 'yes' : 'no',
      ]),
      { markdown: true },
    ),
    '',
  )
  return out.join('\n')
}

/** The seed's figure with a real VM: resume time and workload time against guest RAM, a line
 * per mode, a panel per (metric, cache) for one pinning. */
export function renderVmPlot(result: VmSweepResult, pinning: Pinning): string {
  const rows = summarizeVm(result.runs).filter(r => r.pinning === pinning)
  const panels: Panel[] = []
  for (const [metric, title] of [
    ['firstReply', 'until the guest answers'],
    ['workload', 'workload (checksum of its memory)'],
  ] as const) {
    for (const cache of unique(rows.map(r => r.cache))) {
      panels.push({
        title: `${title}, ${cache} cache`,
        series: unique(rows.map(r => r.mode)).map(mode => ({
          name: mode,
          points: rows.filter(r => r.cache === cache && r.mode === mode).map(r => ({ x: r.sizeMiB, y: METRIC[metric].value(r) })),
        })),
      })
    }
  }
  return renderSvgPlot({
    title: `Real VM resume (QEMU TCG) vs guest RAM, ${pinning}`,
    xLabel: 'guest RAM',
    yLabel: 'ms (log)',
    panels,
    columns: Math.max(1, panels.length / 2),
    logX: true,
    logY: true,
    formatX: formatSize,
    formatY: v => String(+v.toPrecision(3)),
  })
}
