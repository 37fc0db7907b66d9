// GuestInstaller: puts snapshot pages into one guest's memory through its uffd (UFFDIO_COPY of
// decoded pages, UFFDIO_ZEROPAGE for zero ones, UFFDIO_POISON for pages that fail
// verification). One of these serves a session and each forked child it fills. It splits runs
// where regions, page states and zero pages change, reads decoded pages from the decoded cache
// when it has them, and leaves EAGAIN (the guest's mappings changing) to its caller.
import type { DecodedCache } from '../cache/decoded-cache.js'
import { InstallCause } from '../policy/policy.js'
import { SnapshotCorruptError } from '../snapshot/format.js'
import type { PageSource } from '../snapshot/page-source.js'
import type { DeferredPageSource } from '../store/deferred-source.js'
import { TRACE_FLAG_BEFORE_RESUME } from '../trace/format.js'
import * as uffd from '../uffd/index.js'
import { BREAKDOWN_ENABLED } from './fault-breakdown.js'
import { BAD, DISCARDED, GONE, PRESENT, type GuestMemory, type MappedRegion } from './guest-memory.js'
import {
  K_BAD_SKIPPED,
  K_BYTES_DECODED,
  K_INSTALL_IOCTLS,
  K_PAGES,
  K_PAGES_FROM_CACHE,
  K_POISONED,
  K_ZERO_PAGES,
  type SessionMeters,
} from './session-meters.js'

/** Largest run installed with one UFFDIO_COPY (and decoded with one read). */
export const MAX_RUN_BYTES = 2 * 1024 * 1024

/** Slots of the `current` array an installer shares with its session: the fault being served
 * (its address, -1 when the run being installed holds none), when it was read (ms) and, with
 * the stage timers, when the read began. They travel the install path in these slots, not as
 * arguments: a double passed to a function V8 did not inline is boxed into a fresh heap number,
 * every fault. */
export const CUR_ADDRESS = 0,
  CUR_T0 = 1,
  CUR_READ_START = 2
export const CURRENT_SLOTS = 3

/** Receives one record per install; implemented by src/trace/. */
export interface TraceSink {
  /** `timeNs`: since the guest resumed (0 before it). `flags`: bit 0 write fault, bit 1
   * installed before the guest resumed (TRACE_FLAG_*). `count` 0 means the page was already
   * there. `latencyNs`: a fault's service time, or how long the run took to install. */
  record(timeNs: number, page: number, count: number, cause: InstallCause, flags: number, threadId: number, latencyNs: number): void
  close(): void
}

/** Where data pages that are not local yet (an object store) wait; see remote-waits.ts. */
export interface RunParking {
  readonly source: DeferredPageSource
  /** Pages [i, j) of `region` cannot be read now: ask for them and keep what waits on them.
   * Returns where the caller goes on. */
  park(region: MappedRegion, i: number, j: number, cause: InstallCause, holdsFault: boolean): number
}

export interface InstallerOptions {
  uffd: uffd.Userfaultfd
  memory: GuestMemory
  source: PageSource
  copyBuffer: uffd.CopySourceBuffer
  /** Decoded pages to copy from instead of decoding (PRESENT folios only). */
  cache?: DecodedCache
  /** UFFD_FEATURE_POISON was negotiated: a page that fails verification raises SIGBUS. */
  canPoison: boolean
  meters: SessionMeters
  current: Float64Array
  trace?: TraceSink
  log: (line: string) => void
}

/** readRun's results besides a count of good pages. */
const READ_FAILED = -1,
  READ_PARKED = -2

export class GuestInstaller {
  readonly pageSize: number
  readonly memory: GuestMemory
  private readonly fd: uffd.Userfaultfd
  private readonly source: PageSource
  private readonly copyBuffer: uffd.CopySourceBuffer
  private readonly cache: DecodedCache | undefined
  private readonly maxRunPages: number
  readonly canPoison: boolean
  private readonly meters: SessionMeters
  private readonly counters: Float64Array
  readonly current: Float64Array
  private readonly trace: TraceSink | undefined
  readonly log: (line: string) => void
  /** Set for an object-store source: data runs not local yet park there. */
  parking: RunParking | undefined
  /** Why serving must stop ('' while it goes on): the guest went away, or a page it waits on
   * can be neither served nor poisoned. */
  stopped = ''
  /** The stop is a page that could be neither served nor poisoned to a guest waiting on it. */
  unservable = false
  /** Faults to retry after the guest's pending events (EAGAIN), as guest addresses. */
  deferred: number[] = []
  /** Set by the run being installed when its fault waits elsewhere (parked). */
  faultParked = false
  /** Set when an install stopped short on EAGAIN (the guest's mappings are changing: read its
   * events, then go on); the caller clears it. */
  interrupted = false
  /** While installing a traced non-fault run: the record flags (TRACE_FLAG_*); -1 otherwise. */
  traceRunFlags = -1
  /** Time zero of trace records: when the guest was acknowledged (ms). */
  resumeMs = 0
  /** Prefetch and background installs skip the kernel's wake-up (FAULTLINE_DONTWAKE=0 turns it
   * off, to measure it: bench policies). */
  readonly dontWake = process.env.FAULTLINE_DONTWAKE !== '0'
  private lastError: unknown

