#!/usr/bin/env node
// Records the real-program traces in traces/vm/: builds the programs guest
// (build-image.sh --programs), boots it under QEMU (TCG) with its RAM in a shared file,
// snapshots it idle with `faultline vm snapshot --qmp`, then resumes that snapshot once per
// program run with `faultline vm resume --policy ondemand --trace` (so every first touch is a
// fault), asks the guest to run the program, and stops QEMU when the guest says it is done.
// The boot traces resume a VM snapshotted before its first instruction (-S): the guest kernel
// boots from reset to its shell with every page served by faultline.
//
// usage: node scripts/vm/record-traces.mjs [--out traces/vm] [--work .cache/record]
//                                          [--ram 512] [--only NAME,...] [--keep]
// Needs `npm run build` first, root (userfaultfd), and the packages build-image.sh names.
// Run it under `nice -n 10` on a shared machine: it is a few minutes of TCG.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { gzipSync } from 'node:zlib'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const CLI = join(REPO, 'dist/cli/main.js')
const { values } = parseArgs({
  options: {
    out: { type: 'string', default: join(REPO, 'traces/vm') },
    work: { type: 'string', default: join(REPO, '.cache/record') },
    image: { type: 'string', default: join(REPO, '.cache/vm-programs') },
    ram: { type: 'string', default: '512' },
    only: { type: 'string' },
    keep: { type: 'boolean' },
  },
})
const RAM_MIB = Number(values.ram)
if (!Number.isInteger(RAM_MIB) || RAM_MIB < 256)
  fail(`--ram ${values.ram}: expected a whole number of MiB, at least 256 (the initramfs holds ~90 MiB of programs)`)
const out = resolve(values.out),
  work = resolve(values.work),
  imageDir = resolve(values.image)
if (!existsSync(CLI)) fail(`${CLI}: not built: run npm run build`)

/** Every recorded run: its snapshot, what the guest is asked, how long it stays idle first. */
const RUNS = [
  {
    name: 'boot-1',
    snapshot: 'boot',
    append: 'fl.task=boot',
    what: 'the guest kernel boots from reset to its shell (quiet console) and runs one command in it',
  },
  {
    name: 'boot-2',
    snapshot: 'boot',
    append: 'fl.task=boot loglevel=7',
    drop: 'quiet',
    what: 'the same boot with every kernel message printed on the serial console (loglevel=7)',
  },
  { name: 'xz-1', snapshot: 'ready', what: 'xz -2 compresses /usr/bin/python3.11 (6.5 MiB)' },
  { name: 'xz-2', snapshot: 'ready', what: 'xz -2 compresses libsqlite3.so.0 and ld-linux (1.6 MiB)' },
  { name: 'sqlite-1', snapshot: 'ready', what: 'sqlite3 builds a 20000-row table in a file database and aggregates it' },
  { name: 'sqlite-2', snapshot: 'ready', what: 'sqlite3 builds two tables, an index, and runs a join and a range query' },
  { name: 'python-1', snapshot: 'ready', what: 'python3 starts and imports json, re, collections, then counts words' },
  { name: 'python-2', snapshot: 'ready', what: 'python3 starts and imports email, http.client, xml.etree, decimal, datetime' },
  { name: 'gcc-1', snapshot: 'ready', what: 'gcc -O2 -c compiles native/vm-guest/workload.c' },
  { name: 'gcc-2', snapshot: 'ready', what: 'gcc -O0 -g -c compiles native/vm-guest/programs/src/sieve.c' },
  {
    name: 'service-1',
    snapshot: 'ready',
    idleMs: 5000,
    what: 'the idle service (a 120000-entry Python catalogue loaded before the snapshot) sleeps 5 s after resume, then answers a burst of 3000 requests (seed 1)',
  },
  { name: 'service-2', snapshot: 'ready', idleMs: 5000, what: 'the same service, idle 5 s, then 3000 other requests (seed 2)' },
]
const only = values.only ? new Set(values.only.split(',')) : undefined
for (const n of only ?? []) if (!RUNS.some(r => r.name === n)) fail(`--only: unknown run '${n}' (${RUNS.map(r => r.name).join(', ')})`)
const runs = RUNS.filter(r => !only || only.has(r.name))

function fail(message) {
  console.error(`record-traces: ${message}`)
  process.exit(1)
}
function say(line) {
  console.error(`record-traces: ${line}`)
}

function run(cmd, args, what) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] })
  if (r.status !== 0) fail(`${what} failed (${cmd} ${args.join(' ')}: status ${r.status ?? r.signal})`)
}

function image() {
  const manifest = JSON.parse(readFileSync(join(imageDir, 'image.json'), 'utf8'))
  if (!manifest.programs) fail(`${imageDir}: not a programs image (build it with scripts/vm/build-image.sh --programs)`)
  return manifest
}

