// Where one fault's time goes: faultline (koffi and ffi-napi FFI, native and npm page codec)
// against two C servers on the same guest workload (random pages, one fault each): one doing
// faultline's work from the same snapshot, and the raw-copy floor. Pinned to one CPU and not,
// plus the fault loop's stage timers and component costs on the same snapshot.
import { closeSync, openSync, readSync } from 'node:fs'
import { crc32 } from 'node:zlib'
import { median } from '../util/format.js'
import type { FaultBreakdownSummary } from '../server/fault-breakdown.js'
import type { HeapGrowthSummary } from '../server/heap-growth.js'
import { lz4 } from '../snapshot/lz4.js'
import { A_COUNT, A_DST, A_FIRST, A_PAGE_SIZE, A_SRC, A_WORDS, nativeCodec, runArgs, type PageCodecName } from '../snapshot/native-codec.js'
import { SnapshotReader } from '../snapshot/reader.js'
import { runGuestProcess } from './guest.js'
import { ensureImage, type ImagePair } from './resume.js'
import { startFaultlineServer, startFloorServer, type ServerCost } from './servers.js'
import { warmPageCache } from './proc.js'

export interface FaultServerConfig {
  /** `uffd-c` (native/build/uffd-floor copying the raw image), `uffd-c/snapshot` (uffd-floor
   * doing faultline's work from the snapshot: pread of the stored bytes, LZ4 decode, CRC-32
   * check, COPY or ZEROPAGE), `faultline/koffi`, `faultline/ffi-napi` (native codec),
   * `faultline/koffi+npm-codec`; `+timers` with the stage timers on. */
  name: string
  kind: 'uffd-c' | 'faultline'
  /** uffd-c: what it serves from. */
  source?: 'raw' | 'snapshot'
  ffi?: 'koffi' | 'ffi-napi'
  codec?: PageCodecName
  timers?: boolean
}

/** The C server doing faultline's work, and the raw-copy floor below both. */
export const SAME_WORK_SERVER = 'uffd-c/snapshot'
export const RAW_FLOOR_SERVER = 'uffd-c'

export const FAULT_SERVERS: FaultServerConfig[] = [
  { name: RAW_FLOOR_SERVER, kind: 'uffd-c', source: 'raw' },
  { name: SAME_WORK_SERVER, kind: 'uffd-c', source: 'snapshot' },
  { name: 'faultline/koffi', kind: 'faultline', ffi: 'koffi', codec: 'native' },
  { name: 'faultline/koffi+timers', kind: 'faultline', ffi: 'koffi', codec: 'native', timers: true },
  { name: 'faultline/koffi+npm-codec', kind: 'faultline', ffi: 'koffi', codec: 'npm' },
  { name: 'faultline/koffi+npm-codec+timers', kind: 'faultline', ffi: 'koffi', codec: 'npm', timers: true },
  { name: 'faultline/ffi-napi', kind: 'faultline', ffi: 'ffi-napi', codec: 'native' },
  { name: 'faultline/ffi-napi+timers', kind: 'faultline', ffi: 'ffi-napi', codec: 'native', timers: true },
]

export interface FaultRun {
  server: string
  pinned: boolean
  round: number
  faults: number
  /** Guest-observed: workload time / faults (kernel fault path, wake-ups and the server). */
  perFaultNs: number
  /** Server-side service time (its own clock; faultline's excludes the uffd read), median. */
  serviceP50Ns: number
  /** Server CPU per fault (all its threads). */
  serverCpuPerFaultNs: number
  breakdown?: FaultBreakdownSummary
  /** faultline: what its session thread allocated. */
  heap?: HeapGrowthSummary
  mismatches: number
}

