// Every command answers a bad command line the same way: one line `faultline: ...` on stderr
// and exit status 2; a failure that is not the command line's exits 1.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { ROOT } from '../e2e/harness.js'
import { ensureDist } from '../e2e/dist.js'

const CLI = join(ROOT, 'dist/cli/main.js')
ensureDist()

function run(args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60000, env: { ...process.env, FAULTLINE_DEBUG: '' } })
  return { status: r.status, stderr: r.stderr }
}

const USAGE_ERRORS: Array<[string[], RegExp]> = [
  [['nosuchcommand'], /^faultline: unknown command 'nosuchcommand'/],
  [['serve', '--bogus'], /^faultline: Unknown option '--bogus'/],
  [['serve'], /^faultline: serve: --snapshot is required\n$/],
  [['serve', '--snapshot', 'x.snap', '--socket', 's', '--warm-workers', 'two'], /^faultline: --warm-workers: expected 1\.\.64, got 'two'\n$/],
  [['serve', '--snapshot', 's3://x', '--socket', 's'], /^faultline: --snapshot s3:\/\/x: bucket 'x' is not a valid bucket name/],
  [['demo', '--mib', 'x'], /^faultline: --mib: expected a whole number of MiB from 1 to 65536, got 'x'\n$/],
  [['bench', 'nosuch'], /^faultline bench: unknown benchmark 'nosuch'/],
  [['bench', 'resume', '--repeat', '0'], /^faultline: --repeat: expected 1..100, got '0'\n$/],
  [['bench', 'faults', '--codec', 'zstd'], /^faultline: --codec: expected native or npm, got 'zstd'\n$/],
  [['bench', 'vm', '--cache', 'tepid'], /^faultline: --cache: expected warm or cold, got 'tepid'\n$/],
  [['bench', 'remote', '--rtt', 'x'], /^faultline: --rtt: 'x' is not a number of ms\n$/],
  [['bench', 'policies', '--bogus'], /^faultline: Unknown option '--bogus'/],
  [['bench', 'trace', '--bogus'], /^faultline: Unknown option '--bogus'/],
  [['trace', 'stats'], /^faultline: trace stats: expected one trace FILE, got 0\n$/],
  [['trace', 'replay', 'x.trace', '--snapshot', 'x.snap', '--threads', '0'], /^faultline: --threads: expected 1..1024, got '0'\n$/],
  [['vm', 'resume'], /^faultline: vm resume: --dir VMDIR is required\n$/],
  [['vm', 'nosuch'], /^faultline vm: unknown subcommand 'nosuch'/],
  [['snapshot', 'create'], /^faultline: snapshot create: missing RAW SNAP/],
]

for (const [args, message] of USAGE_ERRORS) {
  t.test(`faultline ${args.join(' ')}: exit 2`, async t => {
    const r = run(args)
    t.equal(r.status, 2, r.stderr)
    t.match(r.stderr, message)
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
  })
}

t.test('a failure that is not a usage error exits 1', async t => {
  const r = run(['serve', '--snapshot', '/nonexistent/x.snap', '--socket', '/tmp/fl-usage-test.sock'])
  t.equal(r.status, 1, r.stderr)
  t.match(r.stderr, /^faultline: \/nonexistent\/x\.snap: no such file or directory\n$/)
})