  constructor(opts: InstallerOptions) {
    this.fd = opts.uffd
    this.memory = opts.memory
    this.pageSize = opts.memory.pageSize
    this.source = opts.source
    this.copyBuffer = opts.copyBuffer
    this.cache = opts.cache
    this.maxRunPages = Math.floor(opts.copyBuffer.buffer.length / this.pageSize)
    this.canPoison = opts.canPoison
    this.meters = opts.meters
    this.counters = opts.meters.counters
    this.current = opts.current
    this.trace = opts.trace
    this.log = opts.log
  }

  /** Installs the absent pages among snapshot pages [first, first+count); returns how many
   * were installed. `holdsFault`: the run holds the fault in `current`. */
  installRun(first: number, count: number, cause: InstallCause, holdsFault: boolean): number {
    let installed = 0
    const end = first + count
    let page = first
    while (page < end && this.stopped === '') {
      const region = this.memory.regionOfPage(page)
      if (region === undefined) {
        page++
        continue
      }
      const regionEnd = Math.min(end, region.firstPage + region.pages)
      installed += this.installInRegion(region, page - region.firstPage, regionEnd - page, cause, holdsFault)
      page = regionEnd
    }
    return installed
  }

  installInRegion(region: MappedRegion, from: number, count: number, cause: InstallCause, holdsFault: boolean): number {
    const state = region.state
    const huge = region.pagesPerGuestPage
    const source = this.source
    let i = from,
      end = from + count
    if (huge > 1) {
      // Huge pages are installed whole, with COPY (ZEROPAGE does not exist for hugetlbfs).
      i -= i % huge
      end = Math.min(region.pages, Math.ceil(end / huge) * huge)
    }
    let installed = 0
    while (i < end) {
      const s = state[i]
      if (s === PRESENT || s === GONE) {
        i++
        continue
      }
      if (s === BAD) {
        // Known bad: a fault on it is answered with poison; a prefetch leaves it.
        if (holdsFault && this.faultIn(region, i, 1)) this.refuse(region, i, huge, 'a page that failed verification')
        i++
        continue
      }
      const zero = huge === 1 && (s === DISCARDED || source.kindOf(region.firstPage + i) === 0)
      let j = i + 1
      const limit = Math.min(end, i + this.maxRunPages)
      while (j < limit) {
        const sj = state[j]
        if (sj === PRESENT || sj === GONE || sj === BAD) break
        if (huge === 1 && (sj === DISCARDED || source.kindOf(region.firstPage + j) === 0) !== zero) break
        j++
      }
      if (!zero && huge === 1 && this.cache !== undefined) {
        // A data run stays inside one folio of the cache: it is read from there or decoded whole.
        const folioEnd = ((((region.firstPage + i) >>> this.cache.folioShift) + 1) << this.cache.folioShift) - region.firstPage
        if (j > folioEnd) j = folioEnd
      }
      if (!zero && this.parking !== undefined) {
        const ready = this.parking.source.availablePages(region.firstPage + i, j - i)
        if (ready === 0 || (huge > 1 && ready < j - i)) {
          i = this.parking.park(region, i, j, cause, holdsFault)
          if (this.stopped !== '') return installed
          continue
        }
        j = i + ready
      }
      let n = j - i
      let badAt = -1
      if (!zero) {
        const t0 = BREAKDOWN_ENABLED ? this.meters.clock.nowMs() : 0
        const good = this.readRun(region, i, n)
        if (BREAKDOWN_ENABLED) {
          this.meters.breakdown.sourceReads++
          this.meters.breakdown.sourceReadNs += (this.meters.clock.nowMs() - t0) * 1e6
        }
        if (good === READ_PARKED) {
          // The chunk's cached copy went away (evicted, or failed its checksum): it is being
          // fetched again.
          i = this.parking!.park(region, i, j, cause, holdsFault)
          if (this.stopped !== '') return installed
          continue
        }
        if (good === READ_FAILED) {
          // The stored bytes could not be read at all (an I/O error): a waiting fault cannot be
          // served; a prefetch is dropped and its pages stay absent, to be read again if faulted.
          if (holdsFault && this.faultIn(region, i, n)) this.refuseFault(region, huge)
          i = j
          if (this.stopped !== '') return installed
          continue
        }
        if (good < n) {
          // Page i+good failed verification: the pages before it are good and go in; it does not.
          badAt = i + good
          n = good - (good % huge)
        }
      }
      if (n > 0) {
        const done = this.installPages(region, i, n, zero, cause, huge)
        if (done < 0) return installed
        installed += done
        if (done < n) {
          // EAGAIN: the guest's address space is changing. Only a waiting fault must be
          // retried; prefetches are simply dropped.
          this.interrupted = true
          const dst = region.start + i * this.pageSize
          const faultAddress = this.current[CUR_ADDRESS]
          if (holdsFault && faultAddress >= dst + done * this.pageSize && faultAddress < dst + n * this.pageSize) this.deferred.push(faultAddress)
          return installed
        }
      }
      if (badAt >= 0) {
        const unit = badAt - (badAt % huge)
        this.log(`cannot serve page ${region.firstPage + badAt}: ${describe(this.lastError)}`)
        if (holdsFault && this.faultIn(region, unit, huge)) {
          this.refuse(region, unit, huge, describe(this.lastError))
        } else {
          state.fill(BAD, unit, unit + huge)
          this.counters[K_BAD_SKIPPED] += huge
        }
        if (this.stopped !== '') return installed
        i = unit + huge
        continue
      }
      i = j
    }
    return installed
  }