export interface ComponentCosts {
  /** Per non-zero page, ns (medians of batches): pread of its stored bytes (fs.readSync, as the
   * reader does), the npm codec's LZ4 decode and zlib's CRC-32 of the decoded page, the native
   * codec's decode and check together (one call), index lookup. */
  preadNs: number
  lz4DecodeNs: number
  crc32Ns: number
  nativeDecodeNs: number
  indexLookupNs: number
  /** Share of pages that are zero (ZEROPAGE, nothing read) in the sample. */
  zeroFraction: number
}

export interface FaultCostOptions {
  mib: number
  fraction: number
  repeat: number
  /** The CPU the pinned runs use (guest and the whole server process). */
  cpu: string
  servers: FaultServerConfig[]
  imageDir: string
  seed: number
  onRun?: (done: number, total: number) => void
}

export interface FaultCostResult {
  options: Omit<FaultCostOptions, 'onRun'>
  runs: FaultRun[]
  components: ComponentCosts
}

async function runOne(
  image: ImagePair,
  cfg: FaultServerConfig,
  pinned: boolean,
  opts: FaultCostOptions,
  socketPath: string,
): Promise<{ cost: ServerCost; perFaultNs: number; mismatches: number }> {
  const cpus = pinned ? opts.cpu : undefined
  const server =
    cfg.kind === 'uffd-c'
      ? await startFloorServer(cfg.source === 'snapshot' ? { snapshotPath: image.snap, socketPath, cpus } : { rawPath: image.raw, socketPath, cpus })
      : await startFaultlineServer({
          snapshotPath: image.snap,
          socketPath,
          policy: 'ondemand',
          cpus,
          env: { FAULTLINE_FFI: cfg.ffi ?? 'koffi', FAULTLINE_CODEC: cfg.codec ?? 'native', FAULTLINE_BREAKDOWN: cfg.timers ? '1' : '0' },
          // A young generation no session fills, emptied as the session starts (--expose-gc), so
          // its growth = what the fault path allocated.
          nodeArgs: ['--min-semi-space-size=128', '--max-semi-space-size=128', '--expose-gc'],
        })
  try {
    const guest = await runGuestProcess(
      ['--socket', socketPath, '--mib', String(opts.mib), '--workload', `random:${opts.fraction}`, '--seed', String(opts.seed), '--verify', image.raw],
      { cpus, timeoutMs: 10 * 60 * 1000 },
    )
    const cost = await server.finish()
    return { cost, perFaultNs: guest.workload_ns / Math.max(1, cost.faults), mismatches: guest.mismatches }
  } catch (err) {
    server.kill()
    throw err
  }
}

export async function measureFaultCost(opts: FaultCostOptions): Promise<FaultCostResult> {
  const image = await ensureImage(opts.imageDir, opts.mib, opts.seed)
  warmPageCache(image.raw)
  warmPageCache(image.snap)
  const socketPath = `${opts.imageDir}/faults-${process.pid}.sock`
  const runs: FaultRun[] = []
  const total = 2 * opts.repeat * opts.servers.length
  for (const pinned of [true, false]) {
    for (let round = 0; round < opts.repeat; round++) {
      for (const cfg of opts.servers) {
        const r = await runOne(image, cfg, pinned, opts, socketPath)
        runs.push({
          server: cfg.name,
          pinned,
          round,
          faults: r.cost.faults,
          perFaultNs: r.perFaultNs,
          serviceP50Ns: r.cost.serviceP50Ns,
          serverCpuPerFaultNs: r.cost.cpuNs / Math.max(1, r.cost.faults),
          breakdown: r.cost.session?.breakdown,
          heap: r.cost.session?.heap,
          mismatches: r.mismatches,
        })
        opts.onRun?.(runs.length, total)
      }
    }
  }
  const { onRun: _onRun, ...options } = opts
  return { options, runs, components: measureComponents(image.snap, opts.seed) }
}

/** Times the pieces of serving one page from the snapshot, each in isolation, over a sample
 * of its pages (warm cache). */
