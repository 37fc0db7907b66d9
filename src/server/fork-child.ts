// Serving a guest's forked child (UFFD_EVENT_FORK): the child's memory is a copy of the
// parent's at the fork and its uffd exists only in the server, so faultline fills every page
// the child does not have yet and then lets go of that uffd: the child never waits on, nor
// depends on, the server again, and never reads a zero page where the snapshot has data.
import { InstallCause } from '../policy/policy.js'
import type { PageSource } from '../snapshot/page-source.js'
import { isDeferredSource, type DeferredPageSource } from '../store/deferred-source.js'
import { FaultlineError } from '../errors.js'
import * as uffd from '../uffd/index.js'
import { DISCARDED, GONE, PRESENT, type GuestMemory, type MappedRegion } from './guest-memory.js'

/** How long one run may wait for its chunk from an object store before the child's pages
 * there are poisoned instead. */
const REMOTE_WAIT_MS = 60_000

export interface ForkServeOptions {
  source: PageSource
  /** Page-aligned scratch memory for UFFDIO_COPY (the session's own; it is idle meanwhile). */
  copyBuffer: uffd.CopySourceBuffer
  /** Poison pages that cannot be served (UFFD_FEATURE_POISON was negotiated). */
  canPoison: boolean
  log: (line: string) => void
}

export interface ForkServeResult {
  /** Children served: this one and any it forked while being filled. */
  children: number
  pagesCopied: number
  zeroPages: number
  /** Pages that could not be read (corrupt snapshot data, unreachable store): poisoned, so
   * the child takes SIGBUS there instead of reading zeros. */
  poisonedPages: number
  /** The child exited before it was filled. */
  exited: boolean
  /** Set when a page could not be served: the session fails closed on it. */
  error?: string
}

class ForkReadError extends FaultlineError {
  override readonly code: string = 'FL_ERR_FORK_READ'
}

/** Fills the child behind `childFd` (this process's copy of its uffd, closed on return) so
 * its memory reads exactly as the parent's would: snapshot pages where the parent's are
 * absent, zeros where it discarded them. `memory` is the parent's layout at the fork (a clone
 * the child's own remove/unmap/remap events update while it runs). */
export function serveForkedChild(childFd: number, memory: GuestMemory, opts: ForkServeOptions): ForkServeResult {
  const result: ForkServeResult = { children: 0, pagesCopied: 0, zeroPages: 0, poisonedPages: 0, exited: false }
  const queue: Array<{ fd: number; memory: GuestMemory }> = [{ fd: childFd, memory }]
  while (queue.length > 0) {
    const next = queue.shift()!
    result.children++
    new ChildFiller(next.fd, next.memory, opts, result, queue).run()
  }
  return result
}

class ChildFiller {
  private readonly fd: uffd.Userfaultfd
  private readonly messages = new uffd.UffdMessages(64)
  private readonly pageSize: number
  private readonly maxRunPages: number
  private readonly remote: DeferredPageSource | undefined

  constructor(
    childFd: number,
    private readonly memory: GuestMemory,
    private readonly opts: ForkServeOptions,
    private readonly result: ForkServeResult,
    private readonly queue: Array<{ fd: number; memory: GuestMemory }>,
  ) {
    this.fd = new uffd.Userfaultfd(childFd)
    this.pageSize = opts.source.pageSize
    this.maxRunPages = opts.copyBuffer.buffer.length / this.pageSize
    this.remote = isDeferredSource(opts.source) ? opts.source : undefined
  }

  run(): void {
    try {
      // A pass stops early when the child's address space changed under it (EAGAIN): its
      // events are applied, then the regions are walked again; installed pages are skipped.
      while (!this.fillOnce()) this.drainEvents()
    } catch (err) {
      if (!(err instanceof uffd.GuestGoneError)) throw err
      this.result.exited = true
    } finally {
      // Releasing the last reference unregisters the child's memory and wakes its waiting
      // threads: every page of it is now installed, poisoned, or was never the snapshot's.
      this.fd.close()
    }
    if (this.remote !== undefined) uffd.signalEventFd(this.remote.readyFd) // the session re-checks its own waits
  }

  /** One pass over every region; false when interrupted by a change of the child's mappings. */
  private fillOnce(): boolean {
    for (const region of [...this.memory.regions]) {
      if (!this.memory.regions.includes(region)) return false
      if (!this.fillRegion(region)) return false
    }
    return true
  }

