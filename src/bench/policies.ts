// `bench policies`: one workload under every built-in policy, side by side in one run. A first
// run under ondemand records the trace that workingset: and background:TRACE replay; then each
// round runs the guest once per policy (rotating the order), memory verified, and reads what
// it touched back from the guest (--touched-out); every server records a trace, so the pages
// installed but never touched are counted page by page, not inferred.
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { BUILTIN_POLICIES, createPolicy } from '../policy/registry.js'
import { PageServer } from '../server/page-server.js'
import type { SessionRecord } from '../server/page-server.js'
import { tracePathForSession } from '../trace/format.js'
import { readTrace } from '../trace/reader.js'
import { runGuestProcess, type GuestReport } from './guest.js'
import { ensureImage, type ImagePair } from './resume.js'
import { BenchError } from './errors.js'

export interface PolicyBenchOptions {
  /** Where the image, snapshot, recorded trace and sockets go. */
  dir: string
  mib: number
  /** `mixed` (sequential scans interleaved with random pages), or any guest --workload. */
  workload: string
  rounds: number
  seed: number
  /** Policy specs; default: every built-in (see defaultPolicySpecs). */
  policies?: string[]
  onProgress?: (done: number, total: number) => void
  onImageProgress?: (done: number, total: number) => void
}

export interface PolicyRun {
  totalNs: number
  resumeNs: number
  workloadNs: number
  faults: number
  pagesInstalled: number
  /** Pages installed that the guest never touched. */
  pagesUntouched: number
  serverCpuNs: number
  faultP50Ns: number
  verifiedPages: number
  mismatches: number
}

export interface PolicyBenchResult {
  image: ImagePair
  workload: string
  pagesTouched: number
  recordedTrace: string
  policies: string[]
  /** Each spec's policy name, arguments filled in (readahead -> readahead:15). */
  names: Record<string, string>
  runs: Record<string, PolicyRun[]>
}

/** A deterministic mixed workload over `pages` pages: four sequential scans advancing 16 pages
 * at a time in turn, with 4 random pages between turns (about 31% of the pages). */
export function mixedWorkload(pages: number, seed: number): number[] {
  let s = seed >>> 0 || 1
  const rand = () => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return s
  }
  const scanLength = Math.floor(pages / 16)
  const scans = [0, 1, 2, 3].map(k => Math.floor((pages * k) / 4) + (rand() % Math.max(1, Math.floor(pages / 4) - scanLength)))
  const done = [0, 0, 0, 0]
  const seen = new Uint8Array(pages)
  const order: number[] = []
  const touch = (p: number) => {
    if (!seen[p]) {
      seen[p] = 1
      order.push(p)
    }
  }
  while (done.some(d => d < scanLength)) {
    for (let k = 0; k < 4; k++) {
      for (let i = 0; i < 16 && done[k] < scanLength; i++) touch(scans[k] + done[k]++)
      for (let i = 0; i < 4; i++) touch(rand() % pages)
    }
  }
  return order
}

/** Every built-in policy, with the arguments the bench gives them. */
export function defaultPolicySpecs(recordedTrace: string): string[] {
  const specs: string[] = []
  for (const name of Object.keys(BUILTIN_POLICIES)) {
    if (name === 'workingset' || name === 'primed') specs.push(`${name}:${recordedTrace}`)
    else if (name === 'background') specs.push('background', `background:${recordedTrace}`)
    else specs.push(name)
  }
  return specs
}

function readTouched(path: string): Set<number> {
  const buf = readFileSync(path)
  const pages = new Set<number>()
  for (let at = 0; at + 4 <= buf.length; at += 4) pages.add(buf.readUInt32LE(at))
  return pages
}

async function endedSession(server: PageServer, before: number): Promise<SessionRecord & { stats: NonNullable<SessionRecord['stats']> }> {
  // The guest has exited: its session ends as soon as the worker sees the socket close.
  const deadline = Date.now() + 60_000
  while (server.ended.length === before) {
    if (Date.now() > deadline) throw new BenchError('a session did not end within 60 s of its guest exiting')
    await new Promise(r => setTimeout(r, 2))
  }
  const rec = server.ended[server.ended.length - 1]
  if (!rec.stats) throw new BenchError(`session ${rec.id} failed: ${rec.error}`)
  return rec as SessionRecord & { stats: NonNullable<SessionRecord['stats']> }
}

/** Pages a session's trace says were installed that the guest never touched. Throws if the
 * guest touched a page the trace never installed (the trace would be wrong). */
