// Simulation against reality: a trace recorded from a real guest (ondemand), then for each
// deterministic built-in policy a real `faultline trace replay` of it (real guest, real
// userfaultfd, memory verified) and `trace simulate` of the same trace on the same snapshot:
// faults and pages installed must agree within 2%. background is left out: what it installs
// depends on how long the guest is quiet, which a replay does not reproduce (docs/workbench.md).
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { mixedWorkload } from '../../src/bench/policies.js'
import { simulateTraces, traceCommand } from '../../src/cli/trace.js'
import { readPageMap } from '../../src/trace/page-map.js'
import { readTrace } from '../../src/trace/reader.js'
import { TraceRecorder } from '../../src/trace/recorder.js'
import { makeImage, runGuest, scratchDir, startServer, waitForEndedSessions } from './harness.js'

const MIB = 32
const TOLERANCE = 0.02

async function cli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '', stderr = ''
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
  const rec = new TraceRecorder({ path: half, pageSize: 4096, snapshotPages: recorded.header.snapshotPages, sessionId: 1, pid: 1, policy: 'ondemand', regions: recorded.header.regions })
  for (let i = 0; i < keep; i++) rec.record(recorded.timeNs[i], recorded.page[i], recorded.count[i], recorded.cause[i] as 0, recorded.flags[i], recorded.threadId[i], recorded.latencyNs[i])
  rec.close()
}

const POLICIES = ['ondemand', 'readahead', 'readahead:63', 'adaptive', 'adaptive:32', 'eager', `workingset:${trace}`, `workingset:${trace}@8`, `primed:${half}+4`]

t.test('simulated faults and pages installed agree with real replays within 2%', async t => {
  // The cost model prices the counts compared here, it does not change them: any valid one does.
  const costs = join(dir, 'costs.json')
  writeFileSync(costs, JSON.stringify({ model: { faultNs: 1, installNs: 1, copyPageNs: 1, zeroInstallNs: 1, zeroPageNs: 1, readNs: 1, decodePageNs: 1, byteNs: { warm: 0, cold: 0, remote: 0 }, remoteChunkNs: null } }))
  const sim = await simulateTraces([trace], POLICIES, { pageMap: readPageMap(img.snap), storage: 'warm', costs })
  for (const [i, policy] of POLICIES.entries()) {
    const real = await cli(['replay', trace, '--snapshot', img.snap, '--policy', policy, '--verify', img.raw])
    t.equal(real.code, 0, `${policy}: the replay ran and its memory verified: ${real.stderr}`)
    t.match(real.stdout, /pages verified\s+\d+ \(0 mismatches\)/)
    const faults = row(real.stdout, 'faults now')
    const installed = row(real.stdout, 'pages installed now')
    const s = sim.policies[i]
    t.ok(installed > 0, `${policy}: the replay installed ${installed} pages`)
    const close = (a: number, b: number) => Math.abs(a - b) <= TOLERANCE * Math.max(a, b)
    t.ok(close(s.faults, faults), `${s.policy}: ${s.faults} faults simulated, ${faults} real`)
    t.ok(close(s.pagesInstalled, installed), `${s.policy}: ${s.pagesInstalled} pages installed simulated, ${installed} real`)
    t.comment(`${s.policy}: faults ${s.faults} simulated / ${faults} real; pages installed ${s.pagesInstalled} / ${installed}`)
  }
  // Not trivially equal: the policies differ from each other.
  t.ok(new Set(sim.policies.map(p => p.faults)).size >= 5, `faults per policy: ${sim.policies.map(p => p.faults).join(', ')}`)
})
