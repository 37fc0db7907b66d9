// How a cache-mapped guest's fault is answered. Its folio in the cache: the guest only has to
// retry (a wake). All zero in the snapshot: zero pages go into its private mapping, the whole
// folio's worth in one ZEROPAGE. Otherwise the page goes into its private mapping now, decoded
// here, and its folio is asked of the fill workers, so the guest's next touches there are hits
// (with 4 KiB folios the page is filled into the cache here instead: the same work, shared).
import { PRESENT, UNSERVABLE, ZERO } from '../cache/decoded-cache.js'
import { InstallCause } from '../policy/policy.js'
import type { PageSource } from '../snapshot/page-source.js'
import type * as uffd from '../uffd/index.js'
import type { FillRequests } from './fill-requests.js'
import type { MappedRegion } from './guest-memory.js'
import type { GuestView } from './guest-views.js'
import { CUR_ADDRESS } from './installer.js'
import { K_CACHE_PRIVATE, K_CACHE_WAKES } from './session-meters.js'

export class CacheFaults {
  constructor(
    private readonly fills: FillRequests,
    private readonly source: PageSource,
    private readonly staging: uffd.CopySourceBuffer,
    private readonly counters: Float64Array,
    /** The session may fill a 4 KiB folio itself (a local source: it never waits). */
    private readonly fillInPlace: boolean,
  ) {}

  /** Answers the fault in the installer's `current` on snapshot page `page` (guest page
   * `guestPage` of `region`); returns the pages installed into the guest's own memory. */
  answer(view: GuestView, region: MappedRegion, guestPage: number, page: number): number {
    const cache = this.fills.cache
    const installer = view.installer
    const folio = page >>> cache.folioShift
    let s = cache.states.get(folio)
    if (s !== PRESENT && s !== ZERO && s !== UNSERVABLE && this.fillInPlace && cache.folioPages === 1) {
      if (cache.fill(folio, this.source, this.staging.buffer) === 'filled') s = PRESENT
    }
    if (s === PRESENT) {
      cache.touch(folio)
      installer.wake(installer.current[CUR_ADDRESS])
      this.counters[K_CACHE_WAKES]++
      return 0
    }
    if (s === ZERO) {
      const first = Math.max(0, (folio << cache.folioShift) - region.firstPage)
      const end = Math.min(region.pages, ((folio + 1) << cache.folioShift) - region.firstPage)
      return installer.installInRegion(region, first, end - first, InstallCause.Fault, true)
    }
    if (s !== UNSERVABLE) this.fills.request(page, 1, InstallCause.Fault)
    const installed = installer.installInRegion(region, guestPage, 1, InstallCause.Fault, true)
    this.counters[K_CACHE_PRIVATE] += installed
    return installed
  }
}
