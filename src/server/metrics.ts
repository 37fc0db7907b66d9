// The page server's numbers in the Prometheus text exposition format (version 0.0.4), for
// `serve --metrics`. Written by hand rather than with prom-client (not among the packages this
// project can install, and it would only wrap what is here): every session's counters and
// service-time histogram already live in memory it shares with the main thread
// (session-meters.ts), so a scrape reads them where the sessions write them and the fault path
// pays nothing for metrics. Ended sessions are folded into totals, so counters never go back.
import type { CacheCounts } from '../cache/decoded-cache.js'
import type { FillPoolStats } from '../cache/fill-pool.js'
import type { ChunkStoreStats } from '../store/chunk-store.js'
import { HISTOGRAM_CELLS, LatencyHistogram } from './latency-histogram.js'
import type { SessionRecord } from './session-pool.js'
import {
  COUNTER_SLOTS,
  K_CACHE_PRIVATE,
  K_CACHE_WAKES,
  K_FAULTS,
  K_FOLIOS_REQUESTED,
  K_PAGES,
  K_PAGES_FROM_CACHE,
  K_POISONED,
  K_REMOTE_WAITS,
  K_ZERO_PAGES,
} from './session-meters.js'

/** What the metrics read from the server. */
export interface MetricsSource {
  on(event: 'session' | 'ended', listener: (rec: SessionRecord) => void): unknown
  on(event: 'rejected', listener: (pid: number, error: string) => void): unknown
  cacheCounts(): CacheCounts | undefined
  fillTotals(): FillPoolStats | undefined
  readonly store: { readonly stats: ChunkStoreStats } | undefined
  pendingHandshakes(): number
}

