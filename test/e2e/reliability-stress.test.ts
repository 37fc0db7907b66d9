// Under load: 16 guests at once with random workloads (threads, writes, both handshake
// forms, offsets), every touched page verified, then 16 more serving twice the faults. The
// server's resident memory is sampled throughout: what serving adds on top of the warm workers
// must not grow with the faults served, and stays within twice a session's preallocated
// buffers; every fault is accounted for.
import t from 'tap'
import type { Test } from '@tapjs/test'
import { join } from 'node:path'
import type { PageServer, SessionRecord } from '../../src/server/page-server.js'
import { MAX_RUN_BYTES } from '../../src/server/session.js'
import { spawn } from 'node:child_process'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { GUEST, makeImage, scratchDir, type GuestResult } from './harness.js'
import { rssBytes, startFastServer, waitFor } from './reliability-helpers.js'

const GUESTS = 16
const MIB = 32
/** How long each guest stays connected after its workload. */
const HOLD_MS = 1500

// This process's own heap moves by tens of MiB between two samples of its RSS: collected
// before each sample, it does not hide (or fake) what the sessions hold.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void
const settledRss = () => {
  gc()
  return rssBytes()
}
const PAGES = MIB * 256
const MB = 2 ** 20

interface Wave {
  /** This process before the server started, with its warm workers, and at its peak while serving. */
  idleRss: number
  warmRss: number
  peakRss: number
  /** This process with every session alive and every fault of the wave served. */
  heldRss: number
  sessions: SessionRecord[]
  faults: number
  touched: number
  ms: number
}

/** runGuest, calling `onReport` as soon as the guest prints its JSON line (before it exits). */
function runGuestHeld(args: string[], onReport: () => void): Promise<GuestResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(GUEST, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = '',
      stderr = '',
      reported = false
    child.stdout.on('data', d => {
      stdout += d
      if (!reported && stdout.includes('\n')) {
        reported = true
        onReport()
      }
    })
    child.stderr.on('data', d => {
      stderr += d
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), 300000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      let report: Record<string, any> | undefined
      try {
        report = JSON.parse(stdout.trim().split('\n').pop() ?? '')
      } catch {
        /* not JSON */
      }
      resolve({ code, signal, stdout, stderr, report })
    })
  })
}

async function wave(t: Test, server: PageServer, socket: string, raw: string, scale: number, seed0: number, idleRss: number): Promise<Wave> {
  const warmRss = settledRss()
  let heldRss = NaN,
    heldAt = 0
  let peakRss = warmRss
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, rssBytes())
  }, 50)
  const started = Date.now()
  const plans = Array.from({ length: GUESTS }, (_, i) => {
    const fraction = scale * (0.1 + 0.05 * (i % 5))
    const threads = 1 + (i % 4)
    // Each guest stays connected a while after its workload, so that every session is alive,
    // every fault served, when the wave's memory is sampled.
    const args = [
      '--socket',
      socket,
      '--mib',
      String(MIB / 2),
      '--workload',
      `random:${fraction.toFixed(3)}`,
      '--seed',
      String(seed0 + i),
      '--threads',
      String(threads),
      '--verify',
      raw,
      '--hold-ms',
      String(HOLD_MS),
    ]
    if (i % 3 === 0) args.push('--write')
    if (i % 4 === 1) args.push('--handshake', 'firecracker')
    if (i % 2 === 1) args.push('--offset', String((MIB / 2) * MB)) // the image's second half
    return { args, touched: Math.round(fraction * (PAGES / 2)) }
  })
  // Sampled once every guest has printed its result (all its faults served) and none has left.
  let allServed = 0
  const results = await Promise.all(
    plans.map(p =>
      runGuestHeld(p.args, () => {
        if (++allServed === GUESTS) {
          heldRss = settledRss()
          heldAt = Date.now()
        }
      }),
    ),
  )
  const ms = Date.now() - started
  t.ok(await waitFor(() => server.active.size === 0 && server.ended.length >= GUESTS, 30000), 'every session ended')
  clearInterval(sampler)
  t.ok(heldAt > 0 && heldAt < Date.now() - 0, 'memory was sampled with every guest served and still connected')
  peakRss = Math.max(peakRss, heldRss)
  let touched = 0
  for (const [i, r] of results.entries()) {
    t.equal(r.code, 0, `guest ${i}: ${r.stderr.trim()}`)
    t.equal(r.report?.verified_pages, plans[i].touched, `guest ${i}: verified every touched page`)
    t.equal(r.report?.mismatches, 0, `guest ${i}: no page differed`)
    touched += plans[i].touched
  }
  let faults = 0
  for (const s of server.ended) {
    t.equal(s.error, undefined, `session ${s.id}: no error`)
    t.equal(s.stats?.endReason, 'guest disconnected')
    faults += s.stats?.faults ?? 0
  }
  // ondemand installs exactly the pages touched, one fault each.
  t.equal(faults, touched, `${faults} faults served for ${touched} pages touched`)
  return { idleRss, warmRss, peakRss, heldRss, sessions: [...server.ended], faults, touched, ms }
}

