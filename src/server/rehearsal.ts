// A warm worker rehearses the fault path before it may accept a guest: it registers a scratch
// mapping of its own with a uffd of its own and serves simulated faults on it from the real
// snapshot (read, decode, verify, UFFDIO_COPY/ZEROPAGE). The JIT then compiles the loop before
// a guest waits on it, not during its first thousand faults.
import { OnDemandPolicy } from '../policy/ondemand.js'
import type { PageSource } from '../snapshot/page-source.js'
import { isDeferredSource } from '../store/deferred-source.js'
import * as uffd from '../uffd/index.js'
import { ABSENT } from './guest-memory.js'
import { Session } from './session.js'
import { K_PAGES } from './session-meters.js'

/** Simulated faults: enough calls for V8 to optimise the loop's functions. */
export const REHEARSAL_FAULTS = 4096
/** Distinct snapshot pages the rehearsal installs (a scratch mapping of this many pages), so
 * a cold page cache costs it at most their stored bytes once (~1 MiB). */
const REHEARSAL_PAGES = 512
/** Odd, so stepping by it visits every page of a power-of-two window, in a scattered order. */
const STRIDE = 977

/** `scratchAddress`: where the scratch mapping was (unmapped now). */
export interface RehearsalResult {
  faults: number
  pages: number
  ms: number
  scratchAddress: number
}

/** Rehearses on snapshot pages [0, REHEARSAL_PAGES); nothing for an object-store source (a
 * rehearsal would fetch chunks) or an empty snapshot. The scratch mapping is gone after.
 * `onRound` sees the scratch memory after each round whose every page was installed. */
export function rehearseFaultPath(source: PageSource, onRound?: (scratch: Buffer, pages: number) => void): RehearsalResult {
  const pages = Math.min(REHEARSAL_PAGES, source.pageCount)
  if (pages === 0 || isDeferredSource(source)) return { faults: 0, pages: 0, ms: 0, scratchAddress: 0 }
  const t0 = performance.now()
  const ps = source.pageSize
  const fd = uffd.Userfaultfd.create()
  const scratch = uffd.mapAnonymous(pages * ps)
  let faults = 0
  try {
    fd.api(0)
    fd.register(scratch.address, scratch.length)
    const session = new Session({
      uffd: fd,
      connectionFd: -1,
      stopFd: -1,
      source,
      policy: new OnDemandPolicy(),
      regions: [{ start: scratch.address, lengthBytes: scratch.length, snapshotOffset: 0, pageSize: ps }],
      canPoison: false,
      log: () => {},
    })
    const rounds = Math.ceil(REHEARSAL_FAULTS / pages)
    for (let round = 0; round < rounds; round++) {
      // Each round starts from absent pages again, in the kernel and in the session's map.
      if (round > 0) {
        uffd.adviseDontNeed(scratch.address, scratch.length)
        session.memory.markRange(scratch.address, scratch.address + scratch.length, ABSENT)
      }
      const installedBefore = session.meters.counters[K_PAGES]
      for (let k = 0; k < pages && faults < REHEARSAL_FAULTS; k++, faults++) {
        session.rehearseFault(scratch.address + ((k * STRIDE) % pages) * ps)
      }
      // Tests look at what was installed; reading a page not installed would wait forever.
      if (onRound !== undefined && session.meters.counters[K_PAGES] - installedBefore === pages) onRound(scratch.bytes, pages)
    }
  } finally {
    uffd.unmap(scratch)
    fd.close()
  }
  return { faults, pages, ms: performance.now() - t0, scratchAddress: scratch.address }
}
