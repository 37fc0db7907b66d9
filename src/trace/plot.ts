// Renders a trace as a self-contained SVG (or an HTML page around it): address over time,
// service-latency CDF, working-set growth. No dependencies; points are binned to pixels so
// a trace of millions of records still makes a file a browser opens instantly.
import { basename } from 'node:path'
import { InstallCause, TRACE_FLAG_BEFORE_RESUME, TRACE_FLAG_WRITE } from './format.js'
import type { Trace } from './reader.js'
import { installedCurve, quantileSorted, traceStats, workingSetCurve, type TraceStats } from './stats.js'

const WIDTH = 960
const FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif"'
const COLORS = {
  read: '#1f6feb',
  write: '#d1242f',
  prefetch: '#e8912d',
  background: '#8c959f',
  beforeResume: '#2da44e',
  grid: '#eaeef2',
  axis: '#57606a',
  text: '#24292f',
}

interface Box {
  x: number
  y: number
  w: number
  h: number
}

type Scale = (v: number) => number
function linear(d0: number, d1: number, r0: number, r1: number): Scale {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0)
  return v => r0 + (v - d0) * k
}

/** Round tick values (1, 2, 5 x 10^k) covering [min, max]. */
export function niceTicks(min: number, max: number, count = 6): number[] {
  if (!(max > min)) return [min]
  const raw = (max - min) / count
  const mag = 10 ** Math.floor(Math.log10(raw))
  // The 1-2-5 step whose tick count comes closest to `count`.
  let step = mag
  for (const m of [2, 5, 10]) if (Math.abs((max - min) / (m * mag) - count) < Math.abs((max - min) / step - count)) step = m * mag
  const ticks: number[] = []
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)))
  return ticks
}

