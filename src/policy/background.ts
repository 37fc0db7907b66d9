// background[:ORDER]: on demand, plus filling every remaining page while the guest is quiet, as
// post-copy migration does, until all of its memory is resident. ORDER is `address` (default)
// or a trace file: that trace's working set first, in its order of first use, then address order.
import { describeError } from '../errors.js'
import { readTrace, workingSetPages } from '../trace/reader.js'
import type { PolicyArgs } from './args.js'
import { InstallCause, type FaultPolicy, type PolicyContext, type RunList } from './policy.js'

export class BackgroundPolicy implements FaultPolicy {
  static fromArgs(args: PolicyArgs): BackgroundPolicy {
    const order = args.optional("an ORDER ('address' or a trace file)")
    if (order === undefined || order === 'address') return new BackgroundPolicy('background', new Uint32Array(0))
    let pages: number[]
    try {
      pages = workingSetPages(readTrace(order))
    } catch (err) {
      throw args.error(`ORDER must be 'address' or a trace file: ${describeError(err)}`, err)
    }
    return new BackgroundPolicy(`background:${order}`, Uint32Array.from(pages), [order])
  }

  readonly name: string
  /** Files it read: its ORDER trace (what `serve --trace` must not overwrite). */
  readonly inputFiles: readonly string[]
  private readonly order: Uint32Array
  private orderAt = 0
  /** Next snapshot page of the address-order sweep. */
  private cursor = 0

  constructor(name: string, order: Uint32Array, inputFiles: readonly string[] = []) {
    this.inputFiles = inputFiles
    this.name = name
    this.order = order
  }

  onFault(): void {}

  onIdle(ctx: PolicyContext, plan: RunList, budgetPages: number): boolean {
    let left = budgetPages
    const order = this.order
    // Trace order first: consecutive trace entries that are adjacent pages make one run.
    while (left > 0 && this.orderAt < order.length) {
      const p = order[this.orderAt++]
      if (ctx.isResident(p)) continue
      let n = 1
      while (n < left && this.orderAt < order.length && order[this.orderAt] === p + n && !ctx.isResident(p + n)) {
        n++
        this.orderAt++
      }
      plan.add(p, n, InstallCause.Background)
      left -= n
    }
    if (left === 0) return true
    const ranges = [...ctx.ranges].sort((a, b) => a.firstPage - b.firstPage)
    for (const r of ranges) {
      const end = r.firstPage + r.pageCount
      let p = Math.max(this.cursor, r.firstPage)
      while (p < end && left > 0) {
        if (ctx.isResident(p)) {
          p++
          continue
        }
        let n = 1
        while (p + n < end && n < left && !ctx.isResident(p + n)) n++
        plan.add(p, n, InstallCause.Background)
        left -= n
        p += n
      }
      if (p > this.cursor) this.cursor = p
      if (left === 0) return true
    }
    return false
  }
}
