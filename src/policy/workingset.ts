// workingset:TRACE[@GAP]: REAP-style. Installs every page of a recorded working set from the
// start, once the guest runs (faults go first), in the order the recorded guest first touched
// them, in runs of pages adjacent in that order (a forward jump of at most GAP pages joins the
// run, the pages between installed too), then serves the rest on demand.
import { readTrace, workingSetPages } from '../trace/reader.js'
import { describeError } from '../errors.js'
import { PolicyArgumentError } from './errors.js'
import type { PolicyArgs } from './args.js'
import { InstallCause, type FaultPolicy, type PolicyContext, type RunList, type SnapshotShape } from './policy.js'

/** Default GAP: exactly the working set. Joining runs saves ioctls but installs pages the
 * guest may never touch; `faultline bench policies` measured no clear gain on this machine. */
export const WORKINGSET_DEFAULT_GAP = 0

/** Sorted runs of pages [first[i], first[i] + count[i]); pages at most `gap` pages apart
 * (that many absent pages between them) share a run. */
export function pagesToRuns(pages: Iterable<number>, gap = 0): { first: number[]; count: number[] } {
  const sorted = Float64Array.from(new Set(pages)).sort()
  const first: number[] = [],
    count: number[] = []
  for (let i = 0; i < sorted.length; ) {
    let j = i + 1
    while (j < sorted.length && sorted[j] <= sorted[j - 1] + 1 + gap) j++
    first.push(sorted[i])
    count.push(sorted[j - 1] - sorted[i] + 1)
    i = j
  }
  return { first, count }
}

/** Runs of `pages` in their order: consecutive entries that continue a run (the next page, or
 * at most `gap` pages further on) extend it; a page already in a run is dropped. */
export function orderedRuns(pages: Iterable<number>, gap = 0): { first: number[]; count: number[] } {
  const seen = new Set<number>()
  const first: number[] = [],
    count: number[] = []
  for (const p of pages) {
    if (seen.has(p)) continue
    const r = first.length - 1
    const end = r >= 0 ? first[r] + count[r] : -1
    if (r >= 0 && p >= end && p <= end + gap) {
      for (let q = end; q <= p; q++) seen.add(q)
      count[r] = p - first[r] + 1
    } else {
      seen.add(p)
      first.push(p)
      count.push(1)
    }
  }
  return { first, count }
}

export class WorkingSetPolicy implements FaultPolicy {
  /** TRACE[@GAP]: a GAP is the digits after the last `@` (a file name may hold other `@`s). */
  static fromArgs(args: PolicyArgs, snapshot?: SnapshotShape): WorkingSetPolicy {
    const spec = args.required('a trace file: --policy workingset:TRACE[@GAP]')
    // TRACE@GAP when what follows the last @ looks like a number (of any sign, so that a bad
    // one is refused rather than read as part of the file name).
    const m = /^(.*)@([-+]?[\d.]+(?:e[-+]?\d+)?)$/i.exec(spec)
    const path = m ? m[1] : spec
    const gap = args.int('a GAP of', 0, 512, WORKINGSET_DEFAULT_GAP, { unit: 'pages', piece: m?.[2] })
    let trace
    try {
      trace = readTrace(path)
    } catch (err) {
      throw args.error(describeError(err), err)
    }
    if (snapshot !== undefined) checkRecordedOn(args, path, trace.header, snapshot)
    return new WorkingSetPolicy(path, workingSetPages(trace), trace.header.pageSize, gap)
  }

  /** Files it read: its trace (what `serve --trace` must not overwrite). */
  readonly inputFiles: readonly string[]

  readonly name: string
  /** Pages in the recorded working set. */
  readonly pages: number
  readonly pageSize: number
  readonly gap: number
  private readonly runs: { first: number[]; count: number[] }

  /** `name`: what the policy calls itself (default `workingset:TRACE[@GAP]`). */
  constructor(tracePath: string, pages: number[], pageSize: number, gap = WORKINGSET_DEFAULT_GAP, name?: string) {
    this.name = name ?? (gap ? `workingset:${tracePath}@${gap}` : `workingset:${tracePath}`)
    this.inputFiles = [tracePath]
    this.pages = pages.length
    this.pageSize = pageSize
    this.gap = gap
    this.runs = orderedRuns(pages, gap)
  }

  get runCount(): number {
    return this.runs.first.length
  }
  /** Pages installed from the start: the working set plus the gaps joined into its runs. */
  get plannedPages(): number {
    return this.runs.count.reduce((a, b) => a + b, 0)
  }

  onStart(ctx: PolicyContext, plan: RunList): void {
    if (ctx.pageSize !== this.pageSize) {
      throw new PolicyArgumentError(`${this.name}: the working set has ${this.pageSize}-byte pages, the snapshot ${ctx.pageSize}`)
    }
    // Pages outside the guest's regions are skipped by the session.
    for (let i = 0; i < this.runs.first.length; i++) plan.add(this.runs.first[i], this.runs.count[i], InstallCause.Prefetch)
  }

  onFault(): void {}
}

/** A trace holds the page count and size of the snapshot it was recorded on: one of another
 * shape describes another snapshot, whose page numbers mean nothing here. (Two snapshots of the
 * same shape cannot be told apart from the trace.) */
function checkRecordedOn(args: PolicyArgs, path: string, header: { pageSize: number; snapshotPages: number }, snapshot: SnapshotShape): void {
  if (header.pageSize !== snapshot.pageSize || header.snapshotPages !== snapshot.pageCount) {
    throw args.error(
      `${path} was recorded on a snapshot of ${header.snapshotPages} pages of ${header.pageSize} bytes; ` +
        `this one has ${snapshot.pageCount} pages of ${snapshot.pageSize}`,
    )
  }
}