  /** One ioctl's worth: COPY from the copy buffer or ZEROPAGE. Returns pages done (fewer on
   * EAGAIN), or -1 when the guest is gone. */
  private installPages(region: MappedRegion, i: number, n: number, zero: boolean, cause: InstallCause, huge: number): number {
    const ps = this.pageSize
    const bytes = n * ps
    const target = this.fd.target
    target[uffd.TARGET_DST] = region.start + i * ps
    const installStart = this.traceRunFlags >= 0 ? this.meters.clock.nowMs() : 0
    const stageStart = BREAKDOWN_ENABLED ? this.meters.clock.nowMs() : 0
    let done: number
    try {
      if (zero) {
        done = this.fd.zeropageAtTarget(bytes, ps, this.dontWake && cause !== InstallCause.Fault)
        this.counters[K_ZERO_PAGES] += done / ps
        if (BREAKDOWN_ENABLED) {
          this.meters.breakdown.zeropages++
          this.meters.breakdown.zeropageNs += (this.meters.clock.nowMs() - stageStart) * 1e6
        }
      } else {
        target[uffd.TARGET_SRC] = this.copyBuffer.address
        done = this.fd.copyAtTarget(bytes, ps * huge, this.dontWake && cause !== InstallCause.Fault)
        this.counters[K_BYTES_DECODED] += bytes
        if (BREAKDOWN_ENABLED) {
          this.meters.breakdown.copies++
          this.meters.breakdown.copyNs += (this.meters.clock.nowMs() - stageStart) * 1e6
        }
      }
    } catch (err) {
      if (err instanceof uffd.GuestGoneError) {
        this.stopped = 'guest exited'
        return -1
      }
      throw err
    }
    this.counters[K_INSTALL_IOCTLS]++
    const donePages = done / ps
    region.state.fill(PRESENT, i, i + donePages)
    this.counters[K_PAGES + cause] += donePages
    if (this.traceRunFlags >= 0 && donePages > 0) this.recordInstall(region.firstPage + i, donePages, cause, installStart)
    return donePages
  }

  /** Decodes pages [i, i+n) of the region into the copy buffer (or reads them from the cache).
   * Returns n, or how many from i are good when a later one failed verification (lastError),
   * READ_FAILED when the run could not be read, READ_PARKED when an object store's local copy
   * went away. */
  private readRun(region: MappedRegion, i: number, n: number): number {
    const first = region.firstPage + i
    const cache = this.cache
    if (cache !== undefined && region.pagesPerGuestPage === 1 && cache.readPresent(first, n, this.copyBuffer.address)) {
      this.counters[K_PAGES_FROM_CACHE] += n
      return n
    }
    try {
      if (this.parking !== undefined) return this.parking.source.tryReadPages(first, n, this.copyBuffer.buffer, 0) ? n : READ_PARKED
      this.source.readPages(first, n, this.copyBuffer.buffer, 0)
      return n
    } catch (err) {
      this.lastError = err
      if (err instanceof SnapshotCorruptError && err.pageIndex >= first && err.pageIndex < first + n) return err.pageIndex - first
      this.log(`cannot read pages ${first}..${first + n - 1}: ${describe(err)}`)
      return READ_FAILED
    }
  }

