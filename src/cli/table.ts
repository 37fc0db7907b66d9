// Plain-text and markdown tables for command output and benchmark reports.

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
