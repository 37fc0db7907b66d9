// Simulation against reality: a trace recorded from a real guest (ondemand), then for each
// built-in policy a real `faultline trace replay` of it (real guest, real userfaultfd, memory
// verified) and `trace simulate` of the same trace on the same snapshot. Deterministic
// policies (no start set, or one installed before the ack: eager): faults and pages installed
// agree within 2%. Start-set policies (workingset:, primed:) race the guest, so their counts
// depend on the machine's timing: what the session guarantees is asserted from the replay's
// own trace (every page of the set installed, no page twice, faults bounded by the batches),
// and the simulated and real figures are reported. background is left out: what it installs
// depends on how long the guest is quiet, which a replay does not reproduce (docs/workbench.md).
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { mixedWorkload } from '../../src/bench/policies.js'
import { DEFAULT_COST_MODEL } from '../../src/bench/cost-model.js'
import { SIM_START_BATCH_PAGES } from '../../src/bench/simulate.js'
import { simulateTraces, traceCommand } from '../../src/cli/trace.js'
import { RunList } from '../../src/policy/policy.js'
import { createPolicy } from '../../src/policy/registry.js'
import { InstallCause, TRACE_FLAG_START_SET } from '../../src/trace/format.js'
import { readPageMap } from '../../src/trace/page-map.js'
import { readTrace, type Trace } from '../../src/trace/reader.js'
import { TraceRecorder } from '../../src/trace/recorder.js'
import { makeImage, runGuest, scratchDir, startServer, waitForEndedSessions } from './harness.js'

const MIB = 32
const TOLERANCE = 0.02

async function cli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '',
    stderr = ''
  const code = await traceCommand(argv, { stdout: { write: s => (stdout += s) }, stderr: { write: s => (stderr += s) } })
  return { code, stdout, stderr }
}

/** A value from `trace replay`'s table ("faults now   1234"). */
function row(table: string, name: string): number {
  const m = new RegExp(`^${name}\\s+(\\d+)\\s*$`, 'm').exec(table)
  if (!m) throw new Error(`trace replay printed no '${name}' row:\n${table}`)
  return Number(m[1])
}

const dir = scratchDir(t, 'fl-sim-')
const img = await makeImage(dir, MIB, 3)
const pagesFile = join(dir, 'mixed.pages')
writeFileSync(pagesFile, mixedWorkload((MIB << 20) / 4096, 5).join('\n') + '\n')
const trace = join(dir, 'recorded.fltrace')
{
  const server = await startServer(t, { snapshotPath: img.snap, socketPath: join(dir, 'rec.sock'), policy: 'ondemand', tracePath: trace, singleGuest: true })
  const g = await runGuest(['--socket', server.socketPath, '--mib', String(MIB), '--workload', `pages:${pagesFile}`, '--verify', img.raw])
  if (g.code !== 0 || g.report?.mismatches !== 0) throw new Error(`recording run failed: ${g.stderr}`)
  await waitForEndedSessions(server, 1)
  await server.close()
}
// A working set learned from another run: the first half of this one's pages.
const half = join(dir, 'half.fltrace')
{
  const recorded = readTrace(trace)
  const keep = Math.floor(recorded.length / 2)
  const rec = new TraceRecorder({
    path: half,
    pageSize: 4096,
    snapshotPages: recorded.header.snapshotPages,
    sessionId: 1,
    pid: 1,
    policy: 'ondemand',
    regions: recorded.header.regions,
  })
  for (let i = 0; i < keep; i++)
    rec.record(recorded.timeNs[i], recorded.page[i], recorded.count[i], recorded.cause[i] as 0, recorded.flags[i], recorded.threadId[i], recorded.latencyNs[i])
  rec.close()
}

const DETERMINISTIC = ['ondemand', 'readahead', 'readahead:63', 'adaptive', 'adaptive:32', 'eager']
const START_SET = [`workingset:${trace}`, `workingset:${trace}@8`, `primed:${half}+4`]
const POLICIES = [...DETERMINISTIC, ...START_SET]
const recorded = readTrace(trace)
const region = recorded.header.regions[0]

/** The pages `spec`'s onStart plans inside the guest's region, as the session would get them. */
async function startSetOf(spec: string): Promise<Set<number>> {
  const policy = await createPolicy(spec)
  const plan = new RunList(64)
  policy.onStart!(
    {
      pageSize: 4096,
      pageCount: recorded.header.snapshotPages,
      ranges: [{ firstPage: region.firstPage, pageCount: region.pageCount }],
      isResident: () => false,
      kindOf: () => 1,
    },
    plan,
  )
  const set = new Set<number>()
  for (let r = 0; r < plan.length; r++) {
    for (let p = plan.first[r]; p < plan.first[r] + plan.count[r]; p++) if (p >= region.firstPage && p < region.firstPage + region.pageCount) set.add(p)
  }
  return set
}

/** How many times the replay's session installed each page, its faults' pages, and its
 * start set: pages, installs, when the first and last went in, their install time. */
