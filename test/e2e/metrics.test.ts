// serve --metrics: /metrics scraped while a native guest holds its session and after it left,
// its numbers checked against the guest's own counts (pages touched: one fault and one install
// each under ondemand), plus a refused client, and the listener's bad-input errors.
import t from 'tap'
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { GUEST, makeImage, scratchDir } from './harness.js'
import { exchange, runCli, startServerProcess, waitFor } from './reliability-helpers.js'

/** One sample's value: `name{labels}` exactly as written (labels in the order written). */
function sample(text: string, series: string): number {
  const line = text.split('\n').find(l => l.startsWith(series + ' '))
  return line === undefined ? NaN : Number(line.slice(series.length + 1))
}

async function scrape(url: string): Promise<{ status: number; type: string | null; text: string }> {
  const r = await fetch(url)
  return { status: r.status, type: r.headers.get('content-type'), text: await r.text() }
}

/** Every line is a comment or `name{labels} value` with a number (the text format's grammar,
 * as far as this server writes it). */
function wellFormed(text: string): boolean {
  return (
    text.endsWith('\n') &&
    text
      .trimEnd()
      .split('\n')
      .every(
        l =>
          /^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$/.test(l) ||
          /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? (-?[0-9.e+-]+|\+Inf|NaN)$/.test(l),
      )
  )
}