t.test(`${GUESTS} guests at once, twice: all verified, memory bounded`, async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB, 12)
  const waves: Wave[] = []
  for (const [n, scale] of [
    [1, 1],
    [2, 2],
  ] as const) {
    // A fresh server each wave, with a worker ready for every guest (a worker per guest is the
    // design; starting 16 at once while guests wait would only measure worker start-up), and
    // none started while they run (singleGuest: no refill once one accepts), so the memory
    // measured while serving is the sessions' own.
    const socket = join(dir, `w${n}.sock`)
    const idleRss = settledRss()
    const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, warmWorkers: GUESTS, singleGuest: true })
    waves.push(await wave(t, server, socket, img.raw, scale, 100 * n, idleRss))
    await server.close()
  }
  const [w1, w2] = waves
  const mib = (b: number) => (b / MB).toFixed(1)
  // A worker's cost is what the pool adds; serving adds what the peak adds on top of it.
  const perWorker = (w: Wave) => (w.warmRss - w.idleRss) / GUESTS
  const perSession = (w: Wave) => Math.max(0, w.peakRss - w.warmRss) / GUESTS
  t.ok(w2.faults > 1.8 * w1.faults, `wave 2 served ${w2.faults} faults, wave 1 ${w1.faults}`)
  // What each session's worker holds after serving, less before, both after a full collection
  // (gc is exposed to the workers above): heap objects and ArrayBuffers, Buffers included. The
  // fault path allocates nothing that stays, so this must not grow with the faults served: a
  // leak of a page a fault would show as 4 KiB a fault here.
  let worst = 0
  const ended = waves.flatMap(w => w.sessions)
  for (const s of ended) {
    const retained = s.retainedBytes
    if (retained === undefined) {
      t.fail(`session ${s.id}: no retained-bytes figure (gc not exposed to the workers?)`)
      continue
    }
    const allowed = 64 * 1024 + 16 * (s.stats?.faults ?? 0)
    if (retained > allowed) t.fail(`session ${s.id}: its worker holds ${retained} bytes more after ${s.stats?.faults} faults (allowed ${allowed})`)
    worst = Math.max(worst, retained / Math.max(1, s.stats?.faults ?? 1))
  }
  t.pass(`${ended.length} sessions: none holds more after serving than before (worst ${worst.toFixed(1)} bytes a fault; allowed 64 KiB + 16 bytes a fault)`)
  t.comment(`serving adds ${mib(perSession(w1))} then ${mib(perSession(w2))} MiB a session at the peak`)
  // What a session allocates to serve is preallocated: its copy buffer (MAX_RUN_BYTES) and the
  // reader's run buffer; twice that, plus 2 MiB for the worker's young generation growing with
  // its allocation rate, bounds it whatever the number of faults.
  const bound = 2 * MAX_RUN_BYTES + 2 * MB
  t.ok(
    perSession(w1) <= bound && perSession(w2) <= bound,
    `serving costs at most ${mib(Math.max(perSession(w1), perSession(w2)))} MiB a session (bound ${mib(bound)} MiB)`,
  )
  t.comment(
    `stress: ${GUESTS} guests x 2 waves, every page verified; faults ${w1.faults} then ${w2.faults} in ${w1.ms} / ${w2.ms} ms; ` +
      `RSS idle ${mib(w1.idleRss)} MiB, +${GUESTS} warm workers ${mib(w1.warmRss)} MiB (${mib(perWorker(w1))} each), ` +
      `peak ${mib(w1.peakRss)} / ${mib(w2.peakRss)} MiB (+${mib(perSession(w1))} / +${mib(perSession(w2))} MiB a session while serving)`,
  )
})
