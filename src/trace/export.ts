// Trace records as CSV or JSON Lines for other tools (one row per record, file order).
import { TRACE_CAUSE_NAMES, TRACE_FLAG_BEFORE_RESUME, TRACE_FLAG_WRITE } from './format.js'
import type { Trace } from './reader.js'

export type ExportFormat = 'csv' | 'jsonl'

export const CSV_COLUMNS = ['time_ns', 'page', 'pages', 'cause', 'write', 'before_resume', 'thread_id', 'latency_ns'] as const

/** Rows per chunk handed to `write`: keeps memory flat for large traces. */
const CHUNK_ROWS = 4096

/** Writes every record of `t` in `format` through `write`, in chunks of whole lines. */
export function exportTrace(t: Trace, format: ExportFormat, write: (chunk: string) => void): void {
  for (const chunk of exportChunks(t, format)) write(chunk)
}

/** The export as chunks of whole lines (CHUNK_ROWS records each): a caller can stop, or let
 * its event loop run, between two. */
export function* exportChunks(t: Trace, format: ExportFormat): Generator<string> {
  const lines: string[] = []
  if (format === 'csv') lines.push(CSV_COLUMNS.join(','))
  for (let i = 0; i < t.length; i++) {
    const cause = TRACE_CAUSE_NAMES[t.cause[i]]
    const write1 = (t.flags[i] & TRACE_FLAG_WRITE) !== 0
    const before = (t.flags[i] & TRACE_FLAG_BEFORE_RESUME) !== 0
    if (format === 'csv') {
      lines.push(`${t.timeNs[i]},${t.page[i]},${t.count[i]},${cause},${write1 ? 1 : 0},${before ? 1 : 0},${t.threadId[i]},${t.latencyNs[i]}`)
    } else {
      lines.push(
        `{"time_ns":${t.timeNs[i]},"page":${t.page[i]},"pages":${t.count[i]},"cause":"${cause}","write":${write1},` +
          `"before_resume":${before},"thread_id":${t.threadId[i]},"latency_ns":${t.latencyNs[i]}}`,
      )
    }
    if (lines.length >= CHUNK_ROWS) {
      yield lines.join('\n') + '\n'
      lines.length = 0
    }
  }
  if (lines.length) yield lines.join('\n') + '\n'
}
