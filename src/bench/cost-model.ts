// The cost model of trace simulation: what one fault, one install ioctl, one page copied or
// zeroed, one page decoded and one stored byte read cost on this machine, measured by
// `faultline bench costs` (src/bench/costs.ts) and kept as JSON with where each figure came from.
import { existsSync, readFileSync } from 'node:fs'
import { dirname, relative } from 'node:path'
import { FaultlineError, fileError } from '../errors.js'
import { repoPath } from '../util/repo.js'

/** A cost model file that is missing or not a model. */
export class CostModelError extends FaultlineError {
  override readonly code: string = 'FL_ERR_COST_MODEL'
}

/** Where the stored bytes come from: the host's page cache, the local disk, an object store. */
export type StorageTier = 'warm' | 'cold' | 'remote'
export const STORAGE_TIERS: readonly StorageTier[] = ['warm', 'cold', 'remote']

export interface CostModel {
  /** What a fault costs the guest besides installing its plan: the kernel's fault path, the
   * uffd message, the session's bookkeeping and the wake-up, ns. */
  faultNs: number
  /** Fixed cost of one UFFDIO_COPY (the wake-up of a waiting thread included), ns. */
  installNs: number
  /** Fixed cost of one UFFDIO_ZEROPAGE, ns. */
  zeroInstallNs: number
  /** Per page UFFDIO_COPY copies, ns. */
  copyPageNs: number
  /** Per page UFFDIO_ZEROPAGE maps, ns. */
  zeroPageNs: number
  /** Fixed cost of one read of a run from the page source (one pread + decode call), ns. */
  readNs: number
  /** Per page decoded and checked (LZ4 + CRC-32), ns. */
  decodePageNs: number
  /** Per stored byte read, by tier, ns. Remote bytes are fetched a chunk at a time. */
  byteNs: Record<StorageTier, number>
  /** Remote: the latency of one chunk's GET, ns (null: not measured, the tier is unusable). */
  remoteChunkNs: number | null
  /** How each figure was obtained: command, date, machine, numbers it was derived from. */
  sources: Record<string, string>
  /** The command that wrote the model and when. */
  command: string
  measuredAt: string
}

/** The model measured on this machine and committed with the results it came from. */
export const DEFAULT_COST_MODEL = repoPath('bench-results/costs/costs.json')

const NUMBERS = ['faultNs', 'installNs', 'copyPageNs', 'zeroInstallNs', 'zeroPageNs', 'readNs', 'decodePageNs'] as const

/** Reads and checks a cost model file (the JSON `faultline bench costs --out` writes). */
export function loadCostModel(path = DEFAULT_COST_MODEL): CostModel {
  if (!existsSync(path)) {
    throw new CostModelError(`${path}: no cost model there: measure one with faultline bench costs --out ${dirname(path)}, or give --costs FILE`)
  }
  let m: Partial<CostModel> & { model?: CostModel }
  try {
    m = JSON.parse(readFileSync(path, 'utf8')) as Partial<CostModel> & { model?: CostModel }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code) throw fileError(path, err, 'cannot read cost model')
    throw new CostModelError(`${path}: not valid JSON (${(err as Error).message})`)
  }
  // bench costs writes the model beside the measurements it came from.
  const model = (m.model ?? m) as Partial<CostModel>
  for (const k of NUMBERS) {
    const v = model[k]
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new CostModelError(`${path}: ${k} must be a number of ns >= 0, got ${JSON.stringify(v)}`)
  }
  for (const tier of STORAGE_TIERS) {
    const v = model.byteNs?.[tier]
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
      throw new CostModelError(`${path}: byteNs.${tier} must be a number of ns >= 0, got ${JSON.stringify(v)}`)
  }
  const chunk = model.remoteChunkNs
  if (chunk !== null && (typeof chunk !== 'number' || !Number.isFinite(chunk) || chunk < 0))
    throw new CostModelError(`${path}: remoteChunkNs must be ns >= 0 or null, got ${JSON.stringify(chunk)}`)
  return {
    ...(model as CostModel),
    sources: model.sources ?? {},
    command: model.command ?? '(unknown command)',
    measuredAt: model.measuredAt ?? '(unknown date)',
  }
}

const us = (ns: number): string => `${(ns / 1000).toFixed(ns < 1000 ? 3 : 2)} µs`

/** The model in a few lines, as every simulation result prints it. */
export function describeCostModel(m: CostModel, path: string, tier: StorageTier): string[] {
  const shown = relative(process.cwd(), path)
  const lines = [
    `cost model ${shown.length < path.length ? shown : path} (${m.command}, ${m.measuredAt}); stored bytes ${tier}:`,
    `  fault ${us(m.faultNs)}; UFFDIO_COPY ${us(m.installNs)} + ${us(m.copyPageNs)} a page; UFFDIO_ZEROPAGE ${us(m.zeroInstallNs)} + ${us(m.zeroPageNs)} a page`,
    `  per read ${us(m.readNs)} + per page decoded ${us(m.decodePageNs)} + per stored byte ${(m.byteNs[tier]).toFixed(3)} ns` +
      (tier === 'remote' ? ` + per chunk fetched ${us(m.remoteChunkNs ?? NaN)}` : ''),
  ]
  for (const [k, v] of Object.entries(m.sources)) lines.push(`  ${k}: ${v}`)
  return lines
}