function installsOf(t: Trace): {
  times: Map<number, number>
  faultPages: number[]
  startSet: { pages: number; installs: number; fromMs: number; toMs: number; installMs: number }
} {
  const times = new Map<number, number>()
  const faultPages: number[] = []
  const startSet = { pages: 0, installs: 0, fromMs: Infinity, toMs: 0, installMs: 0 }
  for (let i = 0; i < t.length; i++) {
    for (let p = t.page[i]; p < t.page[i] + t.count[i]; p++) times.set(p, (times.get(p) ?? 0) + 1)
    if (t.cause[i] === InstallCause.Fault) faultPages.push(t.page[i])
    if (t.flags[i] & TRACE_FLAG_START_SET) {
      startSet.pages += t.count[i]
      startSet.installs++
      startSet.fromMs = Math.min(startSet.fromMs, t.timeNs[i] / 1e6)
      startSet.toMs = Math.max(startSet.toMs, t.timeNs[i] / 1e6)
      startSet.installMs += t.latencyNs[i] / 1e6
    }
  }
  return { times, faultPages, startSet }
}

t.test('simulated faults and pages installed agree with real replays within 2%; start sets keep what the session guarantees', async t => {
  // The cost model prices the counts compared here; for deterministic policies it does not
  // change them (any valid one does), for start sets it sets the race with the guest: the one
  // measured on this machine.
  const costs = join(dir, 'costs.json')
  writeFileSync(
    costs,
    JSON.stringify({
      model: {
        faultNs: 1,
        installNs: 1,
        copyPageNs: 1,
        zeroInstallNs: 1,
        zeroPageNs: 1,
        readNs: 1,
        decodePageNs: 1,
        byteNs: { warm: 0, cold: 0, remote: 0 },
        remoteChunkNs: null,
      },
    }),
  )
  const sim = await simulateTraces([trace], DETERMINISTIC, { pageMap: readPageMap(img.snap), storage: 'warm', costs })
  const simStart = await simulateTraces([trace], START_SET, { pageMap: readPageMap(img.snap), storage: 'warm', costs: DEFAULT_COST_MODEL })
  const close = (a: number, b: number) => Math.abs(a - b) <= TOLERANCE * Math.max(a, b)
  for (const [i, policy] of POLICIES.entries()) {
    const replayTrace = join(dir, `replay-${i}.fltrace`)
    const real = await cli(['replay', trace, '--snapshot', img.snap, '--policy', policy, '--verify', img.raw, '--trace', replayTrace])
    t.equal(real.code, 0, `${policy}: the replay ran and its memory verified: ${real.stderr}`)
    t.match(real.stdout, /pages verified\s+\d+ \(0 mismatches\)/)
    const faults = row(real.stdout, 'faults now')
    const installed = row(real.stdout, 'pages installed now')
    t.ok(installed > 0, `${policy}: the replay installed ${installed} pages`)
    if (i < DETERMINISTIC.length) {
      const s = sim.policies[i]
      t.ok(close(s.faults, faults), `${s.policy}: ${s.faults} faults simulated, ${faults} real`)
      t.ok(close(s.pagesInstalled, installed), `${s.policy}: ${s.pagesInstalled} pages installed simulated, ${installed} real`)
      t.comment(`${s.policy}: faults ${s.faults} simulated / ${faults} real; pages installed ${s.pagesInstalled} / ${installed}`)
      continue
    }
    const s = simStart.policies[i - DETERMINISTIC.length]
    const set = await startSetOf(policy)
    const got = installsOf(readTrace(replayTrace))
    const twice = [...got.times].filter(([, n]) => n > 1).map(([p]) => p)
    t.same(twice.slice(0, 5), [], `${policy}: no page installed twice (${twice.length} were)`)
    const missing = [...set].filter(p => !got.times.has(p))
    t.same(missing.slice(0, 5), [], `${policy}: every one of the ${set.size} pages of the start set installed (${missing.length} not)`)
    t.equal(got.faultPages.length, faults, `${policy}: the trace holds the session's ${faults} faults`)
    t.ok(faults <= recorded.length, `${policy}: ${faults} faults, at most one per access (${recorded.length})`)
    // One thread touching the set in its order: after each fault the session installs the next
    // batch before it reads the uffd again, so a fault on a page of the set can only come
    // where a batch ended, once per batch at most (and one before the first).
    const onSet = got.faultPages.filter(p => set.has(p)).length
    const batches = Math.ceil(set.size / SIM_START_BATCH_PAGES) + 1
    t.ok(onSet <= batches, `${policy}: ${onSet} faults on pages of the set, at most one per batch (${batches})`)
    const ss = got.startSet
    t.ok(ss.pages > 0, `${policy}: ${ss.pages} pages went in from the start set after the ack`)
    t.comment(
      `${s.policy}: faults ${s.faults} simulated / ${faults} real (${onSet} on the set); pages installed ${s.pagesInstalled} / ${installed}; ` +
        `from the start set ${s.pagesStartSet} / ${ss.pages}; simulated waits on pages going in ${s.startSetWaits}; ` +
        `start set simulated ${s.estimate.startSetMs.toFixed(1)} ms of installs, real ${ss.installs} installs from ${ss.fromMs.toFixed(1)} to ${ss.toMs.toFixed(1)} ms, ${ss.installMs.toFixed(1)} ms in them`,
    )
  }
  // Not trivially equal: the policies differ from each other.
  t.ok(new Set(sim.policies.map(p => p.faults)).size >= 5, `faults per policy: ${sim.policies.map(p => p.faults).join(', ')}`)
})
