// `faultline bench faults`: per-fault cost of faultline (koffi and ffi-napi, native and npm
// page codec) against a C server doing the same work and the C raw-copy floor, pinned to one
// CPU and not, with the breakdown.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import {
  breakdownRows,
  FAULT_SERVERS,
  measureFaultCost,
  RAW_FLOOR_SERVER,
  SAME_WORK_SERVER,
  summarizeFaultCost,
  syscallsPerFault,
  type FaultCostResult,
} from '../bench/fault-cost.js'
import { WARM_FAULTS } from '../server/heap-growth.js'
import { Progress } from './progress.js'
import { formatTable } from '../util/format.js'
import { choiceItems } from './options.js'
import { repoPath } from '../util/repo.js'
import { UsageError } from '../errors.js'

export const BENCH_FAULTS_USAGE = `usage: faultline bench faults [options]

Resumes the guest with a random workload (one fault per touched page) from faultline
(ondemand) with each FFI backend and page codec, and from two C servers (native/build/uffd-floor):
uffd-c/snapshot doing faultline's work from the same snapshot (pread of the stored bytes, LZ4
decode, CRC-32 check, COPY or ZEROPAGE) and uffd-c copying the raw image (the floor). Pinned to
one CPU (taskset: guest and the whole server process) and unpinned, rounds interleaved; ratios
are medians of same-round pairs. Writes DIR/faults.json and DIR/faults.md.

  --mib N          guest RAM (default 256)
  --fraction F     share of pages touched, at random (default 0.1)
  --repeat N       rounds (default 5)
  --cpu N          the CPU pinned runs use (default 0)
  --ffi LIST       koffi,ffi-napi (default both)
  --codec LIST     native,npm: the page codec (default both; ffi-napi runs use native)
  --images DIR     cache of synthetic images (default .cache/bench-images)
  --out DIR        where results go (default bench-results)
  --seed N         image and workload seed (default 1)`

export async function benchFaultsCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      mib: { type: 'string', default: '256' },
      fraction: { type: 'string', default: '0.1' },
      repeat: { type: 'string', default: '5' },
      cpu: { type: 'string', default: '0' },
      ffi: { type: 'string', default: 'koffi,ffi-napi' },
      codec: { type: 'string', default: 'native,npm' },
      images: { type: 'string' },
      out: { type: 'string', default: 'bench-results' },
      seed: { type: 'string', default: '1' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(BENCH_FAULTS_USAGE)
    return 0
  }
  const mib = Number(values.mib),
    fraction = Number(values.fraction),
    repeat = Number(values.repeat),
    seed = Number(values.seed)
  if (!Number.isInteger(mib) || mib < 1) throw new UsageError(`--mib: expected a whole number of MiB, got '${values.mib}'`)
  if (!(fraction > 0 && fraction <= 1)) throw new UsageError(`--fraction: expected a number in (0, 1], got '${values.fraction}'`)
  if (!Number.isInteger(repeat) || repeat < 1) throw new UsageError(`--repeat: expected a positive integer, got '${values.repeat}'`)
  if (!/^\d+$/.test(values.cpu!)) throw new UsageError(`--cpu: expected one CPU number, got '${values.cpu}'`)
  // Blank items are errors here, as they always were for this command.
  const items = (text: string) => text.split(',').map(s => s.trim())
  const ffis = choiceItems('ffi', items(values.ffi!), ['koffi', 'ffi-napi'] as const)
  const codecs = choiceItems('codec', items(values.codec!), ['native', 'npm'] as const)
  const servers = FAULT_SERVERS.filter(s => s.kind === 'uffd-c' || (ffis.includes(s.ffi!) && codecs.includes(s.codec!)))
  const outDir = resolve(values.out!)
  mkdirSync(outDir, { recursive: true })
  const progress = new Progress('fault cost runs', 1)
  const result = await measureFaultCost({
    mib,
    fraction,
    repeat,
    seed,
    cpu: values.cpu!,
    servers,
    imageDir: resolve(values.images ?? repoPath('.cache/bench-images')),
    onRun: progress.update,
  })
  progress.done()
  const command = `faultline bench faults ${argv.join(' ')}`.trim()
  const md = renderFaultCost(result, command)
  writeFileSync(join(outDir, 'faults.json'), JSON.stringify({ command, ...result }, null, 1) + '\n')
  writeFileSync(join(outDir, 'faults.md'), md)
  console.log(md)
  const mismatches = result.runs.reduce((s, r) => s + r.mismatches, 0)
  return mismatches === 0 ? 0 : 1
}

