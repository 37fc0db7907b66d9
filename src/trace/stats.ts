// Summaries of a trace: pages, working-set growth, fault rate, service latency, installs by
// cause. Pure functions over a read Trace; the CLI formats them.
import { InstallCause, type TRACE_CAUSE_NAMES, TRACE_FLAG_BEFORE_RESUME, TRACE_FLAG_WRITE } from './format.js'
import { timeOrder, type Trace } from './reader.js'

/** Window for the peak fault rate. */
export const PEAK_WINDOW_NS = 10_000_000

export interface LatencySummary {
  count: number
  meanNs: number
  p50Ns: number
  p90Ns: number
  p99Ns: number
  maxNs: number
}

export interface TraceStats {
  records: number
  /** Time of the last record since resume. */
  durationNs: number
  faults: number
  /** Faults on a page already there (another thread's fault or a prefetch installed it). */
  faultsOnPresentPages: number
  writeFaults: number
  /** Distinct faulting threads. */
  threads: number
  uniquePagesFaulted: number
  uniquePagesInstalled: number
  /** Pages installed per cause: fault, prefetch, background. */
  pagesByCause: Record<(typeof TRACE_CAUSE_NAMES)[number], number>
  pagesBeforeResume: number
  /** Time the policy's up-front installs took before the guest resumed. */
  beforeResumeNs: number
  faultsPerSec: number
  /** Most faults in any PEAK_WINDOW_NS window, per second. */
  peakFaultsPerSec: number
  latency: LatencySummary
  /** Distinct faulted pages at fractions 0.1..1 of the duration. */
  workingSetGrowth: Array<{ timeNs: number; pages: number }>
  /** When the faulted working set reached 50%, 90% and 100% of its final size. */
  workingSetTimeNs: { p50: number; p90: number; p100: number }
}

/** Exact quantile (nearest rank) of sorted values. */
export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0
  const rank = Math.max(1, Math.ceil(q * sorted.length))
  return sorted[rank - 1]
}

export function summarizeLatency(values: Float64Array): LatencySummary {
  const sorted = values.slice().sort()
  let sum = 0
  for (let i = 0; i < sorted.length; i++) sum += sorted[i]
  return {
    count: sorted.length,
    meanNs: sorted.length ? Math.round(sum / sorted.length) : 0,
    p50Ns: quantileSorted(sorted, 0.5),
    p90Ns: quantileSorted(sorted, 0.9),
    p99Ns: quantileSorted(sorted, 0.99),
    maxNs: sorted.length ? sorted[sorted.length - 1] : 0,
  }
}

/** The faulted working set over time: one point per newly faulted page, in time order. */
export function workingSetCurve(t: Trace): { timeNs: Float64Array; pages: Uint32Array } {
  const seen = new Set<number>()
  const times: number[] = []
  for (const i of timeOrder(t)) {
    if (t.cause[i] !== InstallCause.Fault || seen.has(t.page[i])) continue
    seen.add(t.page[i])
    times.push(Math.max(0, t.timeNs[i]))
  }
  return { timeNs: Float64Array.from(times), pages: Uint32Array.from(times, (_, k) => k + 1) }
}

/** Pages installed (any cause) over time: one point per record that installed pages. */
export function installedCurve(t: Trace): { timeNs: Float64Array; pages: Float64Array } {
  const times: number[] = []
  const pages: number[] = []
  let total = 0
  for (const i of timeOrder(t)) {
    if (t.count[i] === 0) continue
    total += t.count[i]
    times.push(Math.max(0, t.timeNs[i]))
    pages.push(total)
  }
  return { timeNs: Float64Array.from(times), pages: Float64Array.from(pages) }
}

export function traceStats(t: Trace): TraceStats {
  let faults = 0,
    onPresent = 0,
    writes = 0,
    durationNs = 0,
    beforeResumePages = 0,
    beforeResumeNs = 0
  const byCause = [0, 0, 0]
  const threads = new Set<number>()
  const faulted = new Set<number>()
  const installed = new Uint8Array(Math.max(t.header.snapshotPages, 1))
  let uniqueInstalled = 0
  const latencies: number[] = []
  const faultTimes: number[] = []
  for (let i = 0; i < t.length; i++) {
    const time = t.timeNs[i]
    if (time > durationNs) durationNs = time
    const count = t.count[i]
    byCause[t.cause[i]] += count
    for (let p = t.page[i], end = Math.min(p + count, installed.length); p < end; p++) {
      if (installed[p] === 0) {
        installed[p] = 1
        uniqueInstalled++
      }
    }
    if ((t.flags[i] & TRACE_FLAG_BEFORE_RESUME) !== 0) {
      beforeResumePages += count
      beforeResumeNs += t.latencyNs[i]
    }
    if (t.cause[i] !== InstallCause.Fault) continue
    faults++
    if (count === 0) onPresent++
    if ((t.flags[i] & TRACE_FLAG_WRITE) !== 0) writes++
    threads.add(t.threadId[i])
    faulted.add(t.page[i])
    latencies.push(t.latencyNs[i])
    faultTimes.push(time)
  }
  faultTimes.sort((a, b) => a - b)
  let peak = 0
  for (let lo = 0, hi = 0; hi < faultTimes.length; hi++) {
    while (faultTimes[hi] - faultTimes[lo] >= PEAK_WINDOW_NS) lo++
    if (hi - lo + 1 > peak) peak = hi - lo + 1
  }
  const curve = workingSetCurve(t)
  const pagesAt = (timeNs: number) => {
    // Distinct pages faulted at or before timeNs (binary search on the curve).
    let lo = 0,
      hi = curve.timeNs.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (curve.timeNs[mid] <= timeNs) lo = mid + 1
      else hi = mid
    }
    return lo
  }
  const timeToReach = (fraction: number) => {
    const n = curve.pages.length
    if (n === 0) return 0
    return curve.timeNs[Math.max(0, Math.ceil(fraction * n) - 1)]
  }
  const growth: Array<{ timeNs: number; pages: number }> = []
  for (let k = 1; k <= 10; k++) {
    const timeNs = Math.round((durationNs * k) / 10)
    growth.push({ timeNs, pages: pagesAt(timeNs) })
  }
  const seconds = durationNs / 1e9
  return {
    records: t.length,
    durationNs,
    faults,
    faultsOnPresentPages: onPresent,
    writeFaults: writes,
    threads: threads.size,
    uniquePagesFaulted: faulted.size,
    uniquePagesInstalled: uniqueInstalled,
    pagesByCause: { fault: byCause[0], prefetch: byCause[1], background: byCause[2] },
    pagesBeforeResume: beforeResumePages,
    beforeResumeNs,
    faultsPerSec: seconds > 0 ? faults / seconds : 0,
    peakFaultsPerSec: durationNs > 0 ? peak / (Math.min(PEAK_WINDOW_NS, durationNs) / 1e9) : 0,
    latency: summarizeLatency(Float64Array.from(latencies)),
    workingSetGrowth: growth,
    workingSetTimeNs: { p50: timeToReach(0.5), p90: timeToReach(0.9), p100: timeToReach(1) },
  }
}
