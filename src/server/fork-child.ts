// Serving an anonymous guest's forked child (UFFD_EVENT_FORK): the child's memory is a copy of
// the parent's at the fork and its uffd exists only in the server, so faultline fills every
// page the child does not have yet (with the session's installer code) and then lets go of
// that uffd: the child never waits on, nor depends on, the server again, and never reads a
// zero page where the snapshot has data. (A cache-mapped child shares the decoded cache and is
// served by its parent's session instead: see session.ts.)
import type { DecodedCache } from '../cache/decoded-cache.js'
import { InstallCause } from '../policy/policy.js'
import type { PageSource } from '../snapshot/page-source.js'
import { isDeferredSource, type DeferredPageSource } from '../store/deferred-source.js'
import * as uffd from '../uffd/index.js'
import { ABSENT, BAD, DISCARDED, type GuestMemory, type MappedRegion } from './guest-memory.js'
import { GuestInstaller, type RunParking } from './installer.js'
import { K_PAGES, K_POISONED, K_ZERO_PAGES, type SessionMeters } from './session-meters.js'

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
  meters: SessionMeters
  current: Float64Array
  cache?: DecodedCache
  /** A page can be neither served nor poisoned: called before the child's uffd is released. */
  failClosed?: (why: string) => void
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

/** Fills the child behind `childFd` (this process's copy of its uffd, closed on return) so
 * its memory reads exactly as the parent's would: snapshot pages where the parent's are
 * absent, zeros where it discarded them. `memory` is the parent's layout at the fork (a clone
 * the child's own remove/unmap/remap events update while it runs). */
export function serveForkedChild(childFd: number, memory: GuestMemory, opts: ForkServeOptions): ForkServeResult {
  const result: ForkServeResult = { children: 0, pagesCopied: 0, zeroPages: 0, poisonedPages: 0, exited: false }
  const queue: Array<{ fd: number; memory: GuestMemory }> = [{ fd: childFd, memory }]
  const c = opts.meters.counters
  const before = [c[K_PAGES] + c[K_PAGES + 1] + c[K_PAGES + 2], c[K_ZERO_PAGES], c[K_POISONED]]
  while (queue.length > 0) {
    const next = queue.shift()!
    result.children++
    new ChildFiller(next.fd, next.memory, opts, result, queue).run()
  }
  result.zeroPages = c[K_ZERO_PAGES] - before[1]
  result.pagesCopied = c[K_PAGES] + c[K_PAGES + 1] + c[K_PAGES + 2] - before[0] - result.zeroPages
  result.poisonedPages = c[K_POISONED] - before[2]
  return result
}

class ChildFiller {
  private readonly fd: uffd.Userfaultfd
  private readonly messages = new uffd.UffdMessages(64)
  private readonly installer: GuestInstaller

  constructor(
    childFd: number,
    private readonly memory: GuestMemory,
    private readonly opts: ForkServeOptions,
    private readonly result: ForkServeResult,
    private readonly queue: Array<{ fd: number; memory: GuestMemory }>,
  ) {
    this.fd = new uffd.Userfaultfd(childFd)
    this.installer = new GuestInstaller({
      uffd: this.fd,
      memory,
      source: opts.source,
      copyBuffer: opts.copyBuffer,
      cache: opts.cache,
      canPoison: opts.canPoison,
      meters: opts.meters,
      current: opts.current,
      log: line => opts.log(`forked child: ${line}`),
    })
    if (isDeferredSource(opts.source)) this.installer.parking = new WaitForChunks(opts.source)
  }

  run(): void {
    try {
      // A pass stops early when the child's address space changed under it (EAGAIN): its
      // events are applied, then the regions are walked again; installed pages are skipped.
      while (!this.fillOnce()) this.drainEvents()
      this.refuseUnserved()
      if (this.result.error !== undefined && !this.opts.canPoison) this.opts.failClosed?.(this.result.error)
    } catch (err) {
      if (!(err instanceof uffd.GuestGoneError)) throw err
      this.result.exited = true
    } finally {
      // Releasing the last reference unregisters the child's memory and wakes its waiting
      // threads: every page of it is now installed, poisoned, or was never the snapshot's.
      this.fd.close()
    }
    if (isDeferredSource(this.opts.source)) uffd.signalEventFd(this.opts.source.readyFd) // the session re-checks its own waits
  }

  /** One pass over every region; false when interrupted by a change of the child's mappings. */
  private fillOnce(): boolean {
    const installer = this.installer
    for (const region of [...this.memory.regions]) {
      if (!this.memory.regions.includes(region)) return false
      installer.interrupted = false
      installer.installInRegion(region, 0, region.pages, InstallCause.Background, false)
      if (installer.stopped === 'guest exited') {
        this.result.exited = true
        return true
      }
      if (installer.interrupted) return false
    }
    return true
  }

  /** Pages left out of the fill (they failed verification, or could not be read or fetched)
   * would read zeros once the child's uffd is released: poisoned where the kernel can (SIGBUS
   * if the child touches them), otherwise the session fails closed. */
  private refuseUnserved(): void {
    for (const region of this.memory.regions) {
      const state = region.state
      const unit = region.pagesPerGuestPage
      for (let i = 0; i < region.pages; i += unit) {
        const s = state[i]
        if (s !== ABSENT && s !== BAD && s !== DISCARDED) continue
        this.result.error ??= `snapshot error: page ${region.firstPage + i} could not be served to a forked child`
        if (this.opts.canPoison) this.installer.poison(region, i, unit)
      }
    }
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

/** Object-store data for a child: the fill waits (blocking this session: the fork is served
 * before anything else) until the run's chunk is local, or gives up on it. */
class WaitForChunks implements RunParking {
  private readonly poll = new uffd.PollSet(1)

  constructor(readonly source: DeferredPageSource) {
    this.poll.set(0, source.readyFd, uffd.POLLIN)
  }

  park(region: MappedRegion, i: number, j: number, cause: InstallCause): number {
    const remote = this.source
    const first = region.firstPage + i
    const end = region.pagesPerGuestPage > 1 ? j : Math.min(j, i + remote.chunkPages - (first % remote.chunkPages))
    const n = end - i
    const deadline = Date.now() + REMOTE_WAIT_MS
    for (;;) {
      if (remote.failure(first, n) !== undefined) return end // left absent: refused after the pass
      if (remote.availablePages(first, n) >= n) return i // the installer reads it now
      remote.request(first, n, cause)
      const left = deadline - Date.now()
      if (left <= 0) return end
      this.poll.wait(Math.min(left, 1000))
      remote.drainReady()
    }
  }
}