t.test("serve --metrics: /metrics during and after a guest, against the guest's own counts", async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 8, 3)
  const socket = join(dir, 's.sock')
  const server = await startServerProcess(t, ['--snapshot', img.snap, '--socket', socket, '--metrics', '127.0.0.1:0'])
  await server.waitForLog(/metrics on http:\/\/127\.0\.0\.1:\d+\/metrics/)
  const url = /metrics on (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(server.log())![1]

  const before = await scrape(url)
  t.equal(before.status, 200, 'GET /metrics answers 200')
  t.match(before.type, /^text\/plain; version=0\.0\.4/, 'in the text exposition format')
  t.ok(wellFormed(before.text), 'every line is a comment or a sample')
  t.equal(sample(before.text, 'faultline_sessions_active'), 0, 'no session yet')
  t.equal(sample(before.text, 'faultline_faults_total'), 0, 'no fault yet')
  t.equal((await fetch(url.replace('/metrics', '/'))).status, 404, 'other paths: 404')

  // A refused client: not a JSON handshake.
  const refused = await exchange(socket, 'hello')
  t.equal(refused.reply?.ok, false, `a garbage handshake is refused: ${refused.reply?.error}`)

  // The guest holds its session after its workload: scraped then, the session is live.
  const guest = spawn(GUEST, ['--socket', socket, '--mib', '8', '--workload', 'random:0.3', '--seed', '5', '--verify', img.raw, '--hold-ms', '3000'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  guest.stdout.on('data', d => {
    out += d
  })
  const exited = new Promise<number | null>(r => guest.on('close', code => r(code)))
  t.teardown(() => {
    guest.kill('SIGKILL')
  })
  t.ok(await waitFor(() => out.includes('\n'), 30000), 'the guest printed its report')
  const report = JSON.parse(out.trim().split('\n')[0])
  const touched: number = report.pages_touched
  t.ok(touched > 500, `the guest touched ${touched} pages`)
  t.equal(report.mismatches, 0, 'and read them right')

  const during = await scrape(url)
  t.ok(wellFormed(during.text), 'during: well formed')
  t.equal(sample(during.text, 'faultline_sessions_active'), 1, 'during: one session active')
  t.equal(sample(during.text, 'faultline_sessions_accepted_total'), 1, 'during: one accepted')
  t.equal(sample(during.text, 'faultline_faults_total'), touched, `during: faults = the pages the guest touched (${touched})`)
  t.equal(sample(during.text, 'faultline_pages_installed_total{cause="fault"}'), touched, 'during: one page installed per fault')
  t.equal(sample(during.text, 'faultline_fault_service_seconds_count'), touched, 'during: one service time per fault')
  t.equal(sample(during.text, 'faultline_sessions_refused_total{reason="handshake"}'), 1, 'during: the garbage client counted as a refused handshake')

  t.equal(await exited, 0, 'the guest ended well')
  t.ok(await waitFor(() => /session 1 ended/.test(server.log()), 10000), 'its session ended')
  const after = await scrape(url)
  t.ok(wellFormed(after.text), 'after: well formed')
  t.equal(sample(after.text, 'faultline_sessions_active'), 0, 'after: no session active')
  t.equal(sample(after.text, 'faultline_faults_total'), touched, "after: the ended session's faults are kept (a counter never goes back)")
  t.equal(sample(after.text, 'faultline_pages_installed_total{cause="fault"}'), touched, 'after: its pages too')
  t.equal(sample(after.text, 'faultline_sessions_ended_total{reason="guest"}'), 1, 'after: ended because the guest left')
  t.equal(sample(after.text, 'faultline_fault_service_seconds_count'), touched, 'after: the histogram kept its count')
  t.equal(sample(after.text, 'faultline_fault_service_seconds_bucket{le="+Inf"}'), touched, 'after: +Inf bucket = count')
  // Cumulative buckets never decrease.
  const buckets = after.text
    .split('\n')
    .filter(l => l.startsWith('faultline_fault_service_seconds_bucket'))
    .map(l => Number(l.split(' ')[1]))
  t.ok(
    buckets.every((v, i) => i === 0 || v >= buckets[i - 1]),
    'buckets are cumulative',
  )
  t.ok(sample(after.text, 'faultline_fault_service_seconds_sum') > 0, 'a positive sum of service times')
  const logLine = server
    .log()
    .split('\n')
    .find(l => /session 1 ended/.test(l))!
  const served = /(\d+) faults, (\d+)\/(\d+)\/(\d+) pages/.exec(logLine)
  t.equal(Number(served?.[1]), touched, `the server's own log line agrees: ${logLine}`)
  t.ok(sample(after.text, 'faultline_snapshot_bytes_read_total') > 0, 'bytes read from the snapshot counted')
  t.ok(sample(after.text, 'process_resident_memory_bytes') > 2 ** 20, 'process memory reported')
  t.comment(`metrics: ${touched} faults; service-time sum ${sample(after.text, 'faultline_fault_service_seconds_sum').toFixed(6)} s`)
  server.child.kill('SIGTERM')
  t.equal((await server.exited).code, 0, 'the server stops cleanly')
})

t.test('serve --metrics: a bad address or a port in use is one line, no stack', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 1, 1)
  const busy = createServer()
  await new Promise<void>(r => busy.listen(0, '127.0.0.1', r))
  t.teardown(() => busy.close())
  const port = (busy.address() as { port: number }).port
  const cases: Array<[string, RegExp]> = [
    [`127.0.0.1:${port}`, new RegExp(`^faultline: --metrics 127\\.0\\.0\\.1:${port}: cannot listen: address in use\\n$`)],
    ['9464', /^faultline: --metrics 9464: expected HOST:PORT \(port 0\.\.65535\), e\.g\. 127\.0\.0\.1:9464\n$/],
    ['127.0.0.1:99999', /^faultline: --metrics 127\.0\.0\.1:99999: expected HOST:PORT/],
    ['192.0.2.1:9464', /^faultline: --metrics 192\.0\.2\.1:9464: cannot listen: no such address on this host\n$/],
  ]
  for (const [spec, expected] of cases) {
    const socket = join(dir, `m${cases.findIndex(c => c[0] === spec)}.sock`)
    const r = await runCli(['serve', '--snapshot', img.snap, '--socket', socket, '--metrics', spec], 30000)
    t.not(r.code, 0, `${spec}: exits non-zero (${r.code})`)
    t.match(r.stderr, expected, `${spec}: ${r.stderr.trim()}`)
    t.notMatch(r.stderr, /\n\s+at /, `${spec}: no stack trace`)
  }
})
