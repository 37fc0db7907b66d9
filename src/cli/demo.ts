// `faultline demo` (npm start): builds a synthetic memory image and its snapshot, then resumes
// the native guest four ways (eager read, mmap of the raw image, faultline with anonymous
// memory, faultline with its decoded cache mapped), first from files on disk (dropped from the
// page cache with fadvise), then hot, and prints both tables, every touched page verified.
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { runGuestProcess, type GuestReport } from '../bench/guest.js'
import { dropPageCache, warmPageCache } from '../bench/proc.js'
import { fillDecodedCache } from '../bench/resume.js'
import { startFaultlineServer, type ServerCost } from '../bench/servers.js'
import { UsageError } from '../errors.js'
import { codecNotice, pageCodecName } from '../snapshot/native-codec.js'
import { writeSyntheticImage } from '../snapshot/synthetic-image.js'
import { createSnapshot } from '../snapshot/writer.js'
import { Progress } from './progress.js'
import { formatBytes, formatTable, median, ms } from '../util/format.js'
import { BenchError } from '../bench/errors.js'

export const DEMO_USAGE = `usage: faultline demo [--mib N] [--workload W] [--repeat N] [--policy P] [--dir DIR]

Resumes the native guest from a synthetic snapshot four ways, every touched page verified
against the image: eager (read all of the raw image first), mmap (MAP_PRIVATE of the raw image:
the kernel's demand paging), faultline (anonymous memory, each page copied in on its fault) and
faultline-cache (the server's decoded cache mapped into the guest: only misses reach the
server). First cold, from files on disk (the files each mode reads dropped from the page cache
with fadvise; a fresh page server each run), then hot (page cache warm, and the server already served this snapshot to an
earlier guest, so its decoded cache holds every page).

  --mib N         guest RAM and image size in MiB (default 512)
  --workload W    guest workload: random:FRACTION, sequential[:FRACTION] (default random:0.25)
  --repeat N      runs of each mode and case, 1..20; the tables show medians (default 3)
  --policy P      faultline's fault policy (default background)
  --dir DIR       keep the image and snapshot in DIR (default: a temporary directory, removed)`

const MODES = ['eager', 'mmap', 'faultline', 'faultline-cache'] as const
type Mode = (typeof MODES)[number]
type Case = 'cold' | 'hot'

interface Samples {
  resume: number[]
  first: number[]
  workload: number[]
  total: number[]
  faults: number[]
  bytesRead: number[]
  verified: number
  mismatches: number
}

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      mib: { type: 'string', default: '512' },
      workload: { type: 'string', default: 'random:0.25' },
      repeat: { type: 'string', default: '3' },
      policy: { type: 'string', default: 'background' },
      dir: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) {
    console.log(DEMO_USAGE)
    return 0
  }
  const mib = Number(values.mib)
  if (!Number.isInteger(mib) || mib < 1 || mib > 65536) throw new UsageError(`--mib: expected a whole number of MiB from 1 to 65536, got '${values.mib}'`)
  const repeat = Number(values.repeat)
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > 20) throw new UsageError(`--repeat: expected 1..20, got '${values.repeat}'`)
  const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'faultline-demo-'))
  try {
    return await runDemo(dir, mib, values.workload!, repeat, values.policy!)
  } finally {
    if (!values.dir) rmSync(dir, { recursive: true, force: true })
  }
}