export function measureComponents(snapPath: string, seed: number, samplePages = 4000): ComponentCosts {
  const reader = SnapshotReader.open(snapPath)
  const index = reader.index
  const codec = lz4()
  const ps = reader.pageSize
  let state = seed >>> 0 || 1
  const next = () => {
    state ^= state << 13
    state >>>= 0
    state ^= state >>> 17
    state ^= state << 5
    state >>>= 0
    return state
  }
  const pages: number[] = []
  let zeros = 0
  for (let k = 0; k < samplePages; k++) {
    const p = next() % reader.pageCount
    if (index.kindOf(p) === 0) zeros++
    else pages.push(p)
  }
  const fd = openSync(snapPath, 'r')
  const dataOffset = reader.header.dataOffset
  const stored = pages.map(p => Buffer.allocUnsafe(index.storedLength(p)))
  const out = Buffer.alloc(ps)
  const decoded = pages.map(() => Buffer.alloc(ps))
  const time = (fn: (k: number) => void): number => {
    // Medians of 8 batches: robust to the odd preemption on a busy machine.
    const batch: number[] = []
    for (let b = 0; b < 8; b++) {
      const t0 = process.hrtime.bigint()
      for (let k = 0; k < pages.length; k++) fn(k)
      batch.push(Number(process.hrtime.bigint() - t0) / Math.max(1, pages.length))
    }
    return median(batch)
  }
  try {
    const preadNs = time(k => {
      readSync(fd, stored[k], 0, stored[k].length, dataOffset + index.storedOffset(pages[k]))
    })
    for (let k = 0; k < pages.length; k++) {
      if (index.kindOf(pages[k]) === 1) codec.decodeBlock(stored[k], decoded[k], 0, stored[k].length)
      else stored[k].copy(decoded[k])
    }
    const lz4DecodeNs = time(k => {
      if (index.kindOf(pages[k]) === 1) codec.decodeBlock(stored[k], out, 0, stored[k].length)
    })
    const crc32Ns = time(k => {
      crc32(decoded[k])
    })
    const native = nativeCodec()
    const args = runArgs()
    args[A_WORDS] = native.addressOf(index.words)
    args[A_DST] = native.addressOf(out)
    args[A_COUNT] = 1
    args[A_PAGE_SIZE] = ps
    const storedAt = stored.map(b => native.addressOf(b))
    const nativeDecodeNs = time(k => {
      args[A_SRC] = storedAt[k]
      args[A_FIRST] = pages[k]
      if (native.decodeRun(args) >= 0) throw new Error(`${snapPath}: page ${pages[k]} did not decode`)
    })
    let sink = 0
    const indexLookupNs = time(k => {
      const p = pages[k]
      sink += index.kindOf(p) + index.runStart(p) + index.runEnd(p)
    })
    if (sink === -1) throw new Error('unreachable')
    return { preadNs, lz4DecodeNs, crc32Ns, nativeDecodeNs, indexLookupNs, zeroFraction: zeros / samplePages }
  } finally {
    closeSync(fd)
    reader.close()
  }
}

export interface FaultSummaryRow {
  server: string
  pinned: boolean
  perFaultNs: number
  serviceP50Ns: number
  serverCpuPerFaultNs: number
  /** perFaultNs over uffd-c/snapshot's (the same work in C) in the same rounds (median of
   * paired ratios; NaN when it did not run). */
  vsSameWork: number
  /** perFaultNs over uffd-c's (the raw-copy floor) in the same rounds. */
  vsFloor: number
  /** faultline: heap bytes allocated a fault (NaN for uffd-c). */
  heapBytesPerFault: { all: number; warm: number }
}