export function renderFaultCost(result: FaultCostResult, command: string): string {
  const us = (ns: number) => (Number.isFinite(ns) ? (ns / 1000).toFixed(2) : '-')
  const bytes = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-')
  const ratio = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}x` : '-')
  const rows = summarizeFaultCost(result.runs)
  const o = result.options
  const out: string[] = [
    `Command: \`${command}\``,
    '',
    `${o.mib} MiB guest, random ${o.fraction * 100}% of its pages (one fault each), warm page cache, ${o.repeat} rounds, medians; ` +
      `pinned = guest and the whole server process on CPU ${o.cpu} (taskset).`,
    '',
    formatTable(
      [
        'server',
        'pinned',
        'per fault µs (guest)',
        `vs ${SAME_WORK_SERVER} (same work)`,
        `vs ${RAW_FLOOR_SERVER} (raw copy)`,
        'service p50 µs (server)',
        'server CPU µs/fault',
        'heap B/fault',
        `heap B/fault from fault ${WARM_FAULTS}`,
      ],
      rows.map(r => [
        r.server,
        r.pinned ? 'yes' : 'no',
        us(r.perFaultNs),
        ratio(r.vsSameWork),
        ratio(r.vsFloor),
        us(r.serviceP50Ns),
        us(r.serverCpuPerFaultNs),
        bytes(r.heapBytesPerFault.all),
        bytes(r.heapBytesPerFault.warm),
      ]),
      { markdown: true },
    ),
    '',
    "Heap: growth of the session thread's young generation per fault (fixed 128 MiB semi-spaces, emptied as the session " +
      `starts, so no scavenge runs), over the whole session and from its ${WARM_FAULTS}th fault on, when V8 has optimised the read loop too.`,
    '',
    "Per fault (guest) = the guest's workload time / faults: the whole round trip as the guest sees it. Service p50 is each " +
      "server's own clock: the C servers from read(2) of the message to the end of the install (UFFDIO_COPY or ZEROPAGE); " +
      'faultline from after the read to the end of the install (read excluded).',
    '',
  ]
  const c = result.components
  for (const cfg of FAULT_SERVERS.filter(s => s.timers)) {
    for (const pinned of [true, false]) {
      const timed = result.runs.filter(r => r.server === cfg.name && r.pinned === pinned)
      const b = breakdownRows(timed, c, cfg.codec!)
      if (b.length === 0) continue
      out.push(
        `Breakdown, faultline with ${cfg.ffi} and the ${cfg.codec} codec, ${pinned ? 'pinned' : 'unpinned'} (stage timers on; ${syscallsPerFault(timed).toFixed(2)} system calls ` +
          `a fault):`,
        '',
        formatTable(
          ['stage', 'µs per fault', 'share'],
          b.map(r => [r.stage, us(r.nsPerFault), `${(100 * r.share).toFixed(0)}%`]),
          { markdown: true },
        ),
        '',
      )
    }
  }
  out.push(
    `Measured in isolation on the same snapshot (per non-zero page, ${(100 * c.zeroFraction).toFixed(0)}% of pages are zero): ` +
      `pread ${us(c.preadNs)} µs; npm codec: LZ4 decode ${us(c.lz4DecodeNs)} µs, CRC-32 ${us(c.crc32Ns)} µs; native codec, both in one call: ` +
      `${us(c.nativeDecodeNs)} µs; index lookup ${us(c.indexLookupNs)} µs; ` +
      "the fault loop's source-read time is split in these proportions.",
    '',
  )
  return out.join('\n')
}