/** The QEMU command line both sides share; `ram` is the memory backend object. */
function qemuArgs(img, ram, append, drop, qmp) {
  const cmdline = `${img.cmdline
    .split(' ')
    .filter(w => w !== drop)
    .join(' ')} ${append}`
  return [
    'qemu-system-x86_64',
    '-name',
    'programs',
    '-accel',
    'tcg',
    '-machine',
    'pc,memory-backend=pc.ram',
    '-m',
    `${RAM_MIB}M`,
    '-smp',
    '1',
    '-object',
    ram,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-serial',
    'stdio',
    '-no-reboot',
    '-kernel',
    img.kernel,
    '-initrd',
    img.initrd,
    '-append',
    cmdline,
    '-qmp',
    `unix:${qmp},server=on,wait=off`,
  ]
}

/** Collects a child's output lines; `waitFor(re)` resolves with the first line matching. */
function watch(child, label) {
  const lines = []
  const waiters = []
  let partial = ''
  const onData = chunk => {
    partial += chunk.toString('utf8')
    let nl
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl).replace(/\r$/, '')
      partial = partial.slice(nl + 1)
      lines.push(line)
      if (/^FAULTLINE-|faultline vm:/.test(line)) say(`${label}: ${line}`)
      for (const w of [...waiters])
        if (w.re.test(line)) {
          waiters.splice(waiters.indexOf(w), 1)
          w.resolve(line)
        }
    }
  }
  child.stdout?.on('data', onData)
  child.stderr?.on('data', onData)
  const exited = new Promise(res => child.on('exit', (code, signal) => res({ code, signal })))
  return {
    lines,
    exited,
    waitFor(re, timeoutMs, what) {
      const seen = lines.find(l => re.test(l))
      if (seen) return Promise.resolve(seen)
      return new Promise((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`${label}: no ${what} within ${timeoutMs / 1000} s (last: ${lines.slice(-3).join(' | ')})`)), timeoutMs)
        waiters.push({
          re,
          resolve: l => {
            clearTimeout(timer)
            res(l)
          },
        })
        void exited.then(e => {
          clearTimeout(timer)
          rej(new Error(`${label}: exited (${e.signal ?? e.code}) before ${what} (last: ${lines.slice(-3).join(' | ')})`))
        })
      })
    },
  }
}

/** Sends `quit` over a QMP socket: QEMU exits at once, the guest is not shut down. */
function qmpQuit(path) {
  return new Promise(res => {
    const s = connect(path)
    let sent = false
    s.on('data', () => {
      if (sent) return
      sent = true
      s.write('{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n')
    })
    s.on('error', () => res())
    s.on('close', () => res())
  })
}

/** Boots a source with RAM in a shared file and snapshots it into `dir`. `prelaunch`: never
 * let it run (-S): the snapshot of a machine before its first instruction. */