export function summarizeFaultCost(runs: FaultRun[]): FaultSummaryRow[] {
  const rows: FaultSummaryRow[] = []
  for (const pinned of [true, false]) {
    const mine = runs.filter(r => r.pinned === pinned)
    for (const server of [...new Set(mine.map(r => r.server))]) {
      const g = mine.filter(r => r.server === server)
      const vs = (reference: string) => {
        const ratios = g.flatMap(r => {
          const ref = mine.find(f => f.server === reference && f.round === r.round)
          return ref ? [r.perFaultNs / ref.perFaultNs] : []
        })
        return ratios.length ? median(ratios) : NaN
      }
      rows.push({
        server,
        pinned,
        perFaultNs: median(g.map(r => r.perFaultNs)),
        serviceP50Ns: median(g.map(r => r.serviceP50Ns)),
        serverCpuPerFaultNs: median(g.map(r => r.serverCpuPerFaultNs)),
        vsSameWork: vs(SAME_WORK_SERVER),
        vsFloor: vs(RAW_FLOOR_SERVER),
        heapBytesPerFault: heapBytesPerFault(g),
      })
    }
  }
  return rows
}

export interface BreakdownRow {
  stage: string
  nsPerFault: number
  share: number
}

/** Mean time per fault of each stage, from the timed runs of one server configuration; the
 * source read is split into pread / decode (LZ4 and CRC, or the native codec's one call) in
 * the proportions measured in isolation. */
export function breakdownRows(runs: FaultRun[], components: ComponentCosts, codec: PageCodecName): BreakdownRow[] {
  const b = runs.map(r => r.breakdown).filter((x): x is FaultBreakdownSummary => x !== undefined && x.faults > 0)
  if (b.length === 0) return []
  const per = (pick: (x: FaultBreakdownSummary) => number) => median(b.map(x => pick(x) / x.faults))
  const service = per(x => x.serviceNs)
  const read = per(x => x.uffdReadNs)
  const source = per(x => x.sourceReadNs)
  const copy = per(x => x.copyNs)
  const zero = per(x => x.zeropageNs)
  const decode: Array<[string, number]> =
    codec === 'native'
      ? [['LZ4 decode + CRC-32 check (native codec)', components.nativeDecodeNs]]
      : [
          ['LZ4 decode', components.lz4DecodeNs],
          ['CRC-32 check', components.crc32Ns],
        ]
  const parts = components.preadNs + components.indexLookupNs + decode.reduce((sum, [, ns]) => sum + ns, 0)
  const split = (ns: number) => (parts > 0 ? source * (ns / parts) : 0)
  const js = service - read - source - copy - zero
  const rows: Array<[string, number]> = [
    ['uffd read(2)', read],
    ['index lookup', split(components.indexLookupNs)],
    ['pread(2) of stored bytes', split(components.preadNs)],
    ...decode.map(([stage, ns]): [string, number] => [stage, split(ns)]),
    ['UFFDIO_COPY', copy],
    ['UFFDIO_ZEROPAGE', zero],
    ['JS and FFI overhead (the rest)', js],
  ]
  return [...rows.map(([stage, ns]) => ({ stage, nsPerFault: ns, share: ns / service })), { stage: 'service time (sum)', nsPerFault: service, share: 1 }]
}

/** Heap bytes a session allocated per fault (median over runs): over the whole session, and
 * in the steady state, from the WARM_FAULTS-th fault on (NaN when no run got that far). */
export function heapBytesPerFault(runs: FaultRun[]): { all: number; warm: number } {
  const h = runs.flatMap(r => (r.heap !== undefined && r.faults > 0 ? [{ ...r.heap, faults: r.faults }] : []))
  const warm = h.filter(x => x.warmFaults > 0)
  return {
    all: h.length ? median(h.map(x => x.bytes / x.faults)) : NaN,
    warm: warm.length ? median(warm.map(x => x.warmBytes / x.warmFaults)) : NaN,
  }
}

/** System calls per fault counted by the fault loop: poll, uffd reads, preads, ioctls. */
export function syscallsPerFault(runs: FaultRun[]): number {
  const b = runs.map(r => r.breakdown).filter((x): x is FaultBreakdownSummary => x !== undefined && x.faults > 0)
  return median(b.map(x => (x.polls + x.uffdReads + x.sourceReads + x.copies + x.zeropages) / x.faults))
}
