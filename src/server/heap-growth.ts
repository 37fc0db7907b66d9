// What a session's thread allocated while it served: the growth of its young generation over
// the whole session and from the WARM_FAULTS-th fault on, once V8 has optimised the read loop
// (the rehearsal warms the install path only). Meaningful when no scavenge ran meanwhile: run
// the server with --min-semi-space-size=128 --max-semi-space-size=128 --expose-gc, as
// `bench faults` does; otherwise a scavenge makes the figure small or negative.
import { getHeapSpaceStatistics } from 'node:v8'

export const WARM_FAULTS = 4096

export interface HeapGrowthSummary {
  /** Young-generation growth over the session, bytes. */
  bytes: number
  /** The same from the WARM_FAULTS-th fault on, and the faults since (0 for shorter sessions). */
  warmBytes: number
  warmFaults: number
}

export class HeapGrowth {
  private atStart = 0
  private atWarm = -1

  start(): void {
    // With --expose-gc, start from an empty young generation.
    ;(globalThis as { gc?: () => void }).gc?.()
    this.atStart = newSpaceUsed()
  }

  /** Called at the WARM_FAULTS-th fault. */
  markWarm(): void {
    this.atWarm = newSpaceUsed()
  }

  finish(faults: number): HeapGrowthSummary {
    const used = newSpaceUsed()
    const warm = this.atWarm >= 0 && faults > WARM_FAULTS
    return { bytes: used - this.atStart, warmBytes: warm ? used - this.atWarm : 0, warmFaults: warm ? faults - WARM_FAULTS : 0 }
  }
}

function newSpaceUsed(): number {
  for (const s of getHeapSpaceStatistics()) if (s.space_name === 'new_space') return s.space_used_size
  return 0
}
