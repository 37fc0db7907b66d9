// `faultline bench simulate`: simulated accesses a second per policy; the work is in
// src/bench/simulate-speed.ts.
import { parseArgs } from 'node:util'
import { measureSimulateSpeed } from '../bench/simulate-speed.js'
import { DEFAULT_COST_MODEL, loadCostModel } from '../bench/cost-model.js'
import { intOption, listOption } from './options.js'
import { formatTable } from '../util/format.js'

export const BENCH_SIMULATE_USAGE = `usage: faultline bench simulate [--pages N] [--policies A,B,...] [--rounds N] [--markdown]

Simulates a synthetic mixed access order (4 interleaved sequential scans and random pages,
about 31% of N pages) under each policy, rounds after one warm-up, and prints accesses a second
(medians).

  --pages N        pages in the simulated region (default 4194304: 16 GiB, ~1.3 M accesses)
  --policies LIST  default ondemand,readahead,adaptive,background
  --rounds N       default 5
  --costs FILE     cost model (default ${DEFAULT_COST_MODEL})`

export async function benchSimulateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      pages: { type: 'string', default: '4194304' },
      policies: { type: 'string', default: 'ondemand,readahead,adaptive,background' },
      rounds: { type: 'string', default: '5' },
      seed: { type: 'string', default: '1' },
      costs: { type: 'string' },
      markdown: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(BENCH_SIMULATE_USAGE)
    return 0
  }
  const pages = intOption('pages', values.pages!, 1024, 2 ** 28)
  const rounds = intOption('rounds', values.rounds!, 1, 100)
  const seed = intOption('seed', values.seed!, 0, 2 ** 31)
  const rows = await measureSimulateSpeed({
    pages,
    rounds,
    seed,
    policies: listOption(values.policies!),
    model: loadCostModel(values.costs ?? DEFAULT_COST_MODEL),
  })
  console.log(
    `faultline bench simulate ${argv.join(' ')}`.trim() +
      `: ${new Date().toISOString().slice(0, 10)}, node ${process.version}, medians of ${rounds} round(s) after a warm-up`,
  )
  console.log(
    formatTable(
      ['policy', 'accesses', 'faults', 'accesses/s', 'ms a round (median)'],
      rows.map(r => [r.policy, r.accesses, r.faults, `${(r.accessesPerSecond / 1e6).toFixed(2)} M`, ((r.accesses / r.accessesPerSecond) * 1000).toFixed(0)]),
      { markdown: values.markdown },
    ),
  )
  return 0
}
