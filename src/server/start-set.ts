// A policy's start set (a working set, in the order the recorded guest first touched it),
// installed into a running guest batch by batch between its faults. A fault on a page of the
// set says where the guest is in that order: the batches go on from there, so the guest finds
// its next pages installed instead of faulting on each of them; the runs it passed over are
// installed at the end (a guest thread behind the others may still want them).
import { type InstallCause, RunList } from '../policy/policy.js'

export class StartSet {
  private readonly runs = new RunList(64)
  /** Run index of each snapshot page in the set (-1: not in it); built on the first fault. */
  private indexOfPage: Int32Array | undefined
  private at = 0
  /** Runs passed over by a jump, [from, to) pairs of run indices, installed after the rest. */
  private readonly skipped: number[] = []

  constructor(private readonly pageCount: number) {}

  get pending(): boolean {
    return this.at < this.runs.length || this.skipped.length > 0
  }

  add(first: number, count: number, cause: InstallCause): void {
    this.runs.add(first, count, cause)
    this.indexOfPage = undefined
  }

  /** The guest faulted on `page`: if it lies ahead in the set, the next batch starts there. */
  onFault(page: number): void {
    if (this.at >= this.runs.length) return
    const index = this.indexOfPage ?? this.buildIndex()
    const r = page < index.length ? index[page] : -1
    if (r <= this.at) return
    this.skipped.push(this.at, r)
    this.at = r
  }

  /** Moves up to `budget` pages of the set into `plan`; false when nothing is left. */
  nextBatch(plan: RunList, budget: number): boolean {
    const runs = this.runs
    while (budget > 0) {
      if (this.at >= runs.length) {
        // Back to the runs passed over, the latest jump's first.
        const skipped = this.skipped
        if (skipped.length === 0) break
        const from = skipped[skipped.length - 2],
          to = skipped[skipped.length - 1]
        const n = this.take(plan, from, budget)
        if (n < runs.count[from]) {
          runs.first[from] += n
          runs.count[from] -= n
        } else if (from + 1 < to) skipped[skipped.length - 2] = from + 1
        else skipped.length -= 2
        budget -= n
        continue
      }
      const n = this.take(plan, this.at, budget)
      if (n === runs.count[this.at]) this.at++
      else {
        runs.first[this.at] += n
        runs.count[this.at] -= n
      }
      budget -= n
    }
    return this.pending
  }

  private take(plan: RunList, r: number, budget: number): number {
    const runs = this.runs
    const n = Math.min(runs.count[r], budget)
    plan.add(runs.first[r], n, runs.cause[r] as InstallCause)
    return n
  }

  private buildIndex(): Int32Array {
    const index = new Int32Array(this.pageCount).fill(-1)
    const runs = this.runs
    for (let r = runs.length - 1; r >= 0; r--) {
      const end = Math.min(this.pageCount, runs.first[r] + runs.count[r])
      for (let p = Math.max(0, runs.first[r]); p < end; p++) index[p] = r
    }
    this.indexOfPage = index
    return index
  }
}
