// `faultline bench <what>`: the benchmark dispatcher. Each benchmark is one line here and a
// module of its own, loaded on use.

type Command = (argv: string[]) => Promise<number>

const BENCHMARKS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  resume: {
    summary: 'resume modes (eager, eager-lz4, mmap, faultline anonymous and cache-mapped, learned, uffd-c) over RAM sizes, working sets, cold/warm/hot cache',
    load: async () => (await import('./bench-resume.js')).benchResumeCommand,
  },
  clones: {
    summary: 'N guests of one snapshot at once (mmap, faultline anonymous, faultline cache-mapped): time until all are done, host memory',
    load: async () => (await import('./bench-clones.js')).benchClonesCommand,
  },
  faults: {
    summary: 'per-fault service time of faultline vs the C handler, pinned and unpinned, with its breakdown',
    load: async () => (await import('./bench-faults.js')).benchFaultsCommand,
  },
  policies: {
    summary: 'one workload under every built-in fault policy: time, faults, pages installed and never touched, server CPU',
    load: async () => (await import('./bench-policies.js')).benchPoliciesCommand,
  },
  trace: {
    summary: 'what recording a trace (serve --trace) costs fault service, medians side by side',
    load: async () => (await import('./bench-trace.js')).benchTraceCommand,
  },
  vm: {
    summary: 'real QEMU guests resumed eager, mmap, faultline, uffd-c over RAM sizes, cold/warm cache, checksums checked',
    load: async () => (await import('./bench-vm.js')).benchVmCommand,
  },
  costs: {
    summary: "the trace simulator's cost model, measured here: per fault, install ioctl, page copied/zeroed/decoded, byte read",
    load: async () => (await import('./bench-costs.js')).benchCostsCommand,
  },
  simulate: {
    summary: 'how many simulated accesses a second trace simulate runs, per policy',
    load: async () => (await import('./bench-simulate.js')).benchSimulateCommand,
  },
  remote: {
    summary: 'local file vs S3 (Ceph RGW) cold/warm cache, prefetch or not, over emulated network RTTs',
    load: async () => (await import('./bench-remote.js')).benchRemoteCommand,
  },
}

export const BENCH_USAGE = `usage: faultline bench <benchmark> [options]

benchmarks:
${Object.entries(BENCHMARKS)
  .map(([name, b]) => `  ${name.padEnd(10)} ${b.summary}`)
  .join('\n')}

Run \`faultline bench <benchmark> --help\` for its options.`

export async function benchCommand(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h') {
    console.log(BENCH_USAGE)
    return name === undefined ? 2 : 0
  }
  const bench = BENCHMARKS[name]
  if (!bench) {
    console.error(`faultline bench: unknown benchmark '${name}'\n${BENCH_USAGE}`)
    return 2
  }
  return (await bench.load())(rest)
}