/** Why a guest was refused, from the server's one-line reason. */
const REFUSAL_REASONS: ReadonlyArray<readonly [string, RegExp]> = [
  ['uid', /is not allowed \(allowed:/],
  ['busy', /^server busy/],
  ['stopping', /^server stopping/],
  ['timeout', /^no complete handshake within/],
  ['snapshot_replaced', /was replaced since the server started/],
  ['pidfd', /^cannot open a pidfd/],
  ['worker', /^session worker/],
]

const END_REASONS: ReadonlyArray<readonly [string, RegExp]> = [
  ['guest', /^guest (disconnected|exited)$/],
  ['stopping', /^server stopping/],
  ['unservable', /^(snapshot|object store) error/],
  ['stalled', /^session stalled/],
]

function classify(text: string, table: ReadonlyArray<readonly [string, RegExp]>, otherwise: string): string {
  for (const [name, re] of table) if (re.test(text)) return name
  return otherwise
}

const CAUSES = ['fault', 'prefetch', 'background'] as const
/** Histogram bounds: 2^9 ns (512 ns) .. 2^30 ns (1.07 s), powers of two being exact bucket
 * bounds of LatencyHistogram. */
const FIRST_BOUND_EXP = 9,
  LAST_BOUND_EXP = 30

interface Live {
  counters: Float64Array
  histogram: LatencyHistogram
}

function liveView(rec: SessionRecord): Live | undefined {
  if (rec.counters === undefined) return undefined
  return {
    counters: new Float64Array(rec.counters, 0, COUNTER_SLOTS),
    histogram: new LatencyHistogram(new Float64Array(rec.counters, COUNTER_SLOTS * 8, HISTOGRAM_CELLS)),
  }
}

export class ServerMetrics {
  private readonly live = new Map<number, Live>()
  private readonly endedCounters = new Float64Array(COUNTER_SLOTS)
  private readonly endedHistogram = new LatencyHistogram()
  private accepted = 0
  private endedBytesRead = 0
  private readonly refused = new Map<string, number>()
  private readonly ended = new Map<string, number>()

  constructor(private readonly server: MetricsSource) {
    server.on('session', rec => {
      this.accepted++
      const v = liveView(rec)
      if (v !== undefined) this.live.set(rec.id, v)
    })
    server.on('ended', rec => {
      const v = this.live.get(rec.id) ?? liveView(rec)
      this.live.delete(rec.id)
      if (v !== undefined) {
        for (let i = 0; i < COUNTER_SLOTS; i++) this.endedCounters[i] += v.counters[i]
        this.endedHistogram.add(v.histogram)
      }
      this.endedBytesRead += rec.stats?.bytesRead ?? 0
      const why = classify(rec.stats?.endReason ?? rec.error ?? '', END_REASONS, rec.stats === undefined ? 'failed' : 'other')
      this.ended.set(why, (this.ended.get(why) ?? 0) + 1)
    })
    server.on('rejected', (_pid, error) => {
      const why = classify(error, REFUSAL_REASONS, 'handshake')
      this.refused.set(why, (this.refused.get(why) ?? 0) + 1)
    })
  }

  /** Counter `k` over every session, ended and running. */
  private total(k: number): number {
    let n = this.endedCounters[k]
    for (const v of this.live.values()) n += v.counters[k]
    return n
  }

  /** The exposition text. */
  render(): string {
    const out = new Exposition()
    out.metric('faultline_sessions_accepted_total', 'counter', 'Guests whose session started.', [[{}, this.accepted]])
    out.metric(
      'faultline_sessions_refused_total',
      'counter',
      'Guests refused, by reason.',
      [...this.refused].map(([reason, n]) => [{ reason }, n]),
    )
    out.metric(
      'faultline_sessions_ended_total',
      'counter',
      'Sessions ended, by reason.',
      [...this.ended].map(([reason, n]) => [{ reason }, n]),
    )
    out.metric('faultline_sessions_active', 'gauge', 'Sessions being served.', [[{}, this.live.size]])
    out.metric('faultline_handshakes_pending', 'gauge', 'Connections whose first message is awaited.', [[{}, this.server.pendingHandshakes()]])
    out.metric('faultline_faults_total', 'counter', 'Page faults on absent pages.', [[{}, this.total(K_FAULTS)]])
    out.metric(
      'faultline_pages_installed_total',
      'counter',
      'Pages installed into guests, by cause (zero pages included).',
      CAUSES.map((cause, c) => [{ cause }, this.total(K_PAGES + c)]),
    )
    out.metric('faultline_zero_pages_installed_total', 'counter', 'Of the pages installed, zero pages (UFFDIO_ZEROPAGE).', [[{}, this.total(K_ZERO_PAGES)]])
    out.metric('faultline_pages_poisoned_total', 'counter', 'Pages poisoned: they failed verification or could not be had.', [[{}, this.total(K_POISONED)]])
    out.metric('faultline_remote_waits_total', 'counter', 'Faults that waited for their chunk from the object store.', [[{}, this.total(K_REMOTE_WAITS)]])
    this.renderCache(out)
    this.renderLatency(out)
    this.renderStore(out)
    const m = process.memoryUsage()
    out.metric('process_resident_memory_bytes', 'gauge', 'Resident memory of the server process.', [[{}, m.rss]])
    out.metric('nodejs_heap_used_bytes', 'gauge', 'V8 heap used by the main thread.', [[{}, m.heapUsed]])
    out.metric('nodejs_array_buffers_bytes', 'gauge', 'ArrayBuffer and Buffer memory of the main thread.', [[{}, m.arrayBuffers]])
    return out.text()
  }

  private renderCache(out: Exposition): void {
    out.metric(
      'faultline_cache_fault_wakes_total',
      'counter',
      'Cache-mapped guests: faults whose folio was in the decoded cache (hits, answered with a wake).',
      [[{}, this.total(K_CACHE_WAKES)]],
    )
    out.metric('faultline_cache_private_pages_total', 'counter', 'Cache-mapped guests: pages served privately, their folio not in the cache yet (misses).', [
      [{}, this.total(K_CACHE_PRIVATE)],
    ])
    out.metric('faultline_cache_pages_read_total', 'counter', "Pages installed from the decoded cache instead of decoded (anonymous guests' hits).", [
      [{}, this.total(K_PAGES_FROM_CACHE)],
    ])
    out.metric('faultline_cache_folios_requested_total', 'counter', 'Folios sessions asked the fill workers for.', [[{}, this.total(K_FOLIOS_REQUESTED)]])
    const fills = this.server.fillTotals()
    const local = this.endedBytesRead + (fills?.bytesRead ?? 0)
    out.metric('faultline_snapshot_bytes_read_total', 'counter', 'Stored bytes read from the local snapshot (fill workers live, sessions when they end).', [
      [{}, local],
    ])
    const counts = this.server.cacheCounts()
    if (fills !== undefined) {
      out.metric(
        'faultline_cache_folios_filled_total',
        'counter',
        'Folios the fill workers decoded into the cache, by priority.',
        CAUSES.map((priority, p) => [{ priority }, fills.foliosByPriority[p]]),
      )
    }
    if (counts !== undefined) {
      out.metric('faultline_cache_bytes', 'gauge', 'Decoded bytes the cache holds.', [[{}, counts.presentBytes]])
      out.metric('faultline_cache_evictions_total', 'counter', 'Folios evicted from the cache.', [[{}, counts.evictions]])
    }
  }

  private renderLatency(out: Exposition): void {
    const buckets: Array<[Record<string, string>, number]> = []
    let count = this.endedHistogram.total,
      sumNs = this.endedHistogram.sumNs
    for (const v of this.live.values()) {
      count += v.histogram.total
      sumNs += v.histogram.sumNs
    }
    for (let e = FIRST_BOUND_EXP; e <= LAST_BOUND_EXP; e++) {
      let n = this.endedHistogram.countBelowPow2(e)
      for (const v of this.live.values()) n += v.histogram.countBelowPow2(e)
      buckets.push([{ le: String(2 ** e / 1e9) }, n])
    }
    buckets.push([{ le: '+Inf' }, count])
    out.histogram(
      'faultline_fault_service_seconds',
      'Fault service time, from the uffd read to the install (a bucket counts faults served in less than its bound).',
      buckets,
      sumNs / 1e9,
      count,
    )
  }

  private renderStore(out: Exposition): void {
    const store = this.server.store
    if (store === undefined) return
    const s = store.stats
    out.metric('faultline_store_requests_total', 'counter', 'Object-store GET requests (retries, header and index included).', [[{}, s.requests]])
    out.metric('faultline_store_retries_total', 'counter', 'Object-store requests retried.', [[{}, s.retries]])
    out.metric('faultline_store_errors_total', 'counter', 'Chunk fetches that failed for good.', [[{}, s.failures]])
    out.metric('faultline_store_bytes_fetched_total', 'counter', 'Bytes received from the object store.', [[{}, s.bytesFetched]])
    out.metric('faultline_store_chunks_fetched_total', 'counter', 'Chunks fetched from the object store.', [[{}, s.chunksFetched]])
    out.metric('faultline_store_cache_bytes', 'gauge', 'Bytes in the on-disk chunk cache.', [[{}, s.cache.bytes]])
  }
}

/** Lines of the text format. */
class Exposition {
  private readonly lines: string[] = []

  metric(name: string, type: 'counter' | 'gauge', help: string, samples: Array<[Record<string, string>, number]>): void {
    this.lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`)
    for (const [labels, value] of samples) this.lines.push(`${name}${labelText(labels)} ${formatValue(value)}`)
  }

  histogram(name: string, help: string, buckets: Array<[Record<string, string>, number]>, sum: number, count: number): void {
    this.lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} histogram`)
    for (const [labels, value] of buckets) this.lines.push(`${name}_bucket${labelText(labels)} ${formatValue(value)}`)
    this.lines.push(`${name}_sum ${formatValue(sum)}`, `${name}_count ${formatValue(count)}`)
  }

  text(): string {
    return this.lines.join('\n') + '\n'
  }
}

function labelText(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
  return parts.length === 0 ? '' : `{${parts.join(',')}}`
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN'
  if (v === Infinity) return '+Inf'
  if (v === -Infinity) return '-Inf'
  return String(v)
}