function untouchedPages(tracePath: string, touched: Set<number>, firstPage: number): number {
  const t = readTrace(tracePath)
  const installed = new Set<number>()
  for (let i = 0; i < t.length; i++) for (let p = t.page[i], end = p + t.count[i]; p < end; p++) installed.add(p - firstPage)
  for (const p of touched) {
    if (!installed.has(p)) throw new BenchError(`${tracePath}: the guest touched page ${p}, which the trace never installed`)
  }
  return installed.size - touched.size
}

export async function runPolicyBench(opts: PolicyBenchOptions): Promise<PolicyBenchResult> {
  const image = await ensureImage(opts.dir, opts.mib, opts.seed, opts.onImageProgress)
  const pages = (opts.mib * 2 ** 20) / 4096
  let workloadArg = opts.workload
  if (opts.workload === 'mixed') {
    const file = join(opts.dir, `mixed-${opts.mib}MiB-seed${opts.seed}.pages`)
    writeFileSync(file, mixedWorkload(pages, opts.seed).join('\n') + '\n')
    workloadArg = `pages:${file}`
  }
  const touchedFile = join(opts.dir, 'touched.bin')
  const guestArgs = (socket: string) => [
    '--socket',
    socket,
    '--mib',
    String(opts.mib),
    '--workload',
    workloadArg,
    '--seed',
    String(opts.seed),
    '--verify',
    image.raw,
    '--touched-out',
    touchedFile,
  ]

  // The recording run (also warms the page cache for every policy alike).
  const recordedTrace = join(opts.dir, 'recorded.fltrace')
  const recorder = await PageServer.start({
    snapshotPath: image.snap,
    socketPath: join(opts.dir, 'record.sock'),
    policy: 'ondemand',
    tracePath: recordedTrace,
    singleGuest: true,
  })
  let touched: Set<number>
  try {
    const before = recorder.ended.length
    const r = await runGuestProcess(guestArgs(recorder.socketPath), { timeoutMs: 600_000 })
    if (r.mismatches !== 0) throw new BenchError(`recording run: ${r.mismatches} pages differ from the image`)
    await endedSession(recorder, before)
    touched = readTouched(touchedFile)
  } finally {
    await recorder.close()
  }

  const policies = opts.policies ?? defaultPolicySpecs(recordedTrace)
  const servers = new Map<string, PageServer>()
  const runs: Record<string, PolicyRun[]> = {}
  const names: Record<string, string> = {}
  try {
    for (const [i, policy] of policies.entries()) {
      names[policy] = (await createPolicy(policy)).name
      // A worker per round, all started now: none starts while a measured guest runs.
      servers.set(
        policy,
        await PageServer.start({
          snapshotPath: image.snap,
          socketPath: join(opts.dir, `p${i}.sock`),
          policy,
          tracePath: join(opts.dir, `p${i}.fltrace`),
          warmWorkers: opts.rounds,
          singleGuest: true,
        }),
      )
      runs[policy] = []
    }
    const total = opts.rounds * policies.length
    let done = 0
    for (let round = 0; round < opts.rounds; round++) {
      // Rotate the order each round so load drift does not always favour the same policy.
      for (let k = 0; k < policies.length; k++) {
        const policy = policies[(k + round) % policies.length]
        const server = servers.get(policy)!
        const before = server.ended.length
        let report: GuestReport
        try {
          report = await runGuestProcess(guestArgs(server.socketPath), { timeoutMs: 600_000 })
        } catch (err) {
          throw new BenchError(`policy ${policy}: ${(err as Error).message}`, { cause: err })
        }
        const session = await endedSession(server, before)
        const st = session.stats
        const installed = st.pagesInstalled[0] + st.pagesInstalled[1] + st.pagesInstalled[2]
        const tracePath = tracePathForSession(join(opts.dir, `p${policies.indexOf(policy)}.fltrace`), session.id)
        const untouched = untouchedPages(tracePath, readTouched(touchedFile), 0)
        rmSync(tracePath)
        runs[policy].push({
          totalNs: report.total_ns,
          resumeNs: report.resume_ns,
          workloadNs: report.workload_ns,
          faults: st.faults,
          pagesInstalled: installed,
          pagesUntouched: untouched,
          serverCpuNs: st.cpuNs,
          faultP50Ns: st.latency.p50Ns,
          verifiedPages: report.verified_pages,
          mismatches: report.mismatches,
        })
        opts.onProgress?.(++done, total)
      }
    }
  } finally {
    await Promise.all([...servers.values()].map(s => s.close()))
  }
  return { image, workload: opts.workload, pagesTouched: touched.size, recordedTrace, policies, names, runs }
}
