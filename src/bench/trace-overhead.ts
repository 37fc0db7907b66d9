// `bench trace`: what recording a trace costs the fault path. The same workload runs against
// two servers in one process, one serving with --trace and one without, alternating, and the
// medians of fault service time and server CPU per fault are compared.
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { PageServer } from '../server/page-server.js'
import type { SessionStats } from '../server/session.js'
import { TraceRecorder } from '../trace/recorder.js'
import { runGuestProcess } from './guest.js'
import { ensureImage } from './resume.js'
import { BenchError } from './errors.js'

export interface TraceOverheadOptions {
  dir: string
  mib: number
  workload: string
  rounds: number
  seed: number
  policy: string
  /** Pin the guest to these CPUs (taskset -c). */
  guestCpus?: string
  onProgress?: (done: number, total: number) => void
}

export interface OverheadRun {
  faultP50Ns: number
  faultMeanNs: number
  cpuPerFaultNs: number
  workloadNs: number
  faults: number
}

export interface TraceOverheadResult {
  plain: OverheadRun[]
  traced: OverheadRun[]
  cpusAllowed: string
  /** The recorder alone: ns per record() call, one value per pass (flushes to disk included). */
  recordNs: number[]
}

/** Times TraceRecorder.record in this thread: `passes` passes of `records` calls each. */
export function measureRecordNs(path: string, passes = 7, records = 200_000): number[] {
  const rec = new TraceRecorder({ path, pageSize: 4096, snapshotPages: 1 << 24, sessionId: 1, pid: 0, policy: 'bench', regions: [] })
  const out: number[] = []
  try {
    for (let pass = 0; pass < passes; pass++) {
      const t0 = performance.now()
      for (let i = 0; i < records; i++) rec.record(i * 1731, (i * 7919) & 0xffffff, 1, 0, i & 1, 4242, 20_000 + (i & 4095))
      out.push(((performance.now() - t0) * 1e6) / records)
    }
  } finally {
    rec.close()
    rmSync(path, { force: true })
  }
  return out
}

/** CPUs this process may run on (Cpus_allowed_list), to say whether a run was pinned. */
export function cpusAllowed(): string {
  const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync('/proc/self/status', 'utf8'))
  return m ? m[1] : '?'
}

async function ended(server: PageServer, before: number): Promise<SessionStats> {
  const deadline = Date.now() + 60_000
  while (server.ended.length === before) {
    if (Date.now() > deadline) throw new BenchError('a session did not end within 60 s of its guest exiting')
    await new Promise(r => setTimeout(r, 2))
  }
  const rec = server.ended[server.ended.length - 1]
  if (!rec.stats) throw new BenchError(`session ${rec.id} failed: ${rec.error}`)
  return rec.stats
}

export async function runTraceOverhead(opts: TraceOverheadOptions): Promise<TraceOverheadResult> {
  const image = await ensureImage(opts.dir, opts.mib, opts.seed)
  const tracePath = join(opts.dir, 'overhead.fltrace')
  // A worker per run (warm-up included), all started now: none starts while a guest is measured.
  const workers = { warmWorkers: opts.rounds + 1, singleGuest: true }
  const plain = await PageServer.start({ snapshotPath: image.snap, socketPath: join(opts.dir, 'plain.sock'), policy: opts.policy, ...workers })
  const traced = await PageServer.start({ snapshotPath: image.snap, socketPath: join(opts.dir, 'traced.sock'), policy: opts.policy, tracePath, ...workers })
  const result: TraceOverheadResult = { plain: [], traced: [], cpusAllowed: cpusAllowed(), recordNs: measureRecordNs(join(opts.dir, 'recorder.fltrace')) }
  const args = ['--mib', String(opts.mib), '--workload', opts.workload, '--seed', String(opts.seed)]
  try {
    // A warm-up run against each, so neither pays for the first page-cache reads.
    for (const server of [plain, traced]) {
      const before = server.ended.length
      await runGuestProcess(['--socket', server.socketPath, ...args], { cpus: opts.guestCpus, timeoutMs: 600_000 })
      await ended(server, before)
    }
    for (let round = 0; round < opts.rounds; round++) {
      const order = round % 2 === 0 ? [plain, traced] : [traced, plain]
      for (const server of order) {
        const before = server.ended.length
        const r = await runGuestProcess(['--socket', server.socketPath, ...args], { cpus: opts.guestCpus, timeoutMs: 600_000 })
        const st = await ended(server, before)
        const run: OverheadRun = {
          faultP50Ns: st.latency.p50Ns,
          faultMeanNs: st.latency.meanNs,
          cpuPerFaultNs: st.cpuNs / Math.max(1, st.faults),
          workloadNs: r.workload_ns,
          faults: st.faults,
        }
        ;(server === plain ? result.plain : result.traced).push(run)
        opts.onProgress?.(round * 2 + (server === order[0] ? 1 : 2), opts.rounds * 2)
      }
    }
  } finally {
    await plain.close()
    await traced.close()
  }
  return result
}