  private fillRegion(region: MappedRegion): boolean {
    const state = region.state
    const unit = region.pagesPerGuestPage
    const ps = this.pageSize
    let i = 0
    while (i < region.pages) {
      const s = state[i]
      if (s === PRESENT || s === GONE) { i += unit; continue }
      const zero = s === DISCARDED || (unit === 1 && this.opts.source.kindOf(region.firstPage + i) === 0)
      let j = i + unit
      let limit = Math.min(region.pages, i + Math.max(unit, this.maxRunPages - (this.maxRunPages % unit)))
      // A run from an object store stays inside one chunk, so it waits for one fetch.
      if (this.remote !== undefined && !zero && unit === 1) {
        const chunk = this.remote.chunkPages
        limit = Math.min(limit, i + chunk - ((region.firstPage + i) % chunk))
      }
      while (j < limit) {
        const sj = state[j]
        if (sj === PRESENT || sj === GONE) break
        if ((sj === DISCARDED || (unit === 1 && this.opts.source.kindOf(region.firstPage + j) === 0)) !== zero) break
        j += unit
      }
      const n = j - i
      const dst = region.start + i * ps
      let done: number
      if (zero && unit === 1) {
        done = this.fd.zeropage(dst, n * ps, ps)
        if (done > 0) this.result.zeroPages += done / ps
      } else {
        if (!this.read(region, i, n, zero)) {
          this.poison(region, i, n)
          i = j
          continue
        }
        done = this.fd.copy(dst, this.opts.copyBuffer.address, n * ps, unit * ps)
        if (done > 0) this.result.pagesCopied += done / ps
      }
      state.fill(PRESENT, i, i + done / ps)
      if (done < n * ps) return false
      i = j
    }
    return true
  }

  /** Decodes pages [i, i+n) of the region into the copy buffer (zeros for a discarded huge
   * page, which has no UFFDIO_ZEROPAGE); false when they cannot be had. */
  private read(region: MappedRegion, i: number, n: number, zero: boolean): boolean {
    const into = this.opts.copyBuffer.buffer
    if (zero) { into.fill(0, 0, n * this.pageSize); return true }
    const first = region.firstPage + i
    try {
      if (this.remote === undefined) this.opts.source.readPages(first, n, into, 0)
      else this.readRemote(first, n, into)
      return true
    } catch (err) {
      const message = (err as Error).message
      this.opts.log(`forked child: cannot serve pages ${first}..${first + n - 1}: ${message}`)
      this.result.error ??= `snapshot error: ${message}`
      return false
    }
  }

  /** Waits (blocking this session: the fork is served before anything else) for the run's
   * chunk to arrive from the object store. */
  private readRemote(first: number, n: number, into: Buffer): void {
    const remote = this.remote!
    const deadline = Date.now() + REMOTE_WAIT_MS
    const poll = new uffd.PollSet(1)
    poll.set(0, remote.readyFd, uffd.POLLIN)
    for (;;) {
      const failure = remote.failure(first, n)
      if (failure !== undefined) throw new ForkReadError(failure)
      if (remote.availablePages(first, n) >= n && remote.tryReadPages(first, n, into, 0)) return
      remote.request(first, n, InstallCause.Background)
      const left = deadline - Date.now()
      if (left <= 0) throw new ForkReadError(`pages ${first}..${first + n - 1} did not arrive from the object store within ${REMOTE_WAIT_MS} ms`)
      poll.wait(Math.min(left, 1000))
      remote.drainReady()
    }
  }

  /** Pages that cannot be served: poisoned when the kernel can (SIGBUS in the child if it
   * touches them); otherwise the child would read zeros there once its uffd is released,
   * so the error is reported and the session fails closed. */
  private poison(region: MappedRegion, i: number, n: number): void {
    const ps = this.pageSize
    if (this.opts.canPoison) {
      const unit = region.pagesPerGuestPage * ps
      const done = this.fd.poison(region.start + i * ps, n * ps, unit)
      this.result.poisonedPages += done / ps
    }
    region.state.fill(GONE, i, i + n)
  }

  /** Applies the child's pending remove/unmap/remap events to its layout and queues the
   * uffds of children it forked. Its page faults need no answer: filling covers them. */
  private drainEvents(): void {
    const msgs = this.messages
    for (;;) {
      const n = this.fd.readMessages(msgs)
      for (let k = 0; k < n; k++) {
        const event = msgs.event(k)
        if (event === uffd.UFFD_EVENT_REMOVE) this.memory.markRange(msgs.rangeStart(k), msgs.rangeEnd(k), DISCARDED)
        else if (event === uffd.UFFD_EVENT_UNMAP) this.memory.unmap(msgs.rangeStart(k), msgs.rangeEnd(k))
        else if (event === uffd.UFFD_EVENT_REMAP) this.memory.remap(msgs.remapFrom(k), msgs.remapTo(k), msgs.remapLength(k))
        else if (event === uffd.UFFD_EVENT_FORK) this.queue.push({ fd: msgs.forkFd(k), memory: this.memory.clone() })
      }
      if (n < msgs.capacity) return
    }
  }
}