  /** A fault at `address` outside the guest's snapshot regions: a range that grew (mremap) or
   * that the guest registered itself. Nothing of the snapshot belongs there and anonymous
   * memory reads as zeros; a range gone meanwhile (ENOENT) is only woken, so the thread retries
   * against its current mappings. */
  answerOutside(address: number): void {
    const ps = this.pageSize
    const page = address - (address % ps)
    let done = ps
    try {
      done = this.fd.zeropage(page, ps, ps)
    } catch (err) {
      if (err instanceof uffd.GuestGoneError) {
        this.stopped = 'guest exited'
        return
      }
      // Huge-page memory has no UFFDIO_ZEROPAGE: leave it to the wake-up.
    }
    if (done < ps)
      this.deferred.push(address) // EAGAIN: retried after the guest's events
    else this.fd.wake(page, ps)
  }

  /** A fault at `address` on a page already installed: a second thread's fault on it (the
   * install woke that thread already), or a page the guest dropped without us being told (a
   * uffd without EVENT_REMOVE), which must read as zeros now. ZEROPAGE answers both: where the
   * page is, EEXIST wakes the thread; where it is not, it installs zeros. `wakeOnly` (huge
   * pages, a cache-mapped guest's poisoned page): only the wake. */
  answerPresent(address: number, wakeOnly: boolean): void {
    const ps = this.pageSize
    const page = address - (address % ps)
    if (wakeOnly) {
      this.fd.wake(page, ps)
      return
    }
    let done: number
    try {
      done = this.fd.zeropage(page, ps, ps)
    } catch (err) {
      if (err instanceof uffd.GuestGoneError) {
        this.stopped = 'guest exited'
        return
      }
      throw err
    }
    if (done < ps) this.deferred.push(address)
  }

  /** Wakes the threads waiting on the page at `address` (its data is there by other means). */
  wake(address: number): void {
    this.fd.wake(address - (address % this.pageSize), this.pageSize)
  }

  /** The fault in `current` lies in pages [i, i+n) of the region. */
  private faultIn(region: MappedRegion, i: number, n: number): boolean {
    const a = this.current[CUR_ADDRESS]
    const dst = region.start + i * this.pageSize
    return a >= dst && a < dst + n * this.pageSize
  }

  /** The waiting fault's page (its guest page) cannot be served. */
  private refuseFault(region: MappedRegion, huge: number): void {
    let i = Math.floor((this.current[CUR_ADDRESS] - region.start) / this.pageSize)
    i -= i % huge
    this.refuse(region, i, huge, describe(this.lastError))
  }

  /** A guest waits on pages [i, i+unit) and they cannot be served: poisoned (SIGBUS there,
   * never wrong data) where the guest's uffd allows it, else the session fails closed. */
  refuse(region: MappedRegion, i: number, unit: number, why: string): void {
    if (this.canPoison && this.poison(region, i, unit)) return
    this.stopped = `snapshot error: ${why}`
    this.unservable = true
  }

  /** UFFDIO_POISON of pages [i, i+unit); false when it could not be done. */
  poison(region: MappedRegion, i: number, unit: number): boolean {
    const ps = this.pageSize
    try {
      this.fd.poison(region.start + i * ps, unit * ps, unit * ps)
    } catch (err) {
      if (err instanceof uffd.GuestGoneError) {
        this.stopped = 'guest exited'
        return true
      }
      this.log(`cannot poison pages ${region.firstPage + i}..${region.firstPage + i + unit - 1}: ${describe(err)}`)
      return false
    }
    region.state.fill(GONE, i, i + unit)
    this.counters[K_POISONED] += unit
    return true
  }

  /** Traces one install of a prefetch/background/onStart run: exactly the pages one ioctl
   * installed, and how long decoding and installing them took. */
  private recordInstall(page: number, count: number, cause: InstallCause, installStart: number): void {
    const now = this.meters.clock.nowMs()
    const flags = this.traceRunFlags
    const timeNs = (flags & TRACE_FLAG_BEFORE_RESUME) !== 0 ? 0 : Math.round((now - this.resumeMs) * 1e6)
    this.trace!.record(timeNs, page, count, cause, flags, 0, Math.round((now - installStart) * 1e6))
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
