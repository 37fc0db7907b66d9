// `faultline bench remote`: local file vs object store (cold and warm cache), with and without
// prefetch, over emulated network round trips; argument parsing and the report only (the
// measurement is src/bench/remote.ts).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { UsageError } from '../errors.js'
import { writeSyntheticImage } from '../snapshot/synthetic-image.js'
import { createSnapshot } from '../snapshot/writer.js'
import { startCephCluster, type CephCluster } from '../bench/ceph-cluster.js'
import { runRemoteBench, type RemoteRun } from '../bench/remote.js'
import { createS3Client, parseS3Url, resolveS3Settings } from '../store/s3-config.js'
import { pushSnapshot } from '../store/upload.js'
import { Progress } from './progress.js'
import { formatTable, median } from '../util/format.js'
import { listOption } from './options.js'

export const BENCH_REMOTE_USAGE = `usage: faultline bench remote [options]

Resumes the native guest from a synthetic snapshot as a local file and from the same snapshot
in S3 (cold chunk cache, then warm: a second guest on the same server), per policy, directly
and through a loopback proxy adding each --rtt; pinned to one CPU (taskset: the guest and every
thread of the server) and unpinned; rounds interleaved. Reports medians and ratios to the local
file in DIR/remote.md and DIR/remote.json. Without an endpoint (--endpoint, AWS_ENDPOINT_URL_S3
or AWS_ENDPOINT_URL) it starts a throwaway Ceph cluster (scripts/ceph/start.sh) and stops it.

  --mib N            guest RAM and image size (default 32)
  --workload LIST    guest workloads (default random:0.25,sequential)
  --policies LIST    policies (default ondemand,readahead:128)
  --rtt LIST         emulated round trips in ms; 0 = straight to the store (default 0,1,10)
  --rounds N         rounds (default 3)
  --cpu N            CPU for the pinned runs (default 0)
  --pin MODE         both, yes or no (default both)
  --concurrency N    the store's GETs in flight (default 8)
  --endpoint URL     S3 endpoint (keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)
  --out DIR          where results go (default bench-results)
  --seed N           image seed (default 1)`

function list(name: string, text: string): string[] {
  const items = listOption(text)
  if (items.length === 0) throw new UsageError(`--${name}: expected a comma-separated list, got '${text}'`)
  return items
}

function whole(name: string, text: string, min = 1): number {
  const n = Number(text)
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name}: expected a whole number >= ${min}, got '${text}'`)
  return n
}

export async function benchRemoteCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      mib: { type: 'string', default: '32' },
      workload: { type: 'string', default: 'random:0.25,sequential' },
      policies: { type: 'string', default: 'ondemand,readahead:128' },
      rtt: { type: 'string', default: '0,1,10' },
      rounds: { type: 'string', default: '3' },
      cpu: { type: 'string', default: '0' },
      pin: { type: 'string', default: 'both' },
      concurrency: { type: 'string', default: '8' },
      endpoint: { type: 'string' },
      out: { type: 'string', default: 'bench-results' },
      seed: { type: 'string', default: '1' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    console.log(BENCH_REMOTE_USAGE)
    return 0
  }
  const mib = whole('mib', values.mib!)
  const rounds = whole('rounds', values.rounds!)
  const concurrency = whole('concurrency', values.concurrency!)
  const seed = whole('seed', values.seed!, 0)
  const rttsMs = list('rtt', values.rtt!).map(r => {
    const n = Number(r)
    if (!(n >= 0)) throw new UsageError(`--rtt: '${r}' is not a number of ms`)
    return n
  })
  if (!/^\d+$/.test(values.cpu!)) throw new UsageError(`--cpu: expected one CPU number, got '${values.cpu}'`)
  const pinModes = { both: [true, false], yes: [true], no: [false] }[values.pin as 'both' | 'yes' | 'no']
  if (!pinModes) throw new UsageError(`--pin: expected both, yes or no, got '${values.pin}'`)

  const workDir = mkdtempSync(join(tmpdir(), 'fl-bench-remote-'))
  let ceph: CephCluster | undefined
  try {
    const raw = join(workDir, 'mem.raw'),
      snap = join(workDir, 'mem.snap')
    writeSyntheticImage(raw, mib * 2 ** 20, { seed })
    await createSnapshot(raw, snap)
    let env: NodeJS.ProcessEnv = process.env
    let settings = resolveS3Settings({ endpoint: values.endpoint }, env)
    if (settings.endpoint === undefined) {
      console.error('bench remote: no S3 endpoint given: starting a Ceph cluster (scripts/ceph/start.sh)')
      ceph = await startCephCluster()
      env = { ...process.env, ...ceph.env }
      settings = resolveS3Settings({}, env)
    }
    const url = `s3://faultline-bench/mem-${mib}m-${seed}.snap`
    const client = createS3Client(settings)
    try {
      await pushSnapshot(snap, parseS3Url(url), client, { createBucket: true })
    } finally {
      client.destroy()
    }
    const progress = new Progress('remote bench runs', 1)
    const runs = await runRemoteBench({
      snapshotPath: snap,
      rawPath: raw,
      url,
      endpoint: settings.endpoint!,
      env: { ...env, AWS_ENDPOINT_URL_S3: settings.endpoint },
      mib,
      workloads: list('workload', values.workload!),
      policies: list('policies', values.policies!),
      rttsMs,
      rounds,
      cpu: values.cpu,
      pinModes,
      workDir,
      concurrency,
      onRun: progress.update,
    })
    progress.done()
    const command = `faultline bench remote ${argv.join(' ')}`.trim()
    const md = renderRemoteBench(runs, { command, mib, rounds, cpu: values.cpu!, concurrency })
    const outDir = resolve(values.out!)
    mkdirSync(outDir, { recursive: true })
    writeFileSync(join(outDir, 'remote.json'), JSON.stringify({ command, runs }, null, 1) + '\n')
    writeFileSync(join(outDir, 'remote.md'), md)
    console.log(md)
    return runs.every(r => r.mismatches === 0) ? 0 : 1
  } finally {
    ceph?.stop()
    rmSync(workDir, { recursive: true, force: true })
  }
}

