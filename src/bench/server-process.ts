// Entry of the page-server child a benchmark runs for faultline resumes: it serves a given
// number of guests (one by default), prints each session's stats and its own process costs
// since the previous session ended (CPU, peak RSS, storage reads) as one JSON line, then exits.
// Run as `node server-process.js SNAPSHOT SOCKET POLICY [OPTIONS_JSON]` (POLICY `-`: none, so
// --learn picks the learned set). A line `cache` on its stdin asks how full its decoded cache is.
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import type { CacheCounts } from '../cache/decoded-cache.js'
import { PageServer } from '../server/page-server.js'
import type { SessionStats } from '../server/session.js'
import { parseProcIo, parseProcStatus, resetPeakRss } from './proc.js'

/** What the fourth argument may hold. */
export interface ServerChildOptions {
  /** Guests served before exiting (default 1); this many session workers are started before
   * it listens, so no guest waits for a worker (at most 64). */
  sessions?: number
  /** serve --learn DIR. */
  learnDir?: string
  /** serve --cache-memory (bytes; 0: no decoded cache). */
  cacheMemoryBytes?: number
}

/** The session's stats as the child prints them: without the learned pages (large; kept in
 * the --learn file). */
export type PrintedSessionStats = Omit<SessionStats, 'usedPages'> & { usedPageCount?: number }

/** The lines the child prints on stdout, one JSON object each. */
export type ServerChildMessage =
  | { event: 'ready'; pid: number; policy: string; cache: string | null }
  | {
      event: 'ended'
      /** Sessions ended so far, this one included. */
      index: number
      stats?: PrintedSessionStats
      error?: string
      /** CPU time of the whole process (all threads) since ready or the previous session's end, ns. */
      cpuNs: number
      /** Peak RSS over the same span (VmHWM, reset at ready and at each session's end), and RSS at ready. */
      peakRssBytes: number
      readyRssBytes: number
      /** Storage bytes the process read over the same span (/proc/self/io). */
      readBytes: number
      rchar: number
      /** The decoded cache as this session ended (null without one). */
      cache: CacheCounts | null
    }
  | { event: 'rejected'; error: string }
  /** The answer to a `cache` line on stdin: the decoded cache now (null without one). */
  | { event: 'cache'; cache: CacheCounts | null }

function say(m: ServerChildMessage): void {
  process.stdout.write(JSON.stringify(m) + '\n')
}

function printable(stats: SessionStats | undefined): PrintedSessionStats | undefined {
  if (stats === undefined) return undefined
  const { usedPages, ...rest } = stats
  return usedPages === undefined ? rest : { ...rest, usedPageCount: usedPages.length }
}

async function main(): Promise<void> {
  const [snapshotPath, socketPath, policyArg, optionsJson] = process.argv.slice(2)
  const o = (optionsJson ? JSON.parse(optionsJson) : {}) as ServerChildOptions
  const sessions = o.sessions ?? 1
  const server = await PageServer.start({
    snapshotPath,
    socketPath,
    policy: policyArg === '-' ? undefined : policyArg,
    singleGuest: true,
    warmWorkers: sessions,
    maxSessions: sessions,
    learnDir: o.learnDir,
    cacheMemoryBytes: o.cacheMemoryBytes,
  })
  server.on('log', line => process.stderr.write(`server: ${line}\n`))
  server.on('rejected', (_pid, error) => {
    say({ event: 'rejected', error })
    void server.close().then(() => process.exit(1))
  })
  for (const line of server.startNotices) process.stderr.write(`server: ${line}\n`)
  resetPeakRss('self')
  const readyRss = parseProcStatus(readFileSync('/proc/self/status', 'latin1')).rssBytes
  let io0 = parseProcIo(readFileSync('/proc/self/io', 'latin1'))
  let cpu0 = process.cpuUsage()
  let index = 0
  server.on('ended', rec => {
    const cpu = process.cpuUsage(cpu0)
    const io = parseProcIo(readFileSync('/proc/self/io', 'latin1'))
    const mem = parseProcStatus(readFileSync('/proc/self/status', 'latin1'))
    say({
      event: 'ended',
      index: ++index,
      stats: printable(rec.stats),
      error: rec.error,
      cpuNs: (cpu.user + cpu.system) * 1000,
      peakRssBytes: mem.peakRssBytes,
      readyRssBytes: readyRss,
      readBytes: io.readBytes - io0.readBytes,
      rchar: io.rchar - io0.rchar,
      cache: server.cacheCounts() ?? null,
    })
    if (index >= sessions) {
      void server.close().then(() => process.exit(0))
      return
    }
    io0 = io
    cpu0 = process.cpuUsage()
    resetPeakRss('self')
  })
  // Fills go on after a session ends (a cache-mapped miss asks for its folio and moves on): a
  // benchmark that needs the cache full asks until it is.
  createInterface({ input: process.stdin }).on('line', line => {
    if (line.trim() === 'cache') say({ event: 'cache', cache: server.cacheCounts() ?? null })
  })
  say({ event: 'ready', pid: process.pid, policy: server.policySpec, cache: server.cacheDescription ?? null })
}

main().catch(err => {
  process.stderr.write(`server: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(2)
})
