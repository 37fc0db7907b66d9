// Builds small trace files for tests through the real recorder.
import { join } from 'node:path'
import { TraceRecorder } from '../../src/trace/recorder.js'
import type { TraceRegion } from '../../src/trace/format.js'

/** [timeNs, page, count, cause, flags, threadId, latencyNs] */
export type Rec = [number, number, number, number, number, number, number]

export function writeTrace(
  dir: string,
  name: string,
  records: Rec[],
  opts: { regions?: TraceRegion[]; policy?: string; close?: boolean; snapshotPages?: number } = {},
): string {
  const path = join(dir, name)
  const rec = new TraceRecorder({
    path,
    pageSize: 4096,
    snapshotPages: opts.snapshotPages ?? 4096,
    sessionId: 3,
    pid: 4242,
    policy: opts.policy ?? 'ondemand',
    regions: opts.regions ?? [{ address: 0x7f0000000000, firstPage: 0, pageCount: 4096 }],
  })
  for (const r of records) rec.record(...r)
  if (opts.close === false) rec.flush()
  else rec.close()
  return path
}

/** Fault records for `pages` in order, 1 µs apart, one page each. */
export function faults(pages: number[], thread = 100, latencyNs = 5000): Rec[] {
  return pages.map((p, i) => [(i + 1) * 1000, p, 1, 0, 0, thread, latencyNs])
}
