// How fast trace simulation runs: a synthetic access order (the `mixed` workload of bench
// policies: interleaved sequential scans and random pages) over a large region, simulated
// under each policy several times; accesses a second, medians.
import { median } from '../util/format.js'
import { createPolicy } from '../policy/registry.js'
import type { CostModel } from './cost-model.js'
import { simulatePolicy, type AccessOrder, type SimSpace } from './simulate.js'
import { mixedWorkload } from './policies.js'

export interface SimulateSpeedOptions {
  pages: number
  policies: string[]
  rounds: number
  seed: number
  model: CostModel
}

export interface SimulateSpeedRow {
  policy: string
  accesses: number
  faults: number
  /** Median over rounds. */
  accessesPerSecond: number
  msPerRound: number[]
}

/** The synthetic access order and the space it runs in (the guest runs 1 µs between
 * accesses: recorded gaps of that plus `faultNs`, the fault's round trip the simulator takes
 * out; one thread, zero pages every 4th page, the rest LZ4 of 2 KiB). */
export function syntheticAccesses(pages: number, seed: number, faultNs: number): { access: AccessOrder; space: SimSpace } {
  const order = mixedWorkload(pages, seed)
  const n = order.length
  const access: AccessOrder = {
    source: `mixed workload over ${pages} pages (seed ${seed})`,
    length: n,
    page: Uint32Array.from(order),
    threadId: new Uint32Array(n).fill(1),
    timeNs: Float64Array.from({ length: n }, (_, i) => (i + 1) * 1000),
    write: new Uint8Array(n),
    gapNs: new Float64Array(n).fill(1000 + faultNs),
    threads: 1,
    skipped: 0,
  }
  const kinds = new Uint8Array(pages).fill(1)
  for (let p = 0; p < pages; p += 4) kinds[p] = 0
  const storedBytes = new Uint32Array(pages).fill(2048)
  for (let p = 0; p < pages; p += 4) storedBytes[p] = 0
  const space: SimSpace = {
    pageSize: 4096,
    pageCount: pages,
    regions: [{ address: 0x7f0000000000, firstPage: 0, pageCount: pages }],
    kinds,
    storedBytes,
    chunkPages: 64,
    pagesFrom: 'synthetic',
  }
  return { access, space }
}

export async function measureSimulateSpeed(o: SimulateSpeedOptions): Promise<SimulateSpeedRow[]> {
  const { access, space } = syntheticAccesses(o.pages, o.seed, o.model.faultNs)
  const rows: SimulateSpeedRow[] = []
  for (const spec of o.policies) {
    const msPerRound: number[] = []
    let faults = 0
    // One round more than asked: the first warms the JIT and is not counted.
    for (let round = 0; round <= o.rounds; round++) {
      const policy = await createPolicy(spec)
      const t0 = process.hrtime.bigint()
      const r = simulatePolicy(policy, access, space, { model: o.model, tier: 'warm', spec })
      const ms = Number(process.hrtime.bigint() - t0) / 1e6
      faults = r.faults
      if (round > 0) msPerRound.push(ms)
    }
    rows.push({ policy: spec, accesses: access.length, faults, accessesPerSecond: access.length / (median(msPerRound) / 1000), msPerRound })
  }
  return rows
}
