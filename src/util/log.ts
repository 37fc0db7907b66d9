// Log lines for long-running commands (serve): `faultline: <message>` for people (the
// default), or pino's line format for log collectors: one JSON object a line with `level`
// (30 info, 40 warn, 50 error), `time` (ms since the epoch), `pid` and `hostname` of this
// process, the event's own fields, then `msg`.
import { hostname } from 'node:os'

export type LogFormat = 'text' | 'json'
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json']

/** pino's numeric levels. */
export const LEVELS = { info: 30, warn: 40, error: 50 } as const
export type LogLevel = keyof typeof LEVELS

export type LogFields = Record<string, string | number | boolean | null | undefined | Record<string, number>>

export class Logger {
  private readonly format: LogFormat
  private readonly write: (line: string) => void
  private readonly host = hostname()

  constructor(
    format: LogFormat,
    write: (line: string) => void = line => {
      process.stderr.write(line)
    },
  ) {
    this.format = format
    this.write = write
  }

  info(msg: string, fields?: LogFields): void {
    this.log('info', msg, fields)
  }
  warn(msg: string, fields?: LogFields): void {
    this.log('warn', msg, fields)
  }
  error(msg: string, fields?: LogFields): void {
    this.log('error', msg, fields)
  }

  log(level: LogLevel, msg: string, fields: LogFields = {}): void {
    if (this.format === 'text') {
      this.write(`faultline: ${msg}\n`)
      return
    }
    const line: Record<string, unknown> = { level: LEVELS[level], time: Date.now(), pid: process.pid, hostname: this.host }
    for (const [k, v] of Object.entries(fields)) if (v !== undefined && !(k in line)) line[k] = v
    line.msg = msg
    this.write(`${JSON.stringify(line)}\n`)
  }
}