export interface RemoteSummaryRow {
  pinned: boolean
  workload: string
  policy: string
  source: RemoteRun['source']
  rttMs: number
  workloadNs: number
  vsLocal: number
  faultP50Ns: number
  faultP99Ns: number
  remoteWaits: number
  gets: number
  getP50Ms: number
  bytesFetched: number
  /** Fetched bytes over the stored bytes of the touched pages (compressed read amplification). */
  fetchedPerNeeded: number
  /** Fetched bytes over the raw bytes of the touched pages. */
  fetchedPerTouched: number
}

/** Medians per cell; ratios to the local file under the same pinning, workload and policy. */
export function summarizeRemoteBench(runs: RemoteRun[]): RemoteSummaryRow[] {
  const groups = new Map<string, RemoteRun[]>()
  for (const r of runs) {
    const key = JSON.stringify([r.pinned, r.workload, r.policy, r.source, r.rttMs])
    const g = groups.get(key)
    if (g) g.push(r)
    else groups.set(key, [r])
  }
  const rows: RemoteSummaryRow[] = []
  for (const g of groups.values()) {
    const r0 = g[0]
    const localPolicy = r0.source === 'warm-small' ? 'ondemand' : r0.policy
    const local = runs.filter(r => r.source === 'local' && r.pinned === r0.pinned && r.workload === r0.workload && r.policy === localPolicy)
    const workloadNs = median(g.map(r => r.workloadNs))
    rows.push({
      pinned: r0.pinned,
      workload: r0.workload,
      policy: r0.policy,
      source: r0.source,
      rttMs: r0.rttMs,
      workloadNs,
      vsLocal: workloadNs / median(local.map(r => r.workloadNs)),
      faultP50Ns: median(g.map(r => r.faultP50Ns)),
      faultP99Ns: median(g.map(r => r.faultP99Ns)),
      remoteWaits: median(g.map(r => r.remoteWaits)),
      gets: median(g.map(r => r.gets)),
      getP50Ms: median(g.map(r => r.getP50Ms)),
      bytesFetched: median(g.map(r => r.bytesFetched)),
      fetchedPerNeeded: median(g.map(r => r.bytesFetched / Math.max(1, r.neededStoredBytes))),
      fetchedPerTouched: median(g.map(r => r.bytesFetched / Math.max(1, r.pagesTouched * 4096))),
    })
  }
  return rows
}

export function renderRemoteBench(runs: RemoteRun[], o: { command: string; mib: number; rounds: number; cpu: string; concurrency: number }): string {
  const rows = summarizeRemoteBench(runs)
  const us = (ns: number) => (ns / 1000).toFixed(ns < 100_000 ? 1 : 0)
  const ms = (ns: number) => (ns / 1e6).toFixed(1)
  const sourceName = { local: 'local file', cold: 's3 cold cache', warm: 's3 warm cache', 'warm-small': 's3 warm, small cache' }
  const out = [
    `Command: \`${o.command}\``,
    '',
    `${o.mib} MiB guest, ${o.rounds} rounds, medians; ${o.concurrency} GETs in flight at most; pinned = the guest and every ` +
      `thread of the server on CPU ${o.cpu} (taskset), radosgw unpinned. RTT = round trip added by the delay proxy (0: straight ` +
      'to radosgw on loopback). Warm = a second guest from the same server (its chunk cache holds what the first fetched); ' +
      'small cache = half the bytes the first guest needed.',
    '',
    formatTable(
      [
        'pinned',
        'workload',
        'policy',
        'source',
        'RTT ms',
        'workload ms',
        'vs local',
        'fault p50 µs',
        'fault p99 µs',
        'faults waited',
        'GETs',
        'GET p50 ms',
        'fetched KiB',
        'fetched / needed',
        'fetched / touched',
      ],
      rows.map(r => [
        r.pinned ? 'yes' : 'no',
        r.workload,
        r.policy,
        sourceName[r.source],
        r.source === 'local' ? '-' : String(r.rttMs),
        ms(r.workloadNs),
        `${r.vsLocal.toFixed(2)}x`,
        us(r.faultP50Ns),
        us(r.faultP99Ns),
        String(r.remoteWaits),
        String(r.gets),
        r.gets > 0 ? r.getP50Ms.toFixed(1) : '-',
        (r.bytesFetched / 1024).toFixed(0),
        r.source === 'local' ? '-' : r.fetchedPerNeeded.toFixed(2),
        r.source === 'local' ? '-' : r.fetchedPerTouched.toFixed(2),
      ]),
      { markdown: true },
    ),
    '',
    'fetched / needed: chunk bytes fetched over the stored (compressed) bytes of the pages the guest touched, the read ' +
      "amplification of 64-page chunks; fetched / touched: over the raw bytes the guest touched. Fault p50/p99: the server's " +
      'service time of a fault, waits for the store included.',
    '',
  ]
  return out.join('\n')
}
