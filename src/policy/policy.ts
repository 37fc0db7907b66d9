// The FaultPolicy interface: what a policy sees (faults, quiet time) and how it answers
// (runs of snapshot pages to install). Policies never touch FFI or the snapshot file.
import { InstallCause } from '../trace/format.js'

/** Why a page was installed (defined with the trace format, which records it). */
export { InstallCause }

/** A reusable list of page runs a policy asks to install; preallocated, never shrinks. */
export class RunList {
  first: Int32Array
  count: Int32Array
  cause: Uint8Array
  length = 0

  constructor(capacity = 64) {
    this.first = new Int32Array(capacity)
    this.count = new Int32Array(capacity)
    this.cause = new Uint8Array(capacity)
  }

  clear(): void {
    this.length = 0
  }

  add(firstPage: number, pageCount: number, cause: InstallCause): void {
    if (pageCount <= 0) return
    if (this.length === this.first.length) this.grow()
    this.first[this.length] = firstPage
    this.count[this.length] = pageCount
    this.cause[this.length] = cause
    this.length++
  }

  private grow(): void {
    const n = this.first.length * 2
    const first = new Int32Array(n)
    first.set(this.first)
    this.first = first
    const count = new Int32Array(n)
    count.set(this.count)
    this.count = count
    const cause = new Uint8Array(n)
    cause.set(this.cause)
    this.cause = cause
  }
}

/** What a policy may ask of the session; page numbers are snapshot page indices. */
export interface PolicyContext {
  readonly pageSize: number
  /** Pages in the snapshot. */
  readonly pageCount: number
  /** Snapshot pages the guest's registered regions cover, as [first, count) ranges. */
  readonly ranges: ReadonlyArray<{ readonly firstPage: number; readonly pageCount: number }>
  /** True once a page is in the guest (installed, or discarded by it). */
  isResident(page: number): boolean
  /** Storage kind of a page: 0 zero, 1 lz4, 2 raw. */
  kindOf(page: number): number
}

/** One page fault as a policy sees it. Reused between calls: copy what you keep. */
export interface FaultInfo {
  page: number
  address: number
  write: boolean
  threadId: number
  /** Nanoseconds since the session started serving. */
  timeNs: number
}

export interface FaultPolicy {
  readonly name: string
  /** Files the policy read (a working-set trace...): outputs such as `serve --trace` must not
   * overwrite them. */
  readonly inputFiles?: readonly string[]
  /** Pages to install from the start (a working set, everything): installed once the guest
   * runs, in the plan's order, faults going first; or before it is acknowledged when
   * `startBeforeResume` is set (eager: decompress everything, then run). */
  onStart?(ctx: PolicyContext, plan: RunList): void
  /** onStart's pages go in before the guest is acknowledged. */
  readonly startBeforeResume?: boolean
  /** After the faulting page (already in `plan` as the first run): add more runs. */
  onFault(fault: FaultInfo, ctx: PolicyContext, plan: RunList): void
  /** While the guest is quiet: add up to `budgetPages` pages of background work. Return
   * false when there is nothing left to do. */
  onIdle?(ctx: PolicyContext, plan: RunList, budgetPages: number): boolean
}

/** The snapshot a policy will serve, as far as a policy may check its inputs against it. */
export interface SnapshotShape {
  readonly pageSize: number
  readonly pageCount: number
}

/** What a user policy module exports (default): builds its policy from the text after
 * `path:` in `--policy path:args` (undefined when there is none); `snapshot`, when given, is
 * the snapshot it will serve (a factory may refuse inputs made for another one). */
export type PolicyFactory = (args: string | undefined, snapshot?: SnapshotShape) => FaultPolicy | Promise<FaultPolicy>