async function snapshot(name, img, prelaunch) {
  const dir = join(work, name)
  if (existsSync(join(dir, 'vm.json'))) {
    say(`snapshot ${name}: kept from before (${dir}; delete it to take it again)`)
    return dir
  }
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const qmp = join(work, `${name}-src.qmp`)
  rmSync(qmp, { force: true })
  const ramFile = join(dir, 'source-ram.img')
  const args = qemuArgs(
    img,
    `memory-backend-file,id=pc.ram,size=${RAM_MIB}M,mem-path=${ramFile},share=on`,
    prelaunch ? 'fl.task=boot' : 'fl.task=programs',
    undefined,
    qmp,
  )
  if (prelaunch) args.push('-S')
  say(`snapshot ${name}: ${prelaunch ? 'a QEMU stopped before its first instruction' : `booting the programs guest (${RAM_MIB} MiB, TCG) until it is idle`}`)
  const child = spawn('nice', ['-n', '10', ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  const w = watch(child, `source ${name}`)
  try {
    if (prelaunch) {
      while (!existsSync(qmp)) await new Promise(r => setTimeout(r, 50))
    } else {
      const line = await Promise.race([w.waitFor(/^FAULTLINE-(READY|ERROR)/, 900_000, 'FAULTLINE-READY')])
      if (line.startsWith('FAULTLINE-ERROR')) throw new Error(`source ${name}: ${line}`)
      // Let the guest settle into its idle loop (the service's last writes, the shell's read).
      await new Promise(r => setTimeout(r, 3000))
    }
    run('node', [CLI, 'vm', 'snapshot', '--dir', dir, '--qmp', qmp, '--quit'], `snapshot ${name}`)
    await w.exited
  } finally {
    child.kill('SIGKILL')
  }
  rmSync(ramFile, { force: true })
  return dir
}

/** Resumes `dir` under faultline (ondemand, traced), runs the program, stops QEMU. */
async function record(r, img, dir) {
  const trace = join(work, `${r.name}.fltrace`)
  const qmp = join(work, `${r.name}-dst.qmp`)
  rmSync(trace, { force: true })
  rmSync(qmp, { force: true })
  const qemu = qemuArgs(img, `memory-backend-ram,id=pc.ram,size=${RAM_MIB}M`, r.append ?? 'fl.task=programs', r.drop, qmp)
  // Anonymous RAM (FAULTLINE_MAP=anonymous for the shim): every first touch is a fault, so the
  // trace holds the whole access stream. Cache-mapped, the kernel would serve most pages itself.
  const child = spawn('nice', ['-n', '10', 'node', CLI, 'vm', 'resume', '--dir', dir, '--policy', 'ondemand', '--trace', trace, '--', ...qemu], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, FAULTLINE_MAP: 'anonymous' },
  })
  const w = watch(child, r.name)
  const started = Date.now()
  try {
    await w.waitFor(/faultline vm: .*: resumed \(pid/, 300_000, 'the resume')
    if (r.snapshot === 'ready') {
      if (r.idleMs) await new Promise(res => setTimeout(res, r.idleMs))
      child.stdin.write(`run ${r.name}\n`)
    }
    const done = await w.waitFor(/^FAULTLINE-(RAN|ERROR)/, 1_800_000, 'FAULTLINE-RAN')
    const m = /^FAULTLINE-RAN \S+ (\d+) (\d+)/.exec(done)
    if (m?.[1] !== '0') {
      // The guest prints the end of the program's output next.
      await new Promise(res => setTimeout(res, 2000))
      throw new Error(`${r.name}: the program failed: ${w.lines.slice(w.lines.indexOf(done)).join(' | ')}`)
    }
    r.guestMs = Number(m[2])
    await qmpQuit(qmp)
    const e = await w.exited
    const session = w.lines.find(l => /session ended/.test(l))
    if (!session) throw new Error(`${r.name}: the resume printed no session summary (exit ${e.signal ?? e.code}): ${w.lines.slice(-3).join(' | ')}`)
    r.session = session.replace(/^faultline vm: /, '')
    r.wallMs = Date.now() - started
  } finally {
    child.kill('SIGKILL')
  }
  return trace
}

mkdirSync(work, { recursive: true })
mkdirSync(out, { recursive: true })
run('sh', [join(REPO, 'scripts/vm/build-image.sh'), '--programs', imageDir], 'building the programs image')
const img = image()
const snapshots = {}
for (const name of new Set(runs.map(r => r.snapshot))) snapshots[name] = await snapshot(name, img, name === 'boot')
const manifestPath = join(out, 'manifest.json')
const manifest = existsSync(manifestPath) ? JSON.parse(readFileSync(manifestPath, 'utf8')) : { traces: [] }
for (const [name, dir] of Object.entries(snapshots)) {
  // The page map: which pages are zero and how many bytes each stores, for trace simulate.
  run(
    'node',
    [
      '--input-type=module',
      '-e',
      `import { pageMapFromSnapshot, writePageMap } from ${JSON.stringify(join(REPO, 'dist/trace/page-map.js'))}; writePageMap(pageMapFromSnapshot(${JSON.stringify(join(dir, 'mem.snap'))}), ${JSON.stringify(join(out, `${name}.pagemap.gz`))})`,
    ],
    `page map of ${name}`,
  )
}
for (const r of runs) {
  say(`${r.name}: ${r.what}`)
  const trace = await record(r, img, snapshots[r.snapshot])
  const gz = join(out, `${r.name}.fltrace.gz`)
  writeFileSync(gz, gzipSync(readFileSync(trace), { level: 9 }))
  const entry = {
    trace: `${r.name}.fltrace.gz`,
    pageMap: `${r.snapshot}.pagemap.gz`,
    program: r.name.replace(/-\d+$/, ''),
    run: Number(r.name.split('-').pop()),
    what: r.what,
    ramMiB: RAM_MIB,
    idleBeforeMs: r.idleMs ?? 0,
    guestMs: r.guestMs,
    session: r.session,
    recordedAt: new Date().toISOString(),
    traceBytes: statSync(trace).size,
    compressedBytes: statSync(gz).size,
  }
  manifest.traces = manifest.traces
    .filter(t => t.trace !== entry.trace)
    .concat(entry)
    .sort((a, b) => RUNS.findIndex(x => `${x.name}.fltrace.gz` === a.trace) - RUNS.findIndex(x => `${x.name}.fltrace.gz` === b.trace))
  writeFileSync(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`)
  if (!values.keep) rmSync(trace, { force: true })
  say(`${r.name}: ${entry.session}; ${gz} (${(entry.compressedBytes / 1024).toFixed(0)} KiB)`)
}
say(`done: ${runs.length} trace(s) in ${out}`)
