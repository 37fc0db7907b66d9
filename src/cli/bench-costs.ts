// `faultline bench costs`: measures the trace simulator's cost model on this machine and writes
// it (with the runs it came from) to DIR/costs.json, which `trace simulate` and `bench policies
// --traces` read; the work is in src/bench/costs.ts.
import { mkdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { measureCosts } from '../bench/costs.js'
import { UsageError } from '../errors.js'
import { describeCostModel } from '../bench/cost-model.js'
import { intOption } from './options.js'
import { Progress } from './progress.js'

export const BENCH_COSTS_USAGE = `usage: faultline bench costs [--mib N] [--rounds N] [--out DIR] [--remote-get-ms MS --remote-mib-s N --remote-source TEXT]

Serves the native guest from a synthetic snapshot one page a fault and in 64-page runs, warm
and cold, with the session's stage timers on, and reads the snapshot whole; derives what a
fault, an install ioctl, a page copied or zeroed, a page decoded and a stored byte cost, and
writes DIR/costs.json (the model trace simulate reads, with every run it came from).

  --mib N              synthetic image size (default 64)
  --rounds N           rounds of the four sessions; the model uses medians (default 5)
  --seed N             image and workload seed (default 1)
  --images DIR         cache of synthetic images (default .cache/bench-images)
  --out DIR            where costs.json goes (default bench-results/costs)
  --remote-get-ms MS   remote tier: one chunk GET's latency, from faultline bench remote
  --remote-mib-s N     remote tier: bandwidth of large GETs, MiB/s
  --remote-source TEXT where those two figures were measured (command and date)`

export async function benchCostsCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      mib: { type: 'string', default: '64' },
      rounds: { type: 'string', default: '5' },
      seed: { type: 'string', default: '1' },
      images: { type: 'string', default: '.cache/bench-images' },
      out: { type: 'string', default: 'bench-results/costs' },
      'remote-get-ms': { type: 'string' },
      'remote-mib-s': { type: 'string' },
      'remote-source': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(BENCH_COSTS_USAGE)
    return 0
  }
  const mib = intOption('mib', values.mib!, 8, 4096)
  const rounds = intOption('rounds', values.rounds!, 1, 50)
  const seed = intOption('seed', values.seed!, 0, 2 ** 31)
  const remoteGiven = [values['remote-get-ms'], values['remote-mib-s'], values['remote-source']].filter(v => v !== undefined).length
  if (remoteGiven !== 0 && remoteGiven !== 3) throw new UsageError('--remote-get-ms, --remote-mib-s and --remote-source go together')
  let remote: { getMs: number; mibPerSecond: number; source: string } | undefined
  if (remoteGiven === 3) {
    const getMs = Number(values['remote-get-ms']),
      mibPerSecond = Number(values['remote-mib-s'])
    if (!(getMs >= 0)) throw new UsageError(`--remote-get-ms: expected a number of ms >= 0, got '${values['remote-get-ms']}'`)
    if (!(mibPerSecond > 0)) throw new UsageError(`--remote-mib-s: expected a bandwidth > 0, got '${values['remote-mib-s']}'`)
    remote = { getMs, mibPerSecond, source: values['remote-source']! }
  }
  const out = resolve(values.out!)
  const progress = new Progress('cost sessions', 1)
  const command = `faultline bench costs ${argv.join(' ')}`.trim()
  const result = await measureCosts({ dir: resolve(values.images!), mib, rounds, seed, command, remote, onProgress: (d, t) => progress.update(d, t) })
  progress.done(`${result.runs.length} sessions`)
  mkdirSync(out, { recursive: true })
  const file = join(out, 'costs.json')
  writeFileSync(file, `${JSON.stringify({ model: result.model, bulkRead: result.bulkRead, runs: result.runs }, null, 2)}\n`)
  console.log(describeCostModel(result.model, file, 'warm').join('\n'))
  console.log(`  byteNs.cold ${result.model.byteNs.cold.toFixed(3)} ns, byteNs.remote ${result.model.byteNs.remote.toFixed(3)} ns`)
  return 0
}
