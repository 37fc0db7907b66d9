// Entry of the page-server child a benchmark runs for each faultline resume: one guest, then
// it prints that session's stats and its own process costs (CPU, peak RSS, storage reads)
// as one JSON line and exits. Run as `node server-process.js SNAPSHOT SOCKET POLICY`.
import { readFileSync } from 'node:fs'
import { PageServer } from '../server/page-server.js'
import type { SessionStats } from '../server/session.js'
import { parseProcIo, parseProcStatus, resetPeakRss } from './proc.js'

/** The lines the child prints on stdout, one JSON object each. */
export type ServerChildMessage =
  | { event: 'ready'; pid: number }
  | {
    event: 'ended'
    stats?: SessionStats
    error?: string
    /** CPU time of the whole process (all threads) from ready to the session's end, ns. */
    cpuNs: number
    /** Peak RSS from ready to the end (VmHWM, reset at ready), and RSS at ready. */
    peakRssBytes: number
    readyRssBytes: number
    /** Storage bytes the process read from ready to the end (/proc/self/io). */
    readBytes: number
    rchar: number
  }
  | { event: 'rejected'; error: string }

function say(m: ServerChildMessage): void {
  process.stdout.write(JSON.stringify(m) + '\n')
}

async function main(): Promise<void> {
  const [snapshotPath, socketPath, policy] = process.argv.slice(2)
  const server = await PageServer.start({ snapshotPath, socketPath, policy, singleGuest: true })
  server.on('log', line => process.stderr.write(`server: ${line}\n`))
  server.on('rejected', (_pid, error) => { say({ event: 'rejected', error }); void server.close().then(() => process.exit(1)) })
  resetPeakRss('self')
  const readyRss = parseProcStatus(readFileSync('/proc/self/status', 'latin1')).rssBytes
  const io0 = parseProcIo(readFileSync('/proc/self/io', 'latin1'))
  const cpu0 = process.cpuUsage()
  server.on('ended', rec => {
    const cpu = process.cpuUsage(cpu0)
    const io = parseProcIo(readFileSync('/proc/self/io', 'latin1'))
    const mem = parseProcStatus(readFileSync('/proc/self/status', 'latin1'))
    say({
      event: 'ended', stats: rec.stats, error: rec.error,
      cpuNs: (cpu.user + cpu.system) * 1000, peakRssBytes: mem.peakRssBytes, readyRssBytes: readyRss,
      readBytes: io.readBytes - io0.readBytes, rchar: io.rchar - io0.rchar,
    })
    void server.close().then(() => process.exit(0))
  })
  say({ event: 'ready', pid: process.pid })
}

main().catch(err => {
  process.stderr.write(`server: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(2)
})
