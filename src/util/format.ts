// Formatting shared by commands and benchmark reports: plain-text and markdown tables, medians,
// byte counts, rates and durations.

export type Cell = string | number

/** Right-aligns numbers, left-aligns text; `markdown` gives a GitHub table. */
export function formatTable(header: string[], rows: Cell[][], opts: { markdown?: boolean } = {}): string {
  const text = rows.map(r => r.map(c => String(c)))
  const numeric = header.map((_, i) => rows.length > 0 && rows.every(r => typeof r[i] === 'number' || /^[\d.,x×%-]+( \w+)?$/.test(String(r[i]))))
  const widths = header.map((h, i) => Math.max(h.length, ...text.map(r => (r[i] ?? '').length)))
  const pad = (s: string, i: number) => (numeric[i] ? s.padStart(widths[i]) : s.padEnd(widths[i]))
  if (opts.markdown) {
    const line = (cells: string[]) => `| ${cells.map(pad).join(' | ')} |`
    const rule = `|${widths.map((w, i) => (numeric[i] ? `${'-'.repeat(w + 1)}:` : `${'-'.repeat(w + 2)}`)).join('|')}|`
    return [line(header), rule, ...text.map(line)].join('\n')
  }
  const line = (cells: string[]) => cells.map(pad).join('  ').trimEnd()
  return [line(header), line(widths.map(w => '-'.repeat(w))), ...text.map(line)].join('\n')
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN
  const s = [...values].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

export function ms(ns: number, digits = 1): string {
  return (ns / 1e6).toFixed(digits)
}

export function formatRate(bytesPerSec: number): string {
  return `${(bytesPerSec / 1e6).toFixed(1)} MB/s`
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = n / 1024
  let u = 0
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024
    u++
  }
  return `${v.toFixed(1)} ${units[u]}`
}

export function formatDuration(secs: number): string {
  const s = Math.max(0, Math.round(secs))
  if (s < 60) return `${s}s`
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  const ss = String(s % 60).padStart(2, '0')
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`
}