function fmt(v: number): string {
  if (v === 0) return '0'
  const a = Math.abs(v)
  if (a >= 1e6) return `${Number((v / 1e6).toPrecision(3))}M`
  if (a >= 1e4) return `${Number((v / 1e3).toPrecision(3))}k`
  return String(Number(v.toPrecision(4)))
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

const n1 = (v: number) => (Math.round(v * 10) / 10).toString()

function frame(
  out: string[],
  box: Box,
  title: string,
  xLabel: string,
  yLabel: string,
  xTicks: number[],
  xs: Scale,
  xFmt: (v: number) => string,
  yTicks: number[],
  ys: Scale,
  yFmt: (v: number) => string,
): void {
  out.push(`<g ${FONT} font-size="11" fill="${COLORS.text}">`)
  out.push(`<text x="${box.x}" y="${box.y - 10}" font-size="14" font-weight="600">${esc(title)}</text>`)
  for (const v of yTicks) {
    const y = n1(ys(v))
    out.push(`<line x1="${box.x}" x2="${box.x + box.w}" y1="${y}" y2="${y}" stroke="${COLORS.grid}"/>`)
    out.push(`<text x="${box.x - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" fill="${COLORS.axis}">${esc(yFmt(v))}</text>`)
  }
  for (const v of xTicks) {
    const x = n1(xs(v))
    out.push(`<line x1="${x}" x2="${x}" y1="${box.y}" y2="${box.y + box.h}" stroke="${COLORS.grid}"/>`)
    out.push(`<text x="${x}" y="${box.y + box.h + 16}" text-anchor="middle" fill="${COLORS.axis}">${esc(xFmt(v))}</text>`)
  }
  out.push(`<rect x="${box.x}" y="${box.y}" width="${box.w}" height="${box.h}" fill="none" stroke="${COLORS.axis}"/>`)
  out.push(`<text x="${box.x + box.w / 2}" y="${box.y + box.h + 34}" text-anchor="middle" fill="${COLORS.axis}">${esc(xLabel)}</text>`)
  out.push(`<text transform="translate(${box.x - 48} ${box.y + box.h / 2}) rotate(-90)" text-anchor="middle" fill="${COLORS.axis}">${esc(yLabel)}</text>`)
  out.push('</g>')
}

function legend(out: string[], x: number, y: number, items: Array<[string, string]>): void {
  out.push(`<g ${FONT} font-size="11" fill="${COLORS.text}">`)
  let at = x
  for (const [color, label] of items) {
    out.push(`<rect x="${at}" y="${y - 8}" width="10" height="10" fill="${color}"/><text x="${at + 14}" y="${y + 1}">${esc(label)}</text>`)
    at += 22 + label.length * 6.2
  }
  out.push('</g>')
}

/** Time axis unit for a duration: ms below 10 s, else s. */
function timeUnit(durationNs: number): { div: number; name: string } {
  return durationNs < 10e9 ? { div: 1e6, name: 'ms' } : { div: 1e9, name: 's' }
}

function scatterPanel(out: string[], t: Trace, box: Box, durationNs: number): void {
  const unit = timeUnit(durationNs)
  const maxT = Math.max(durationNs / unit.div, 1e-3)
  const pageSize = t.header.pageSize
  // Y range: the guest's regions (or what the records touch).
  let lo = Infinity,
    hi = -Infinity
  for (const r of t.header.regions) {
    lo = Math.min(lo, r.firstPage)
    hi = Math.max(hi, r.firstPage + r.pageCount)
  }
  for (let i = 0; i < t.length; i++) {
    lo = Math.min(lo, t.page[i])
    hi = Math.max(hi, t.page[i] + Math.max(1, t.count[i]))
  }
  if (!Number.isFinite(lo)) {
    lo = 0
    hi = 1
  }
  const mib = pageSize / 2 ** 20
  const xs = linear(0, maxT, box.x, box.x + box.w)
  const ys = linear(lo * mib, hi * mib, box.y + box.h, box.y)
  frame(
    out,
    box,
    'Address over time',
    `time since resume (${unit.name})`,
    'offset in snapshot (MiB)',
    niceTicks(0, maxT),
    xs,
    fmt,
    niceTicks(lo * mib, hi * mib),
    ys,
    fmt,
  )
  // One mark per occupied pixel column/row and series: faults as dots, installs as bars.
  const series = {
    read: new Set<number>(),
    write: new Set<number>(),
    prefetch: new Set<number>(),
    background: new Set<number>(),
    beforeResume: new Set<number>(),
  }
  const bars: Record<'prefetch' | 'background' | 'beforeResume', string[]> = { prefetch: [], background: [], beforeResume: [] }
  for (let i = 0; i < t.length; i++) {
    const px = Math.round(xs(Math.max(0, t.timeNs[i]) / unit.div))
    const y0 = ys(t.page[i] * mib)
    if (t.cause[i] === InstallCause.Fault) {
      const set = (t.flags[i] & TRACE_FLAG_WRITE) !== 0 ? series.write : series.read
      set.add(px * 4096 + Math.round(y0))
      continue
    }
    if (t.count[i] === 0) continue
    const kind = (t.flags[i] & TRACE_FLAG_BEFORE_RESUME) !== 0 ? 'beforeResume' : t.cause[i] === 1 ? 'prefetch' : 'background'
    const y1 = ys((t.page[i] + t.count[i]) * mib)
    // At least 3 px tall, so a run of a few pages in a large range is still visible.
    let top = Math.floor(Math.min(y0, y1)),
      bottom = Math.ceil(Math.max(y0, y1))
    if (bottom - top < 3) {
      top = Math.floor((top + bottom) / 2) - 1
      bottom = top + 3
    }
    const key = (px * 4096 + top) * 4096 + bottom
    if (series[kind].has(key)) continue
    series[kind].add(key)
    bars[kind].push(`M${px} ${top}V${bottom}`)
  }
  for (const kind of ['read', 'write'] as const) {
    const d: string[] = []
    for (const key of series[kind]) d.push(`M${Math.floor(key / 4096) - 1} ${(key % 4096) - 1}h2v2h-2z`)
    if (d.length) out.push(`<path d="${d.join('')}" fill="${COLORS[kind]}"/>`)
  }
  // Installs over the faults: a prefetch starts right next to the fault that asked for it.
  for (const kind of ['beforeResume', 'background', 'prefetch'] as const) {
    if (bars[kind].length) out.push(`<path d="${bars[kind].join('')}" stroke="${COLORS[kind]}" stroke-width="2" opacity="0.85"/>`)
  }
  legend(out, box.x + box.w - 470, box.y - 10, [
    [COLORS.read, 'read fault'],
    [COLORS.write, 'write fault'],
    [COLORS.prefetch, 'prefetch'],
    [COLORS.background, 'background'],
    [COLORS.beforeResume, 'before resume'],
  ])
}

function cdfPanel(out: string[], t: Trace, box: Box, stats: TraceStats): void {
  const lat: number[] = []
  for (let i = 0; i < t.length; i++) if (t.cause[i] === InstallCause.Fault) lat.push(Math.max(t.latencyNs[i], 1) / 1000)
  lat.sort((a, b) => a - b)
  const minDec = lat.length ? Math.floor(Math.log10(lat[0])) : 0
  const maxDec = lat.length ? Math.max(minDec + 1, Math.ceil(Math.log10(lat[lat.length - 1]))) : 3
  const xs0 = linear(minDec, maxDec, box.x, box.x + box.w)
  const xs = (v: number) => xs0(Math.log10(v))
  const ys = linear(0, 1, box.y + box.h, box.y)
  const decades: number[] = []
  for (let d = minDec; d <= maxDec; d++) decades.push(10 ** d)
  frame(
    out,
    box,
    'Fault service latency (CDF)',
    'latency (µs, log scale)',
    'fraction of faults',
    decades,
    xs,
    v => (v >= 1000 ? `${fmt(v / 1000)} ms` : `${fmt(v)} µs`),
    [0, 0.25, 0.5, 0.75, 1],
    ys,
    v => String(v),
  )
  if (lat.length === 0) {
    out.push(`<text x="${box.x + box.w / 2}" y="${box.y + box.h / 2}" text-anchor="middle" ${FONT} font-size="12" fill="${COLORS.axis}">no faults</text>`)
    return
  }
  // A step line through at most ~2 points per pixel column.
  const pts: string[] = [`M${n1(xs(lat[0]))} ${n1(ys(0))}`]
  const step = Math.max(1, Math.floor(lat.length / (box.w * 2)))
  for (let i = 0; i < lat.length; i += step) pts.push(`L${n1(xs(lat[i]))} ${n1(ys((i + 1) / lat.length))}`)
  pts.push(`L${n1(xs(lat[lat.length - 1]))} ${n1(ys(1))}`)
  out.push(`<path d="${pts.join('')}" fill="none" stroke="${COLORS.read}" stroke-width="2"/>`)
  for (const [q, label] of [
    [0.5, 'p50'],
    [0.9, 'p90'],
    [0.99, 'p99'],
  ] as const) {
    const v = quantileSorted(lat, q)
    const x = n1(xs(v)),
      y = n1(ys(q))
    out.push(`<circle cx="${x}" cy="${y}" r="3" fill="${COLORS.write}"/>`)
    out.push(`<text x="${Number(x) + 6}" y="${Number(y) + 12}" ${FONT} font-size="11" fill="${COLORS.text}">${label} ${fmt(v)} µs</text>`)
  }
  void stats
}

function workingSetPanel(out: string[], t: Trace, box: Box, durationNs: number): void {
  const unit = timeUnit(durationNs)
  const maxT = Math.max(durationNs / unit.div, 1e-3)
  const ws = workingSetCurve(t)
  const inst = installedCurve(t)
  const maxPages = Math.max(1, ws.pages.length ? ws.pages[ws.pages.length - 1] : 0, inst.pages.length ? inst.pages[inst.pages.length - 1] : 0)
  const xs = linear(0, maxT, box.x, box.x + box.w)
  const ys = linear(0, maxPages, box.y + box.h, box.y)
  frame(out, box, 'Working set over time', `time since resume (${unit.name})`, 'pages', niceTicks(0, maxT, 5), xs, fmt, niceTicks(0, maxPages, 5), ys, fmt)
  const line = (times: ArrayLike<number>, pages: ArrayLike<number>, color: string, dash = '') => {
    if (times.length === 0) return
    const d: string[] = [`M${n1(xs(0))} ${n1(ys(0))}`]
    let lastX = -1
    for (let i = 0; i < times.length; i++) {
      const x = xs(times[i] / unit.div)
      // Keep the last point of each pixel column, so the curve's top is exact.
      if (Math.round(x) === lastX && i < times.length - 1 && Math.round(xs(times[i + 1] / unit.div)) === lastX) continue
      lastX = Math.round(x)
      d.push(`L${n1(x)} ${n1(ys(pages[i]))}`)
    }
    d.push(`L${n1(xs(maxT))} ${n1(ys(pages[pages.length - 1]))}`)
    out.push(`<path d="${d.join('')}" fill="none" stroke="${color}" stroke-width="2"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`)
  }
  line(inst.timeNs, inst.pages, COLORS.prefetch, '5 3')
  line(ws.timeNs, ws.pages, COLORS.read)
  legend(out, box.x + 8, box.y + 16, [
    [COLORS.read, 'distinct pages faulted'],
    [COLORS.prefetch, 'pages installed'],
  ])
}

function titleLines(t: Trace, s: TraceStats): [string, string] {
  const h = t.header
  const us = (ns: number) => `${Number((ns / 1000).toPrecision(3))} µs`
  return [
    `${basename(t.path)}: policy ${h.policy || '?'}, session ${h.sessionId}, pid ${h.pid}${t.incomplete ? ' (incomplete trace)' : ''}`,
    `${s.faults} faults, ${s.uniquePagesFaulted} pages faulted, ${s.uniquePagesInstalled} installed ` +
      `(${s.pagesByCause.fault} fault, ${s.pagesByCause.prefetch} prefetch, ${s.pagesByCause.background} background); ` +
      `service p50 ${us(s.latency.p50Ns)}, p99 ${us(s.latency.p99Ns)}`,
  ]
}

/** The three panels as one SVG document. */
export function renderTraceSvg(t: Trace, stats = traceStats(t)): string {
  const durationNs = Math.max(stats.durationNs, 1)
  const out: string[] = []
  const height = 880
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}">`)
  out.push(`<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`)
  const [title, subtitle] = titleLines(t, stats)
  out.push(`<text x="20" y="26" ${FONT} font-size="15" font-weight="600" fill="${COLORS.text}">${esc(title)}</text>`)
  out.push(`<text x="20" y="46" ${FONT} font-size="12" fill="${COLORS.axis}">${esc(subtitle)}</text>`)
  scatterPanel(out, t, { x: 80, y: 90, w: WIDTH - 110, h: 380 }, durationNs)
  cdfPanel(out, t, { x: 80, y: 560, w: 360, h: 260 }, stats)
  workingSetPanel(out, t, { x: 570, y: 560, w: 360, h: 260 }, durationNs)
  out.push('</svg>')
  return out.join('\n')
}

