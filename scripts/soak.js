// @ts-check
// Soak run of the page server (not part of `npm test`): for a bounded time, keeps several
// actors busy against one server: well-behaved guests with random workloads and memory
// actions (each verifying every page it touches), hostile clients sending malformed
// handshakes, and guests killed mid-workload. Then checks that nothing was lost: every good
// guest verified, every hostile input refused, every session ended, the server's descriptors
// and threads back where they started. Prints a summary; exits 1 if anything was lost.
//   npm run soak -- [--seconds 180] [--actors 6] [--seed 1] [--json]
// Runs the compiled code in dist/ (npm run build) and native/build/guest.
import { spawn } from 'node:child_process'
import { mkdtempSync, openSync, closeSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const GUEST = join(ROOT, 'native/build/guest')
const { PageServer } = await import(join(ROOT, 'dist/server/page-server.js'))
const { createSnapshot } = await import(join(ROOT, 'dist/snapshot/writer.js'))
const { writeSyntheticImage } = await import(join(ROOT, 'dist/snapshot/synthetic-image.js'))
const uffd = await import(join(ROOT, 'dist/uffd/index.js'))

const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '180' },
    actors: { type: 'string', default: '6' },
    seed: { type: 'string', default: '1' },
    mib: { type: 'string', default: '32' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
})
if (opts.help) {
  console.log('usage: node scripts/soak.js [--seconds 180] [--actors 6] [--seed 1] [--mib 32] [--json]')
  process.exit(0)
}
const SECONDS = positive('seconds'),
  ACTORS = positive('actors'),
  MIB = positive('mib')
let seed = positive('seed')

/** @param {'seconds' | 'actors' | 'seed' | 'mib'} name */
function positive(name) {
  const n = Number(opts[name])
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`soak: --${name}: expected a positive integer, got '${opts[name]}'`)
    process.exit(2)
  }
  return n
}

/** xorshift32 on the --seed: the same mix of actors for the same seed. */
function next() {
  seed ^= seed << 13
  seed >>>= 0
  seed ^= seed >>> 17
  seed ^= seed << 5
  seed >>>= 0
  return seed
}
/** @param {number} n */
const below = n => next() % n

const counts = {
  goodGuests: 0,
  goodVerified: 0,
  pagesVerified: 0,
  pagesCheckedAfterActions: 0,
  forkChildren: 0,
  hostileSent: 0,
  hostileRefused: 0,
  killed: 0,
  killedAfterFinishing: 0,
  sessions: 0,
  faultsServed: 0,
  sessionErrors: 0,
  rejectedByServer: 0,
  /** @type {string[]} */ lost: [],
}

const dir = mkdtempSync(join(tmpdir(), 'fl-soak-'))
const raw = join(dir, 'mem.raw'),
  snap = join(dir, 'mem.snap'),
  socket = join(dir, 's.sock')
writeSyntheticImage(raw, MIB * 2 ** 20, { seed: 7 })
await createSnapshot(raw, snap)
const fdCount = () => readdirSync('/proc/self/fd').length
const threadCount = () => readdirSync('/proc/self/task').length
const rssMiB = () => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'latin1'))?.[1] ?? NaN) / 1024

const server = await PageServer.start({ snapshotPath: snap, socketPath: socket, warmWorkers: 3, handshakeTimeoutMs: 1000 })
/** @type {string[]} */
const serverLog = []
server.on('log', (/** @type {string} */ l) => serverLog.push(l))
server.on('rejected', () => {
  counts.rejectedByServer++
})
server.on('ended', (/** @type {any} */ rec) => {
  counts.sessions++
  counts.faultsServed += rec.stats?.faults ?? 0
  if (rec.error) {
    counts.sessionErrors++
    counts.lost.push(`session ${rec.id}: ${rec.error}`)
  }
})
// The baseline: after one guest, with the pool warm again and the counts steady (each
// worker's event loop holds a few descriptors while it starts and ends).
await runGuest(['--workload', 'random:0.01'])
await settle(() => server.active.size === 0, 10000)
const fds0 = await steady(fdCount),
  threads0 = await steady(threadCount),
  rss0 = rssMiB()
let rssPeak = rss0

/** @param {() => boolean} cond @param {number} ms */
async function settle(cond, ms) {
  const deadline = Date.now() + ms
  while (!cond() && Date.now() < deadline) await new Promise(r => setTimeout(r, 50))
  return cond()
}

/** The value of `count` once it has not changed for a second (or after 30 s). @param {() => number} count */
async function steady(count) {
  const deadline = Date.now() + 30000
  let value = count(),
    since = Date.now()
  while (Date.now() - since < 1000 && Date.now() < deadline) {
    await new Promise(r => setTimeout(r, 100))
    const v = count()
    if (v !== value) {
      value = v
      since = Date.now()
    }
  }
  return value
}

