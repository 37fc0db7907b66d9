// A fixed-size log-linear histogram of latencies in nanoseconds (8 sub-buckets per power of
// two, so quantiles are within 12.5%): recording allocates nothing.
const SUB = 8
const BUCKETS = 64 * SUB

export class LatencyHistogram {
  readonly counts = new Float64Array(BUCKETS)
  total = 0
  sumNs = 0
  maxNs = 0

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
    this.counts[exp * SUB + sub]++
    this.total++
    this.sumNs += ns
    if (ns > this.maxNs) this.maxNs = ns
  }

  /** Upper bound of the bucket holding quantile q (0..1). */
  quantile(q: number): number {
    if (this.total === 0) return 0
    const rank = Math.ceil(q * this.total)
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]
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
    return {
      count: this.total,
      meanNs: this.total ? Math.round(this.sumNs / this.total) : 0,
      p50Ns: Math.round(this.quantile(0.5)),
      p90Ns: Math.round(this.quantile(0.9)),
      p99Ns: Math.round(this.quantile(0.99)),
      maxNs: Math.round(this.maxNs),
    }
  }
}