async function runDemo(dir: string, mib: number, workload: string, repeat: number, policy: string): Promise<number> {
  const raw = join(dir, 'mem.raw')
  const snap = join(dir, 'mem.snap')
  const bytes = mib * 2 ** 20
  const gen = new Progress(`image ${mib} MiB`, bytes)
  writeSyntheticImage(raw, bytes, { onProgress: gen.update })
  gen.done()
  const mk = new Progress('snapshot', bytes)
  const created = await createSnapshot(raw, snap, { onProgress: mk.update })
  mk.done()
  const h = created.header
  const snapBytes = statSync(snap).size
  const socket = join(dir, 'faultline.sock')
  console.log(
    `image: ${formatBytes(bytes)} synthetic guest RAM -> snapshot ${formatBytes(snapBytes)} ` +
      `(ratio ${(bytes / snapBytes).toFixed(2)}; ${h.zeroPages} zero, ${h.lz4Pages} lz4, ${h.rawPages} raw pages)`,
  )
  console.log(
    `guest: ${mib} MiB, workload ${workload}, ${repeat} run(s) of each mode, medians; faultline policy ${policy}; ` +
      `page codec ${pageCodecName}${codecNotice() ? ` (${codecNotice()})` : ''}`,
  )

  const common = ['--mib', String(mib), '--workload', workload, '--verify', raw]
  const fresh = (): Record<Mode, Samples> =>
    Object.fromEntries(
      MODES.map(m => [m, { resume: [], first: [], workload: [], total: [], faults: [], bytesRead: [], verified: 0, mismatches: 0 }]),
    ) as unknown as Record<Mode, Samples>
  const results: Record<Case, Record<Mode, Samples>> = { cold: fresh(), hot: fresh() }
  const progress = new Progress('resume runs', 2 * repeat * MODES.length)
  let runs = 0
  let cacheLine = ''
  // Faults: the guest's own (eager, mmap) or the server's; storage reads: the guest's and the
  // server process's (its session and its fill workers).
  const record = (c: Case, m: Mode, r: GuestReport, cost: ServerCost | undefined) => {
    const s = results[c][m]
    const faults = cost ? cost.faults : r.minflt + r.majflt
    const read = r.io_read_bytes + (cost?.readBytes ?? 0)
    s.resume.push(r.resume_ns)
    s.first.push(r.first_access_ns ?? NaN)
    s.workload.push(r.workload_ns)
    s.total.push(r.total_ns)
    s.faults.push(faults)
    s.bytesRead.push(read)
    s.verified += r.verified_pages
    s.mismatches += r.mismatches
    if (r.mismatches > 0) {
      progress.clear()
      console.error(`demo: ${m} ${c}: ${r.mismatches} touched pages differ from the image`)
    }
    progress.update(++runs)
  }
  const guestArgs = (m: Mode): string[] =>
    m === 'eager'
      ? ['--source', `eager:${raw}`, ...common]
      : m === 'mmap'
        ? ['--source', `mmap:${raw}`, ...common]
        : ['--socket', socket, '--map', m === 'faultline-cache' ? 'cache' : 'anonymous', ...common]

  try {
    // Cold: the seed's own case, a resume from files on disk. A fresh server each faultline run,
    // so its decoded cache starts empty; the files are dropped once it is up.
    for (let run = 0; run < repeat; run++) {
      for (const m of MODES) {
        const server = m.startsWith('faultline') ? await startFaultlineServer({ snapshotPath: snap, socketPath: socket, policy }) : undefined
        try {
          // The mode's own input goes; for faultline the raw image its check reads stays cached,
          // so that check is a comparison and not a second disk read.
          if (m.startsWith('faultline')) warmPageCache(raw)
          dropPageCache('fadvise', m.startsWith('faultline') ? [snap] : [raw, snap])
          const r = await runGuestProcess(guestArgs(m))
          if (m === 'faultline-cache' && r.map !== 'cache')
            throw new BenchError(`the server gave the guest anonymous memory, not its decoded cache (${server?.cacheDescription ?? 'none'})`)
          const cost = await server?.finish()
          cacheLine ||= server?.cacheDescription ?? ''
          record('cold', m, r, cost)
        } catch (err) {
          server?.kill()
          throw err
        }
      }
    }
    // Hot: page cache warm; for the faultline rows one server that served an earlier guest.
    warmPageCache(raw)
    warmPageCache(snap)
    const server = await startFaultlineServer({ snapshotPath: snap, socketPath: socket, policy, sessions: 1 + 2 * repeat })
    try {
      const decoded = await fillDecodedCache(server, mib)
      cacheLine = `${server.cacheDescription}; hot: ${formatBytes(decoded)} decoded in it before the hot runs`
      let sessions = 1
      for (let run = 0; run < repeat; run++) {
        for (const m of MODES) {
          const r = await runGuestProcess(guestArgs(m))
          record('hot', m, r, m.startsWith('faultline') ? await server.session(++sessions) : undefined)
        }
      }
      await server.finish()
    } catch (err) {
      server.kill()
      throw err
    }
  } finally {
    progress.done()
  }
  if (cacheLine) console.log(`decoded cache: ${cacheLine}`)
  const titles: Record<Case, string> = {
    cold: 'Cold: resume from files on disk (what each mode reads, the raw image or the snapshot, dropped from the page cache with fadvise before each run; a fresh page server each run)',
    hot: 'Hot: page cache warm, and the server already served this snapshot to an earlier guest (its decoded cache holds every page; for eager and mmap, hot is warm)',
  }
  for (const c of ['cold', 'hot'] as const) {
    const res = results[c]
    const mmapTotal = median(res.mmap.total)
    const rows = MODES.map(m => {
      const r = res[m]
      return [
        m === 'faultline' || m === 'faultline-cache' ? `${m} ${policy}` : m,
        ms(median(r.resume)),
        ms(median(r.first)),
        ms(median(r.workload)),
        ms(median(r.total)),
        `${(median(r.total) / mmapTotal).toFixed(2)}x`,
        Math.round(median(r.faults)),
        formatBytes(median(r.bytesRead)),
      ]
    })
    console.log(`\n${titles[c]}\n`)
    console.log(formatTable(['mode', 'resume ms', 'first access ms', 'workload ms', 'total ms', 'vs mmap', 'faults', 'read from storage'], rows))
  }
  const all = [...Object.values(results.cold), ...Object.values(results.hot)]
  const verified = all.reduce((s, r) => s + r.verified, 0)
  const mismatches = all.reduce((s, r) => s + r.mismatches, 0)
  console.log(`\nmemory verified: ${verified} touched pages compared with the raw image across all runs, ${mismatches} mismatches`)
  console.log(
    'resume = until the guest can run; first access = until its first touched page is readable; total = resume + workload; ' +
      'faults = taken by the guest (eager, mmap) or served by the page server (faultline); read from storage = page-cache misses of guest and server',
  )
  return mismatches === 0 ? 0 : 1
}