/** @param {string[]} args @param {number} [killAfterMs] */
function runGuest(args, killAfterMs) {
  return new Promise(resolvePromise => {
    const child = spawn(GUEST, ['--socket', socket, '--mib', String(MIB / 2), '--verify', raw, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = '',
      err = ''
    child.stdout.on('data', d => {
      out += d
    })
    child.stderr.on('data', d => {
      err += d
    })
    const hang = setTimeout(() => child.kill('SIGKILL'), 120000)
    const kill = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs)
    child.on('close', (code, signal) => {
      clearTimeout(hang)
      if (kill) clearTimeout(kill)
      /** @type {any} */
      let report
      try {
        report = JSON.parse(out.trim().split('\n').pop() ?? '')
      } catch {
        /* none */
      }
      resolvePromise({ code, signal, err, report, hung: signal === 'SIGKILL' && killAfterMs === undefined })
    })
  })
}

const PAGES = (MIB / 2) * 256
async function goodGuest() {
  counts.goodGuests++
  const args = ['--workload', `random:${(0.05 + below(30) / 100).toFixed(2)}`, '--seed', String(next()), '--threads', String(1 + below(4))]
  if (below(3) === 0) args.push('--write')
  // Firecracker's uffd asks for EVENT_REMOVE only: mremap or fork of its memory is the
  // kernel's business then (moved or inherited pages not served yet read as zeros).
  const firecracker = below(4) === 0
  if (firecracker) args.push('--handshake', 'firecracker')
  if (below(2) === 0) args.push('--offset', String((MIB / 2) * 2 ** 20))
  if (below(4) === 0) args.push('--same-pages')
  const action = firecracker ? 2 * below(3) : below(6)
  if (action === 0) args.push('--discard', `${below(PAGES / 2)}:${1 + below(PAGES / 2)}`)
  if (action === 1) args.push('--mremap', `${below(PAGES / 2)}:${1 + below(PAGES / 2)}`)
  if (action === 2) args.push('--unmap', `${below(PAGES / 2)}:${1 + below(PAGES / 2)}`)
  if (action === 3) args.push('--fork')
  /** @type {any} */
  const r = await runGuest(args)
  if (r.code === 0 && r.report?.ok === true && r.report.mismatches === 0 && (r.report.after_mismatches ?? 0) === 0) {
    counts.goodVerified++
    counts.pagesVerified += r.report.verified_pages
    counts.pagesCheckedAfterActions += r.report.after_pages ?? 0
    if (r.report.child_exit === 0) counts.forkChildren++
  } else {
    counts.lost.push(`guest ${args.join(' ')}: exit ${r.code}${r.signal ? ` (${r.signal})` : ''}${r.hung ? ', hung' : ''}: ${r.err.trim()}`)
  }
}

async function killedGuest() {
  counts.killed++
  /** @type {any} */
  const r = await runGuest(['--workload', 'random:1', '--seed', String(next()), '--threads', String(1 + below(3))], 50 + below(600))
  if (r.signal !== 'SIGKILL') {
    if (r.code === 0) counts.killedAfterFinishing++
    else counts.lost.push(`killed guest: exit ${r.code}: ${r.err.trim()}`)
  }
}

const mem = uffd.mapAnonymous(1 << 20)
const region = (/** @type {object} */ o = {}) => ({ base_host_virt_addr: mem.address, size: 1 << 20, offset: 0, page_size: 4096, ...o })
/** Malformed handshakes: [what, body, how many userfaultfds to attach, or -1 for /dev/null]. */
const HOSTILE = /** @type {Array<[string, string, number]>} */ ([
  ['not JSON', 'hello\n', 1],
  ['no descriptor', JSON.stringify({ version: 1, regions: [region()] }), 0],
  ['not a uffd', JSON.stringify({ version: 1, regions: [region()] }), -1],
  ['two descriptors', JSON.stringify({ version: 1, regions: [region()] }), 2],
  ['unaligned', JSON.stringify({ version: 1, regions: [region({ base_host_virt_addr: mem.address + 100 })] }), 1],
  ['past the end', JSON.stringify({ version: 1, regions: [region({ offset: MIB * 2 ** 20 })] }), 1],
  ['overlapping', JSON.stringify({ version: 1, regions: [region(), region({ offset: 2 ** 20 })] }), 1],
  ['wrong page size', JSON.stringify([region({ page_size: 512 })]), 1],
  ['not mapped', JSON.stringify({ version: 1, regions: [region({ base_host_virt_addr: 0x20000 })] }), 1],
  ['huge', '[' + ' '.repeat(70000) + ']', 1],
  ['silent', '', 0],
])

async function hostileClient() {
  const [what, body, nfds] = HOSTILE[below(HOSTILE.length)]
  counts.hostileSent++
  const fds = nfds < 0 ? [openSync('/dev/null', 'r')] : Array.from({ length: nfds }, () => uffd.openUserfaultfd())
  const fd = uffd.connectUnix(socket)
  try {
    if (body) {
      try {
        uffd.sendWithFds(fd, Buffer.from(body), fds)
      } catch {
        /* refused before it was all sent */
      }
    }
    const buf = Buffer.alloc(4096)
    let text = ''
    const deadline = Date.now() + 10000
    for (;;) {
      const n = uffd.receiveBytes(fd, buf)
      if (n > 0) {
        text += buf.toString('utf8', 0, n)
        continue
      }
      if (n === 0 || text.includes('\n') || Date.now() > deadline) break
      await new Promise(r => setTimeout(r, 10))
    }
    const reply = text ? JSON.parse(text.split('\n')[0]) : undefined
    if (reply?.ok === false && typeof reply.error === 'string') counts.hostileRefused++
    else counts.lost.push(`hostile client (${what}): got ${JSON.stringify(text).slice(0, 200)}`)
  } finally {
    uffd.closeFd(fd)
    for (const f of fds) closeSync(f)
  }
}

async function actor() {
  while (Date.now() < endAt) {
    const roll = below(10)
    if (roll < 6) await goodGuest()
    else if (roll < 8) await hostileClient()
    else await killedGuest()
    rssPeak = Math.max(rssPeak, rssMiB())
  }
}

const startAt = Date.now()
const endAt = startAt + SECONDS * 1000
const tty = process.stderr.isTTY === true
const status = setInterval(() => {
  if (!tty) return
  const s = Math.round((Date.now() - startAt) / 1000)
  process.stderr.write(
    `\r\x1b[2Ksoak ${s}/${SECONDS} s: ${counts.goodVerified}/${counts.goodGuests} guests verified, ` +
      `${counts.hostileRefused}/${counts.hostileSent} hostile refused, ${counts.killed} killed, ${counts.faultsServed} faults, ${counts.lost.length} lost`,
  )
}, 500)
await Promise.all(Array.from({ length: ACTORS }, actor))
clearInterval(status)
if (tty) process.stderr.write('\r\x1b[2K')

const idle = await settle(() => server.active.size === 0, 30000)
if (!idle) counts.lost.push(`${server.active.size} session(s) still active 30 s after the last guest`)
await settle(() => fdCount() === fds0 && threadCount() === threads0, 30000)
const fds = await steady(fdCount),
  threads = await steady(threadCount)
if (fds !== fds0) counts.lost.push(`descriptors: ${fds0} before, ${fds} after`)
if (threads !== threads0) counts.lost.push(`threads: ${threads0} before, ${threads} after`)
const crashed = serverLog.filter(l => /worker (crashed|failed)/.test(l))
for (const l of crashed) counts.lost.push(l)
const rssEnd = rssMiB()
await server.close()
uffd.unmap(mem)
rmSync(dir, { recursive: true, force: true })

const summary = {
  seconds: Math.round((Date.now() - startAt) / 1000),
  actors: ACTORS,
  seed: Number(opts.seed),
  guestsServed: counts.goodVerified,
  guestsStarted: counts.goodGuests,
  pagesVerified: counts.pagesVerified,
  pagesCheckedAfterActions: counts.pagesCheckedAfterActions,
  forkChildrenVerified: counts.forkChildren,
  sessions: counts.sessions,
  faultsServed: counts.faultsServed,
  inputsRejected: counts.rejectedByServer,
  hostileSent: counts.hostileSent,
  hostileRefused: counts.hostileRefused,
  guestsKilled: counts.killed,
  killedAfterFinishing: counts.killedAfterFinishing,
  fds: { before: fds0, after: fds },
  threads: { before: threads0, after: threads },
  rssMiB: { start: Math.round(rss0), peak: Math.round(rssPeak), end: Math.round(rssEnd) },
  lost: counts.lost,
}
if (opts.json) {
  console.log(JSON.stringify(summary))
} else {
  console.log(`soak: ${summary.seconds} s, ${ACTORS} actors, seed ${summary.seed}`)
  console.log(
    `  guests served and verified  ${summary.guestsServed} of ${summary.guestsStarted} (${summary.pagesVerified} pages verified, ` +
      `${summary.pagesCheckedAfterActions} more checked after discard/unmap/mremap/fork, ${summary.forkChildrenVerified} forked children verified)`,
  )
  console.log(`  sessions / faults served    ${summary.sessions} / ${summary.faultsServed}`)
  console.log(
    `  inputs rejected             ${summary.inputsRejected} (${summary.hostileRefused} of ${summary.hostileSent} hostile clients answered with an error; ` +
      'the rest: guests killed before their handshake was answered)',
  )
  console.log(`  guests killed mid-workload  ${summary.guestsKilled} (${summary.killedAfterFinishing} finished first)`)
  console.log(`  descriptors / threads       ${fds0} -> ${fds} / ${threads0} -> ${threads}`)
  console.log(`  server RSS (MiB)            start ${summary.rssMiB.start}, peak ${summary.rssMiB.peak}, end ${summary.rssMiB.end}`)
  console.log(`  lost                        ${summary.lost.length === 0 ? 'nothing' : ''}`)
  for (const l of summary.lost) console.log(`    ${l}`)
}
process.exit(summary.lost.length === 0 ? 0 : 1)