/** An HTML page: the summary numbers as a table, then the SVG. */
export function renderTraceHtml(t: Trace, stats = traceStats(t)): string {
  const us = (ns: number) => `${(ns / 1000).toFixed(1)} µs`
  const rows: Array<[string, string]> = [
    ['policy', t.header.policy || '?'],
    ['records', String(stats.records)],
    ['duration since resume', `${(stats.durationNs / 1e6).toFixed(1)} ms`],
    ['faults (write, on present pages)', `${stats.faults} (${stats.writeFaults}, ${stats.faultsOnPresentPages})`],
    ['faulting threads', String(stats.threads)],
    ['distinct pages faulted / installed', `${stats.uniquePagesFaulted} / ${stats.uniquePagesInstalled}`],
    ['pages installed by fault / prefetch / background', `${stats.pagesByCause.fault} / ${stats.pagesByCause.prefetch} / ${stats.pagesByCause.background}`],
    ['pages installed before resume', `${stats.pagesBeforeResume} in ${(stats.beforeResumeNs / 1e6).toFixed(2)} ms`],
    ['fault rate (mean, peak over 10 ms)', `${Math.round(stats.faultsPerSec)}/s, ${Math.round(stats.peakFaultsPerSec)}/s`],
    [
      'service latency p50 / p90 / p99 / max',
      `${us(stats.latency.p50Ns)} / ${us(stats.latency.p90Ns)} / ${us(stats.latency.p99Ns)} / ${us(stats.latency.maxNs)}`,
    ],
  ]
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(basename(t.path))} - faultline trace</title>
<style>body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;color:#24292f;margin:24px;max-width:1000px}
table{border-collapse:collapse;margin:12px 0 20px}td{padding:3px 14px 3px 0;border-bottom:1px solid #eaeef2}
td:first-child{color:#57606a}svg{border:1px solid #d0d7de;border-radius:6px}</style></head>
<body><h1 style="font-size:20px">faultline trace: ${esc(basename(t.path))}</h1>
<table>${rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join('')}</table>
${renderTraceSvg(t, stats)}
</body></html>
`
}
