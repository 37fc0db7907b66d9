#!/usr/bin/env node
// `npm run profile`: runs the page server under clinic flame on the demo workload (512 MiB
// guest, random 25%), and since the fault loop runs in a worker thread clinic does not see,
// also under V8's --cpu-prof, whose per-thread profile of the session worker is summarised
// here (self time by function). --heap adds V8's sampling heap profiler over the session
// (FAULTLINE_HEAP_PROFILE) and summarises what the fault loop allocates, by function. Needs a
// build (npm run build) and root (userfaultfd).
//   node scripts/profile.js [--mib N] [--workload W] [--out DIR] [--no-clinic] [--heap] [--ffi koffi|ffi-napi]
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '512' },
    workload: { type: 'string', default: 'random:0.25' },
    out: { type: 'string', default: join(ROOT, 'bench-results/profile') },
    'no-clinic': { type: 'boolean' },
    ffi: { type: 'string', default: 'koffi' },
    heap: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
})
if (values.help) {
  console.log('usage: npm run profile -- [--mib N] [--workload W] [--out DIR] [--no-clinic] [--heap] [--ffi koffi|ffi-napi]')
  process.exit(0)
}
const entry = join(ROOT, 'dist/bench/server-process.js')
if (!existsSync(entry)) {
  console.error(`profile: ${entry} is missing: run npm run build first`)
  process.exit(1)
}
const { ensureImage } = await import(join(ROOT, 'dist/bench/resume.js'))
const { runGuestProcess } = await import(join(ROOT, 'dist/bench/guest.js'))

const out = resolve(values.out)
const profDir = join(out, 'cpuprofile')
const heapDir = join(out, 'heapprofile')
for (const d of [profDir, heapDir]) {
  rmSync(d, { recursive: true, force: true })
  mkdirSync(d, { recursive: true })
}
const mib = Number(values.mib)
const image = await ensureImage(join(ROOT, '.cache/bench-images'), mib, 1)
const socket = join(out, 'profile.sock')

const nodeArgs = [`--cpu-prof`, `--cpu-prof-dir=${profDir}`, entry, image.snap, socket, 'ondemand']
const clinic = join(ROOT, 'node_modules/.bin/clinic')
const [file, args] = values['no-clinic'] ? [process.execPath, nodeArgs] : [clinic, ['flame', '--dest', out, '--', process.execPath, ...nodeArgs]]
console.error(`profile: ${file === clinic ? 'clinic flame' : 'node --cpu-prof'} on ${mib} MiB, workload ${values.workload}`)
const server = spawn(file, args, {
  stdio: ['ignore', 'pipe', 'inherit'],
  env: {
    ...process.env,
    NO_INSIGHT: '1',
    FAULTLINE_FFI: values.ffi,
    ...(values.heap ? { FAULTLINE_HEAP_PROFILE: join(heapDir, 'session') } : {}),
  },
})
let stdout = ''
server.stdout.setEncoding('utf8').on('data', s => {
  stdout += s
})
const exited = new Promise(r => server.on('close', r))
while (!stdout.includes('"event":"ready"')) {
  if (server.exitCode !== null) {
    console.error('profile: the server exited before listening')
    process.exit(1)
  }
  await new Promise(r => setTimeout(r, 10))
}
const guest = await runGuestProcess(['--socket', socket, '--mib', String(mib), '--workload', values.workload, '--verify', image.raw])
await exited
const ended = stdout
  .split('\n')
  .filter(l => l.startsWith('{'))
  .map(l => JSON.parse(l))
  .find(m => m.event === 'ended')
console.log(
  `guest: ${guest.pages_touched} pages touched, ${guest.verified_pages} verified, ${guest.mismatches} mismatches; ` +
    `workload ${(guest.workload_ns / 1e6).toFixed(1)} ms; server faults ${ended?.stats?.faults}`,
)

// The session worker's profile: the one with the most non-idle samples.
const profiles = readdirSync(profDir)
  .filter(f => f.endsWith('.cpuprofile'))
  .map(f => {
    const p = JSON.parse(readFileSync(join(profDir, f), 'utf8'))
    const byId = new Map(p.nodes.map(n => [n.id, n]))
    const self = new Map()
    let busy = 0
    p.samples.forEach((id, i) => {
      const n = byId.get(id)
      const name = n.callFrame.functionName || '(anonymous)'
      if (name === '(idle)' || name === '(program)') return
      const where = n.callFrame.url ? `${name} ${n.callFrame.url.replace(/^file:\/\/.*\/(dist|node_modules)\//, '$1/')}:${n.callFrame.lineNumber + 1}` : name
      const us = p.timeDeltas[i] ?? 0
      self.set(where, (self.get(where) ?? 0) + us)
      busy += us
    })
    return { f, self, busy }
  })
  .sort((a, b) => b.busy - a.busy)
const worker = profiles[0]
const lines = [
  `Session worker (${worker.f}): ${(worker.busy / 1000).toFixed(1)} ms of samples, ` +
    `${ended?.stats?.faults ? (worker.busy / ended.stats.faults).toFixed(2) : '?'} µs a fault; self time by function:`,
  '',
]
for (const [where, us] of [...worker.self].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
  lines.push(`${((100 * us) / worker.busy).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(1).padStart(8)} ms  ${where}`)
}
const summary = lines.join('\n') + '\n'
writeFileSync(join(out, 'worker-self-time.txt'), summary)
console.log(summary)
console.log(`profiles in ${profDir}${file === clinic ? `; clinic flame's HTML in ${out} (main thread only: workers are not sampled by it)` : ''}`)

if (values.heap) {
  // Self bytes by function (inlined frames count as their own), over every sample of the run.
  const file = readdirSync(heapDir).find(f => f.endsWith('.heapprofile'))
  if (!file) {
    console.error('profile: the session wrote no heap profile')
    process.exit(1)
  }
  const { head } = JSON.parse(readFileSync(join(heapDir, file), 'utf8'))
  const self = new Map()
  let total = 0
  const walk = n => {
    const f = n.callFrame
    const where = `${f.functionName || '(anonymous)'} ${f.url.replace(/^file:\/\/.*\/(dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}`
    if (n.selfSize) {
      self.set(where, (self.get(where) ?? 0) + n.selfSize)
      total += n.selfSize
    }
    for (const c of n.children) walk(c)
  }
  walk(head)
  const faults = ended?.stats?.faults
  const heapLines = [
    `Session worker allocations (${file}, objects the GC already collected included): ${(total / 1024).toFixed(0)} KiB, ` +
      `${faults ? (total / faults).toFixed(1) : '?'} bytes a fault over the whole session; by function:`,
    '',
  ]
  for (const [where, bytes] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    heapLines.push(`${((100 * bytes) / total).toFixed(1).padStart(5)}%  ${(bytes / 1024).toFixed(1).padStart(8)} KiB  ${where}`)
  }
  const heapSummary = heapLines.join('\n') + '\n'
  writeFileSync(join(out, 'worker-allocations.txt'), heapSummary)
  console.log(heapSummary)
}
