// A small SVG line plot (log or linear axes, several panels, one legend) for benchmark
// reports: no dependency, deterministic output, so a test can check what it drew.

export interface Point {
  x: number
  y: number
}
export interface Series {
  name: string
  points: Point[]
}
export interface Panel {
  title: string
  series: Series[]
}

export interface PlotOptions {
  title: string
  xLabel: string
  yLabel: string
  panels: Panel[]
  /** Panels per row (default: all in one row). */
  columns?: number
  logX?: boolean
  logY?: boolean
  /** Size of one panel's drawing area in px (default 360 x 260). */
  panelWidth?: number
  panelHeight?: number
  formatX?: (x: number) => string
  formatY?: (y: number) => string
  /** Ticks on the x axis (default: every x in the data). */
  xTicks?: number[]
}

/** Colours by series position: the same series has the same colour in every panel. */
export const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf']

const MARGIN = { left: 64, right: 36, top: 28, bottom: 44 }

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, c => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&#39;' })[c]!)
}

/** Maps [d0, d1] to [r0, r1], logarithmically when `log`. */
export function scale(d0: number, d1: number, r0: number, r1: number, log: boolean): (v: number) => number {
  const f = log ? Math.log10 : (v: number) => v
  const a = f(d0),
    b = f(d1)
  const span = b - a || 1
  return v => r0 + ((f(v) - a) / span) * (r1 - r0)
}

/** 1-2-5 ticks per decade inside [lo, hi] for a log axis; falls back to lo and hi. */
export function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = []
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) ticks.push(v)
    }
  }
  return ticks.length >= 2 ? ticks : [lo, hi]
}

/** About five round ticks inside [lo, hi] for a linear axis. */
export function linearTicks(lo: number, hi: number): number[] {
  const step0 = (hi - lo) / 5 || 1
  const mag = 10 ** Math.floor(Math.log10(step0))
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= step0) ?? step0
  const ticks: number[] = []
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12))
  return ticks
}

function defaultFormat(v: number): string {
  return Math.abs(v) >= 1000 || Math.abs(v) < 0.01 ? v.toExponential(0) : String(+v.toPrecision(3))
}

export function renderSvgPlot(opts: PlotOptions): string {
  const pw = opts.panelWidth ?? 360,
    ph = opts.panelHeight ?? 260
  const columns = Math.max(1, Math.min(opts.columns ?? opts.panels.length, opts.panels.length))
  const rows = Math.ceil(opts.panels.length / columns)
  const names: string[] = []
  for (const p of opts.panels) for (const s of p.series) if (!names.includes(s.name)) names.push(s.name)
  const legendHeight = 18 * Math.ceil(names.length / 4) + 8
  const cellW = pw + MARGIN.left + MARGIN.right,
    cellH = ph + MARGIN.top + MARGIN.bottom
  const width = cellW * columns,
    height = 36 + legendHeight + cellH * rows
  const fx = opts.formatX ?? defaultFormat,
    fy = opts.formatY ?? defaultFormat
  const logX = opts.logX ?? false,
    logY = opts.logY ?? false

  // One domain for all panels, so they compare at a glance.
  const xs: number[] = [],
    ys: number[] = []
  for (const p of opts.panels)
    for (const s of p.series)
      for (const pt of s.points) {
        if (Number.isFinite(pt.x) && Number.isFinite(pt.y) && (!logX || pt.x > 0) && (!logY || pt.y > 0)) {
          xs.push(pt.x)
          ys.push(pt.y)
        }
      }
  let [x0, x1] = xs.length ? [Math.min(...xs), Math.max(...xs)] : [1, 10]
  let [y0, y1] = ys.length ? [Math.min(...ys), Math.max(...ys)] : [1, 10]
  if (x0 === x1) {
    x0 = logX ? x0 / 2 : x0 - 1
    x1 = logX ? x1 * 2 : x1 + 1
  }
  if (logY) {
    y0 = 10 ** Math.floor(Math.log10(y0))
    y1 = 10 ** Math.ceil(Math.log10(y1))
    if (y0 === y1) y1 = y0 * 10
  } else {
    y0 = Math.min(0, y0)
    if (y0 === y1) y1 = y0 + 1
  }
  const xTicks = opts.xTicks ?? [...new Set(xs)].sort((a, b) => a - b)
  const yTicks = logY ? logTicks(y0, y1) : linearTicks(y0, y1)

  const out: string[] = []
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
  )
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`)
  out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(opts.title)}</text>`)
  names.forEach((name, i) => {
    const lx = 16 + (i % 4) * ((width - 32) / 4),
      ly = 36 + 18 * Math.floor(i / 4)
    out.push(
      `<g class="legend"><line x1="${lx}" y1="${ly}" x2="${lx + 18}" y2="${ly}" stroke="${PALETTE[i % PALETTE.length]}" stroke-width="2"/>` +
        `<text x="${lx + 22}" y="${ly + 4}">${escapeXml(name)}</text></g>`,
    )
  })
  opts.panels.forEach((panel, pi) => {
    const ox = (pi % columns) * cellW + MARGIN.left
    const oy = 36 + legendHeight + Math.floor(pi / columns) * cellH + MARGIN.top
    const sx = scale(x0, x1, ox, ox + pw, logX),
      sy = scale(y0, y1, oy + ph, oy, logY)
    out.push(`<g class="panel">`)
    out.push(`<text x="${ox + pw / 2}" y="${oy - 10}" text-anchor="middle" font-size="12" font-weight="bold">${escapeXml(panel.title)}</text>`)
    out.push(`<rect x="${ox}" y="${oy}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`)
    for (const t of yTicks) {
      const y = r(sy(t))
      out.push(
        `<line x1="${ox}" y1="${y}" x2="${ox + pw}" y2="${y}" stroke="#eee"/><text x="${ox - 4}" y="${y + 4}" text-anchor="end">${escapeXml(fy(t))}</text>`,
      )
    }
    for (const t of xTicks) {
      const x = r(sx(t))
      out.push(
        `<line x1="${x}" y1="${oy}" x2="${x}" y2="${oy + ph}" stroke="#eee"/><text x="${x}" y="${oy + ph + 14}" text-anchor="middle">${escapeXml(fx(t))}</text>`,
      )
    }
    out.push(`<text x="${ox + pw / 2}" y="${oy + ph + 32}" text-anchor="middle">${escapeXml(opts.xLabel)}</text>`)
    out.push(`<text x="${ox - 48}" y="${oy + ph / 2}" text-anchor="middle" transform="rotate(-90 ${ox - 48} ${oy + ph / 2})">${escapeXml(opts.yLabel)}</text>`)
    for (const s of panel.series) {
      const colour = PALETTE[names.indexOf(s.name) % PALETTE.length]
      const pts = s.points
        .filter(p => Number.isFinite(p.x) && Number.isFinite(p.y) && (!logX || p.x > 0) && (!logY || p.y > 0))
        .sort((a, b) => a.x - b.x)
        .map(p => [r(sx(p.x)), r(sy(p.y))])
      if (pts.length === 0) continue
      out.push(`<g class="series" data-name="${escapeXml(s.name)}">`)
      if (pts.length > 1) out.push(`<polyline fill="none" stroke="${colour}" stroke-width="2" points="${pts.map(p => p.join(',')).join(' ')}"/>`)
      for (const [x, y] of pts) out.push(`<circle cx="${x}" cy="${y}" r="3" fill="${colour}"/>`)
      out.push('</g>')
    }
    out.push('</g>')
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}

function r(v: number): number {
  return Math.round(v * 10) / 10
}
