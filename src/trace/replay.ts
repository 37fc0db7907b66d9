// Turns a trace into a native-guest workload that touches the recorded pages in the recorded
// first-touch order (`guest --workload pages:FILE`), with the same region size and offset.
import { writeFileSync } from 'node:fs'
import { TraceFormatError } from './format.js'
import { firstTouchOrder, type Trace } from './reader.js'

export interface ReplayPlan {
  /** Guest RAM in MiB (the guest maps whole MiB). */
  mib: number
  /** Byte offset of the guest's region in the snapshot image. */
  offsetBytes: number
  /** Guest page indices (relative to the region) in first-touch order. */
  pages: number[]
  /** Faulted pages outside the first region, left out (the guest maps one region). */
  skipped: number
}

/** The workload that replays `t`'s access order; the guest maps the trace's first region. */
export function replayPlan(t: Trace): ReplayPlan {
  const region = t.header.regions[0]
  if (!region) throw new TraceFormatError(`${t.path}: the trace records no guest region to replay`)
  const pageSize = t.header.pageSize
  if (pageSize !== 4096) throw new TraceFormatError(`${t.path}: page size ${pageSize}: the native guest replays 4096-byte pages only`)
  const bytes = region.pageCount * pageSize
  if (bytes % 2 ** 20 !== 0) throw new TraceFormatError(`${t.path}: region of ${bytes} bytes is not whole MiB (the native guest maps whole MiB)`)
  const pages: number[] = []
  let skipped = 0
  for (const p of firstTouchOrder(t)) {
    if (p >= region.firstPage && p < region.firstPage + region.pageCount) pages.push(p - region.firstPage)
    else skipped++
  }
  return { mib: bytes / 2 ** 20, offsetBytes: region.firstPage * pageSize, pages, skipped }
}

/** Writes the page list in the guest's pages:FILE format (one index a line). */
export function writePagesFile(path: string, plan: ReplayPlan, source: string): void {
  writeFileSync(path, `# first-touch order replayed from ${source}\n${plan.pages.join('\n')}\n`)
}
