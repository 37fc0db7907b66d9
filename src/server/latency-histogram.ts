// A fixed-size log-linear histogram of latencies in nanoseconds (8 sub-buckets per power of
// two, so quantiles are within 12.5%): recording allocates nothing. Its cells may live in
// memory the server shares (a session's counters), so that /metrics reads it live.
const SUB = 8
export const HISTOGRAM_BUCKETS = 64 * SUB
/** Cells after the buckets: samples, their sum (ns) and the largest. */
const TOTAL = HISTOGRAM_BUCKETS,
  SUM = HISTOGRAM_BUCKETS + 1,
  MAX = HISTOGRAM_BUCKETS + 2
/** Float64 cells a histogram takes. */
export const HISTOGRAM_CELLS = HISTOGRAM_BUCKETS + 3

export class LatencyHistogram {
  /** Samples per bucket: bucket exp * 8 + sub holds (2^exp + sub * 2^(exp-3), the next]. */
  readonly counts: Float64Array
  private readonly cells: Float64Array

  /** `cells`: HISTOGRAM_CELLS Float64 cells to keep it in (default: its own). */
  constructor(cells?: Float64Array) {
    this.cells = cells ?? new Float64Array(HISTOGRAM_CELLS)
    this.counts = this.cells.subarray(0, HISTOGRAM_BUCKETS)
  }

  get total(): number {
    return this.cells[TOTAL]
  }
  get sumNs(): number {
    return this.cells[SUM]
  }
  get maxNs(): number {
    return this.cells[MAX]
  }

  record(ns: number): void {
    if (ns < 1) ns = 1
    let exp: number, sub: number
    if (ns < 2147483648) {
      // Integer bit tricks: Math.log2 and ** showed up in the fault loop's profile.
      const n = ns | 0
      exp = 31 - Math.clz32(n)
      sub = exp < 3 ? 0 : (n >>> (exp - 3)) - SUB
    } else {
      exp = Math.floor(Math.log2(ns))
      sub = Math.floor(ns / 2 ** (exp - 3) - SUB)
    }
    const c = this.cells
    c[exp * SUB + sub]++
    c[TOTAL]++
    c[SUM] += ns
    if (ns > c[MAX]) c[MAX] = ns
  }

  /** Adds `other`'s samples to this one's (an ended session's into the server's totals). */
  add(other: LatencyHistogram): void {
    const c = this.cells,
      o = other.cells
    for (let i = 0; i < MAX; i++) c[i] += o[i]
    if (o[MAX] > c[MAX]) c[MAX] = o[MAX]
  }

  /** Samples below 2^exp ns (exact: powers of two are bucket bounds). */
  countBelowPow2(exp: number): number {
    let n = 0
    const end = Math.min(HISTOGRAM_BUCKETS, exp * SUB)
    for (let i = 0; i < end; i++) n += this.cells[i]
    return n
  }

  /** Upper bound of the bucket holding quantile q (0..1). */
  quantile(q: number): number {
    const total = this.total
    if (total === 0) return 0
    const rank = Math.ceil(q * total)
    let seen = 0
    for (let i = 0; i < HISTOGRAM_BUCKETS; i++) {
      seen += this.cells[i]
      if (seen >= rank) {
        const exp = Math.floor(i / SUB)
        const sub = i % SUB
        const upper = exp < 3 ? 2 ** (exp + 1) : 2 ** exp + (sub + 1) * 2 ** (exp - 3)
        return Math.min(upper, this.maxNs)
      }
    }
    return this.maxNs
  }

  summary(): { count: number; meanNs: number; p50Ns: number; p90Ns: number; p99Ns: number; maxNs: number } {
    const total = this.total
    return {
      count: total,
      meanNs: total ? Math.round(this.sumNs / total) : 0,
      p50Ns: Math.round(this.quantile(0.5)),
      p90Ns: Math.round(this.quantile(0.9)),
      p99Ns: Math.round(this.quantile(0.99)),
      maxNs: Math.round(this.maxNs),
    }
  }
}
