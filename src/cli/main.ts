// faultline's command line: picks the subcommand and turns any error into one line.
import { exitStatusOf, formatCliError } from '../errors.js'

type Command = (argv: string[]) => Promise<number>

/** Subcommands, loaded on use so `faultline snapshot info` does not load the server. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  snapshot: { summary: 'create | info | verify | extract a compressed snapshot', load: async () => (await import('./snapshot.js')).snapshotCommand },
  serve: { summary: "serve guests' page faults from a snapshot", load: async () => (await import('./serve.js')).serveCommand },
  demo: { summary: 'the built-in demo: eager vs mmap vs faultline on a synthetic image', load: async () => (await import('./demo.js')).demoCommand },
  bench: {
    summary: 'benchmarks: resume modes, per-fault cost, policies, trace overhead (bench --help)',
    load: async () => (await import('./bench.js')).benchCommand,
  },
  trace: { summary: 'stats | export | plot | replay a fault trace (serve --trace records one)', load: async () => (await import('./trace.js')).traceCommand },
  vm: { summary: 'image | snapshot | resume a real QEMU VM (eager, mmap or faultline)', load: async () => (await import('./vm.js')).vmCommand },
}

/** Commands that serve or time guests: they say so when the npm codec stands in for the
 * native one (a checkout built without liblz4-dev and libisal-dev). */
const SERVING = new Set(['serve', 'demo', 'bench', 'trace', 'vm'])

export const USAGE = `usage: faultline <command> [options]

commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`)
  .join('\n')}

Run \`faultline <command> --help\` for a command's options.`

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(USAGE)
    return name === undefined ? 2 : 0
  }
  const command = COMMANDS[name]
  if (!command) {
    console.error(`faultline: unknown command '${name}'\n${USAGE}`)
    return 2
  }
  const run = await command.load()
  if (SERVING.has(name) && !rest.includes('--help') && !rest.includes('-h')) {
    const notice = (await import('../snapshot/native-codec.js')).codecNotice()
    if (notice) console.error(`faultline: ${notice}`)
  }
  return run(rest)
}

main(process.argv.slice(2)).then(
  code => {
    process.exitCode = code
  },
  err => {
    console.error(formatCliError(err))
    process.exitCode = exitStatusOf(err)
  },
)
