// `serve --log-format json`: every log line is one JSON object in pino's line format (level,
// time, pid, hostname, the event's fields, msg), with the session, the guest's pid and the
// counts as fields matching what the guest itself reports; text stays the default.
import t from 'tap'
import { spawn } from 'node:child_process'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { GUEST, makeImage, runGuest, scratchDir } from './harness.js'
import { exchange, startServerProcess } from './reliability-helpers.js'

const MIB = 4

t.test("json lines: pino's format, with the session's fields", async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB)
  const socket = join(dir, 's.sock')
  const server = await startServerProcess(t, ['--snapshot', img.snap, '--socket', socket, '--log-format', 'json'])
  const child = spawn(GUEST, ['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.25', '--verify', img.raw], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', d => {
    out += d
  })
  await new Promise(r => child.on('close', r))
  const report = JSON.parse(out.trim())
  t.equal(report.mismatches, 0)
  const refused = await exchange(socket, 'not json\n')
  t.equal(refused.reply?.ok, false)
  await server.waitForLog(/"msg":"session 1 ended/)
  await server.waitForLog(/"msg":"refused pid/)
  server.child.kill('SIGTERM')
  t.same(await server.exited, { code: 0, signal: null })
  const lines = server.log().trimEnd().split('\n')
  const events = lines.map(l => JSON.parse(l) as Record<string, any>)
  for (const e of events) {
    t.match(e, { level: Number, time: Number, pid: server.child.pid, hostname: hostname(), msg: String }, `pino's fields: ${e.msg}`)
    t.ok(Math.abs(e.time - Date.now()) < 600000, 'time is ms since the epoch')
    t.equal(Object.keys(e).pop(), 'msg', 'msg comes last, as pino writes it')
  }
  t.match(events[0], { level: 30, msg: `serving ${img.snap} on ${socket} (policy ondemand)`, snapshot: img.snap, socket, policy: 'ondemand' })
  const started = events.find(e => e.msg.startsWith('session 1: pid'))
  t.match(started, { level: 30, session: 1, guestPid: child.pid, form: 'faultline', bytes: MIB * 2 ** 20 })
  const ended = events.find(e => e.msg.startsWith('session 1 ended'))
  t.match(
    ended,
    {
      level: 30,
      session: 1,
      guestPid: child.pid,
      endReason: 'guest disconnected',
      faults: report.pages_touched,
      pagesInstalled: { fault: report.pages_touched, prefetch: 0, background: 0 },
    },
    "the counts are the guest's own: ondemand serves one fault per page touched",
  )
  t.ok(ended?.p50Us > 0 && ended?.p99Us >= ended?.p50Us, 'latency figures')
  const refusal = events.find(e => e.msg.startsWith('refused pid'))
  t.match(refusal, { level: 40, error: 'handshake carried no file descriptor (send the userfaultfd with SCM_RIGHTS)', guestPid: Number })
})

t.test('text is the default; other formats are refused', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 1)
  const socket = join(dir, 's.sock')
  const server = await startServerProcess(t, ['--snapshot', img.snap, '--socket', socket])
  const r = await runGuest(['--socket', socket, '--mib', '1', '--workload', 'random:0.1'])
  t.equal(r.code, 0, r.stderr)
  await server.waitForLog(/session 1 ended/)
  server.child.kill('SIGTERM')
  await server.exited
  for (const line of server.log().trimEnd().split('\n')) t.match(line, /^faultline: [^{]/, line)
  const bad = spawn(
    process.execPath,
    [join(import.meta.dirname, '../../dist/cli/main.js'), 'serve', '--snapshot', img.snap, '--socket', join(dir, 'x.sock'), '--log-format', 'yaml'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let err = ''
  bad.stderr.on('data', d => {
    err += d
  })
  const code = await new Promise(r => bad.on('close', r))
  t.not(code, 0)
  t.equal(err, "faultline: --log-format: expected text or json, got 'yaml'\n")
})
