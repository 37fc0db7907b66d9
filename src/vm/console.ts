// The guest's serial console as lines: every line is kept with the time it arrived, so a
// driver can wait for a line and learn when the guest printed it, not when it looked.
import type { Readable, Writable } from 'node:stream'
import { VmError } from './errors.js'

export interface ConsoleLine {
  text: string
  /** process.hrtime.bigint() when the line's last byte arrived, as a number of ns. */
  atNs: number
}

export interface WaitForLineOptions {
  timeoutMs: number
  /** First line index to look at; default: only lines that arrive from now on. */
  fromIndex?: number
}

export interface LineMatch {
  line: ConsoleLine
  match: RegExpMatchArray
  index: number
}

interface Waiter {
  pattern: RegExp
  fromIndex: number
  resolve: (m: LineMatch) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

// Kept for error messages only: the last lines say why a guest got stuck.
const TAIL_LINES = 20
const MAX_LINES = 100_000

export class GuestConsole {
  readonly name: string
  private readonly input: Writable
  private readonly lines: ConsoleLine[] = []
  private readonly waiters = new Set<Waiter>()
  private partial = ''
  private ended?: string

  constructor(name: string, output: Readable, input: Writable) {
    this.name = name
    this.input = input
    output.setEncoding('utf8')
    output.on('data', (chunk: string) => this.onData(chunk))
    output.on('end', () => this.end('the console closed (QEMU exited?)'))
    input.on('error', () => {}) // EPIPE after QEMU exits: reported through 'end' instead
  }

  /** Number of lines seen so far: pass as `fromIndex` to wait only for later lines. */
  get lineCount(): number {
    return this.lines.length
  }

  /** Sends text to the guest as if typed on the serial line. */
  send(text: string): void {
    if (this.ended) throw new VmError(`${this.name}: cannot write to the console: ${this.ended}`)
    this.input.write(text)
  }

  waitForLine(pattern: RegExp, options: WaitForLineOptions): Promise<LineMatch> {
    const fromIndex = options.fromIndex ?? this.lines.length
    for (let i = fromIndex; i < this.lines.length; i++) {
      const m = this.lines[i].text.match(pattern)
      if (m) return Promise.resolve({ line: this.lines[i], match: m, index: i })
    }
    if (this.ended) return Promise.reject(this.failure(pattern, this.ended))
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        pattern,
        fromIndex,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter)
          reject(this.failure(pattern, `not seen within ${options.timeoutMs} ms`))
        }, options.timeoutMs).unref(), // QEMU's pipes keep the process alive while it waits
      }
      this.waiters.add(waiter)
    })
  }

  /** The last lines, for error messages. */
  tail(n = TAIL_LINES): string[] {
    return this.lines.slice(-n).map(l => l.text)
  }

  private onData(chunk: string): void {
    const atNs = Number(process.hrtime.bigint())
    this.partial += chunk
    let nl: number
    while ((nl = this.partial.indexOf('\n')) >= 0) {
      // The guest's tty turns \n into \r\n; kernel messages may carry stray \r too.
      const text = this.partial.slice(0, nl).replace(/\r/g, '')
      this.partial = this.partial.slice(nl + 1)
      this.push({ text, atNs })
    }
  }

  private push(line: ConsoleLine): void {
    if (this.lines.length >= MAX_LINES) this.lines.splice(0, MAX_LINES / 2) // a runaway guest
    this.lines.push(line)
    const index = this.lines.length - 1
    for (const w of [...this.waiters]) {
      if (index < w.fromIndex) continue
      const m = line.text.match(w.pattern)
      if (!m) continue
      clearTimeout(w.timer)
      this.waiters.delete(w)
      w.resolve({ line, match: m, index })
    }
  }

  private end(reason: string): void {
    if (this.partial) this.push({ text: this.partial.replace(/\r/g, ''), atNs: Number(process.hrtime.bigint()) })
    this.partial = ''
    this.ended = reason
    for (const w of [...this.waiters]) {
      clearTimeout(w.timer)
      this.waiters.delete(w)
      w.reject(this.failure(w.pattern, reason))
    }
  }

  private failure(pattern: RegExp, why: string): VmError {
    const last = this.tail(3)
      .filter(l => l.trim())
      .join(' | ')
    return new VmError(`${this.name}: waiting for ${pattern.source}: ${why}${last ? ` (last console lines: ${last})` : ''}`)
  }
}
