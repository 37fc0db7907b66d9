// `faultline demo` (npm start): builds a synthetic memory image and its snapshot, then resumes
// the native guest three ways in one run (eager read, mmap of the raw image, faultline on
// demand) and prints the comparison, with every touched page verified against the image.
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { runGuestProcess } from '../bench/guest.js'
import { UsageError } from '../errors.js'
import { PageServer } from '../server/page-server.js'
import { writeSyntheticImage } from '../snapshot/synthetic-image.js'
import { createSnapshot } from '../snapshot/writer.js'
import { Progress } from './progress.js'
import { formatBytes, formatTable, median, ms } from '../util/format.js'
import { BenchError } from '../bench/errors.js'

export const DEMO_USAGE = `usage: faultline demo [--mib N] [--workload W] [--repeat N] [--dir DIR]

  --mib N         guest RAM and image size in MiB (default 512)
  --workload W    guest workload: random:FRACTION, sequential[:FRACTION] (default random:0.25)
  --repeat N      runs of each mode; the table shows medians (default 3)
  --policy P      faultline's fault policy (default ondemand)
  --dir DIR       keep the image and snapshot in DIR (default: a temporary directory, removed)`

interface ModeResult { resume: number[]; first: number[]; workload: number[]; total: number[]; served: number[]; bytesRead: number[]; verified: number; mismatches: number }

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      mib: { type: 'string', default: '512' }, workload: { type: 'string', default: 'random:0.25' },
      repeat: { type: 'string', default: '3' }, policy: { type: 'string', default: 'ondemand' },
      dir: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) { console.log(DEMO_USAGE); return 0 }
  const mib = Number(values.mib)
  if (!Number.isInteger(mib) || mib < 1 || mib > 65536) throw new UsageError(`--mib: expected a whole number of MiB from 1 to 65536, got '${values.mib}'`)
  const repeat = Number(values.repeat)
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > 100) throw new UsageError(`--repeat: expected 1..100, got '${values.repeat}'`)
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
  console.log(`image: ${formatBytes(bytes)} synthetic guest RAM -> snapshot ${formatBytes(snapBytes)} ` +
    `(ratio ${(bytes / snapBytes).toFixed(2)}; ${h.zeroPages} zero, ${h.lz4Pages} lz4, ${h.rawPages} raw pages)`)
  console.log(`guest: ${mib} MiB, workload ${workload}, ${repeat} run(s) of each mode, warm page cache, medians\n`)

  const socket = join(dir, 'faultline.sock')
  const server = await PageServer.start({ snapshotPath: snap, socketPath: socket, policy })
  const modes = ['eager', 'mmap', `faultline ${policy}`]
  const results: ModeResult[] = modes.map(() => ({ resume: [], first: [], workload: [], total: [], served: [], bytesRead: [], verified: 0, mismatches: 0 }))
  const common = ['--mib', String(mib), '--workload', workload, '--verify', raw]
  const progress = new Progress('resume runs', repeat * modes.length)
  try {
    for (let run = 0; run < repeat; run++) {
      // Interleave the modes so drift in machine load hits all of them alike.
      for (let m = 0; m < modes.length; m++) {
        const args = m === 0 ? ['--source', `eager:${raw}`, ...common]
          : m === 1 ? ['--source', `mmap:${raw}`, ...common]
          : ['--socket', socket, ...common]
        const ended = server.ended.length
        const r = await runGuestProcess(args)
        const res = results[m]
        res.resume.push(r.resume_ns); res.first.push(r.first_access_ns ?? NaN); res.workload.push(r.workload_ns); res.total.push(r.total_ns)
        res.verified += r.verified_pages; res.mismatches += r.mismatches
        if (m === 0) { res.served.push(bytes / 4096); res.bytesRead.push(bytes) }
        else if (m === 1) { res.served.push(r.pages_touched); res.bytesRead.push(NaN) }
        else {
          while (server.ended.length === ended) await new Promise(r2 => setTimeout(r2, 5))
          const st = server.ended[server.ended.length - 1].stats
          if (!st) throw new BenchError(`faultline session failed: ${server.ended[server.ended.length - 1].error}`)
          res.served.push(st.pagesInstalled[0] + st.pagesInstalled[1] + st.pagesInstalled[2])
          res.bytesRead.push(st.bytesRead)
        }
        progress.update(run * modes.length + m + 1)
      }
    }
  } finally {
    progress.done()
    await server.close()
  }
  const mmapTotal = median(results[1].total)
  const rows = modes.map((name, i) => {
    const r = results[i]
    const read = median(r.bytesRead)
    return [name, ms(median(r.resume)), ms(median(r.first)), ms(median(r.workload)), ms(median(r.total)),
      `${(median(r.total) / mmapTotal).toFixed(2)}x`, Math.round(median(r.served)),
      Number.isNaN(read) ? 'page cache' : formatBytes(read)]
  })
  console.log(formatTable(['mode', 'resume ms', 'first access ms', 'workload ms', 'total ms', 'vs mmap', 'pages served', 'read from storage'], rows))
  const verified = results.reduce((s, r) => s + r.verified, 0)
  const mismatches = results.reduce((s, r) => s + r.mismatches, 0)
  console.log(`\nmemory verified: ${verified} touched pages compared with the raw image across all runs, ${mismatches} mismatches`)
  console.log('resume = until the guest can run; first access = until its first touched page is readable; total = resume + workload')
  return mismatches === 0 ? 0 : 1
}
