// `faultline bench trace`: argument parsing and the table; the work is in src/bench/trace-overhead.ts.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { runTraceOverhead, type OverheadRun } from '../bench/trace-overhead.js'
import { Progress } from './progress.js'
import { formatTable, median } from '../util/format.js'
import { intOption } from './options.js'

export const BENCH_TRACE_USAGE = `usage: faultline bench trace [--mib N] [--workload W] [--rounds N] [--policy P] [--guest-cpus LIST] [--dir DIR]

Fault service with and without --trace, same workload, alternating runs, medians.
Pin it by running the whole command under taskset (e.g. taskset -c 1 faultline bench trace):
the server's threads and the guest then share that CPU.

  --mib N            guest RAM and synthetic image size in MiB (default 64)
  --workload W       guest workload (default random:0.5)
  --rounds N         runs of each variant (default 7)
  --policy P         fault policy of both servers (default ondemand)
  --guest-cpus LIST  pin only the guest (taskset -c LIST)
  --dir DIR          keep the image and snapshot in DIR (default: temporary)`

export async function benchTraceCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      mib: { type: 'string', default: '64' },
      workload: { type: 'string', default: 'random:0.5' },
      rounds: { type: 'string', default: '7' },
      seed: { type: 'string', default: '1' },
      policy: { type: 'string', default: 'ondemand' },
      'guest-cpus': { type: 'string' },
      dir: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(BENCH_TRACE_USAGE)
    return 0
  }
  const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'faultline-bench-trace-'))
  const progress = new Progress('runs', 1)
  try {
    const r = await runTraceOverhead({
      dir,
      mib: intOption('mib', values.mib!, 1, 65536),
      workload: values.workload!,
      rounds: intOption('rounds', values.rounds!, 1, 1000),
      seed: intOption('seed', values.seed!, 0, 2 ** 31),
      policy: values.policy!,
      guestCpus: values['guest-cpus'],
      onProgress: progress.update,
    })
    progress.done('done')
    const row = (name: string, runs: OverheadRun[]) => [
      name,
      (median(runs.map(x => x.faultP50Ns)) / 1000).toFixed(2),
      (median(runs.map(x => x.faultMeanNs)) / 1000).toFixed(2),
      (median(runs.map(x => x.cpuPerFaultNs)) / 1000).toFixed(2),
      (median(runs.map(x => x.workloadNs)) / 1e6).toFixed(1),
      Math.round(median(runs.map(x => x.faults))),
    ]
    const ratio = (f: (x: OverheadRun) => number) => `${(median(r.traced.map(f)) / median(r.plain.map(f))).toFixed(3)}x`
    console.log(
      `cpus allowed: ${r.cpusAllowed}${values['guest-cpus'] ? `, guest pinned to ${values['guest-cpus']}` : ''}; ` +
        `${values.mib} MiB, workload ${values.workload}, policy ${values.policy}, ${values.rounds} alternating runs each, medians\n`,
    )
    console.log(
      formatTable(
        ['server', 'fault p50 µs', 'fault mean µs', 'server CPU/fault µs', 'guest workload ms', 'faults'],
        [
          row('without --trace', r.plain),
          row('with --trace', r.traced),
          ['with / without', ratio(x => x.faultP50Ns), ratio(x => x.faultMeanNs), ratio(x => x.cpuPerFaultNs), ratio(x => x.workloadNs), ''],
        ],
      ),
    )
    const recordNs = median(r.recordNs)
    const faultMean = median(r.plain.map(x => x.faultMeanNs))
    console.log(
      `\nthe recorder alone: ${recordNs.toFixed(0)} ns per record (median of ${r.recordNs.length} passes, disk writes included) = ` +
        `${((100 * recordNs) / faultMean).toFixed(2)}% of the mean fault service time without --trace`,
    )
    console.log("fault p50 comes from the server's log-linear histogram (buckets 12.5% apart): mean and CPU per fault are finer")
    return 0
  } finally {
    if (!values.dir) rmSync(dir, { recursive: true, force: true })
  }
}
