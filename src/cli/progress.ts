// A one-line progress display on stderr (percent, MB/s, ETA), redrawn at most ~10 times a
// second and only when the stream is a TTY; silent otherwise, so logs and pipes stay clean.
import { formatBytes, formatDuration, formatRate } from '../util/format.js'

export interface ProgressStream {
  isTTY?: boolean
  write(s: string): unknown
}

export interface ProgressOptions {
  /** Where to draw (default process.stderr); nothing is drawn unless it is a TTY. */
  stream?: ProgressStream
  /** Minimum time between redraws (default 100 ms). */
  intervalMs?: number
  /** Clock in milliseconds (tests). */
  now?: () => number
}

export class Progress {
  readonly label: string
  /** Whether anything is drawn at all. */
  readonly enabled: boolean
  totalBytes: number
  private doneBytes = 0
  private readonly stream: ProgressStream
  private readonly intervalMs: number
  private readonly now: () => number
  private readonly startMs: number
  private lastDrawMs = -Infinity
  private drawn = false

  constructor(label: string, totalBytes: number, opts: ProgressOptions = {}) {
    this.label = label
    this.totalBytes = totalBytes
    this.stream = opts.stream ?? process.stderr
    this.enabled = this.stream.isTTY === true
    this.intervalMs = opts.intervalMs ?? 100
    this.now = opts.now ?? (() => performance.now())
    this.startMs = this.now()
  }

  /** Record progress; usable directly as an `onProgress(doneBytes, totalBytes)` callback. */
  readonly update = (doneBytes: number, totalBytes?: number): void => {
    this.doneBytes = doneBytes
    if (totalBytes !== undefined) this.totalBytes = totalBytes
    if (!this.enabled) return
    const t = this.now()
    if (t - this.lastDrawMs < this.intervalMs) return
    this.lastDrawMs = t
    this.stream.write(`\r\x1b[2K${this.line(t)}`)
    this.drawn = true
  }

  /** The current status line, e.g. `create mem.raw  42.0%  812.3 MB/s  ETA 3s`. */
  line(t = this.now()): string {
    const { doneBytes, totalBytes } = this
    const pct = totalBytes > 0 ? Math.min(100, (100 * doneBytes) / totalBytes) : 100
    const secs = (t - this.startMs) / 1000
    const rate = secs > 0 ? doneBytes / secs : 0
    const eta = rate > 0 && secs >= 0.2 ? formatDuration((totalBytes - doneBytes) / rate) : '--'
    return `${this.label}  ${pct.toFixed(1)}%  ${formatRate(rate)}  ETA ${eta}`
  }

  /** Replace the status line with a summary and a newline (TTY only). */
  done(summary?: string): void {
    if (!this.enabled) return
    const t = this.now()
    const secs = (t - this.startMs) / 1000
    const text = summary ?? `${this.label}  ${formatBytes(this.doneBytes)} in ${secs.toFixed(1)} s (${formatRate(secs > 0 ? this.doneBytes / secs : 0)})`
    this.stream.write(`\r\x1b[2K${text}\n`)
    this.drawn = false
  }

  /** Erase the status line (e.g. before printing an error). */
  clear(): void {
    if (this.enabled && this.drawn) this.stream.write('\r\x1b[2K')
    this.drawn = false
  }
}
