// `faultline serve`: runs the page server until interrupted, one log line per guest.
import { accessSync, constants, statSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { describeError, UsageError } from '../errors.js'
import { MAX_SESSIONS, MAX_WARM_WORKERS, PageServer } from '../server/page-server.js'
import { UNSERVABLE_ACTIONS } from '../server/unservable.js'
import { ServerMetrics } from '../server/metrics.js'
import { parseListenAddress, startMetricsEndpoint, type MetricsEndpoint } from '../server/metrics-endpoint.js'
import { remoteStoreDefaults } from '../store/chunk-store.js'
import { isS3Url, parseSize } from '../store/s3-config.js'
import { formatBytes } from '../util/format.js'
import { Logger, LOG_FORMATS } from '../util/log.js'
import { choiceItems, intOption, joinNegativeValues } from './options.js'

export const SERVE_USAGE = `usage: faultline serve --snapshot SNAP --socket PATH [options]

  --snapshot SNAP       snapshot to serve (faultline snapshot create makes one), a file or
                        s3://BUCKET/KEY (faultline snapshot push uploads one)
  --socket PATH         Unix socket to listen on (created with mode 0600)
  --policy NAME[:ARGS]  fault policy (default ondemand), or a path to a policy module
  --trace FILE          record every fault and install (session N>1 writes FILE.N)
  --allow-uid UID       also accept guests of this uid (repeatable; default: only ours)
  --allow-any-uid       accept guests of any uid
  --warm-workers N      workers kept ready for the next guest (1..64, default 1)
  --max-sessions N      guests served at once (1..4096, default 256); more wait for a slot
                        up to the handshake deadline (5 s), then are refused
  --stall-timeout S     end a session whose loop has not moved for S seconds while its guest
                        has faults waiting (a policy that never returns; default 20)
  --log-format FORMAT   text (default) or json (pino's line format: level, time, pid,
                        hostname, the event's fields such as session and guestPid, msg)
  --on-unservable WHAT  a guest whose page can be neither served nor poisoned (its uffd lacks
                        POISON: Firecracker's): kill (default) ends its process (SIGKILL via
                        the pidfd taken at connect), close only ends its session
  --metrics HOST:PORT   serve Prometheus metrics at http://HOST:PORT/metrics (docs/operate.md)
  --once                exit after the first guest's session ends

The decoded cache (a local snapshot's pages decompressed once, for every guest; guests that
ask for it map it, "map": "cache", and take no fault on what it holds):
  --cache-memory SIZE   decoded bytes it may hold, e.g. 4G (default: the whole image); past
                        it folios are evicted; 0: no cache (every guest anonymous)
  --fill-workers N      threads decoding into it ahead of the guests (default: the cores)
  --cache-folios KIND   huge (default, where the host allows them) or small (4 KiB pages)
  --learn DIR           keep each session's used pages in DIR, per snapshot; with no --policy,
                        later sessions prefetch them (policy learned:DIR/<snapshot>.fllearn)

A first SIGINT/SIGTERM stops accepting and waits for the guests being served; a second one
ends every session now.

s3:// snapshots (endpoint and keys from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY):
  --endpoint URL        S3 endpoint, overriding the AWS_* variables (path-style addressing)
  --cache-dir DIR       on-disk chunk cache (default $XDG_CACHE_HOME/faultline or ~/.cache/faultline)
  --cache-size SIZE     bound on the cache, e.g. 4G (default 1G)
  --fetch-concurrency N GETs in flight at once (default 8)`

const SERVE_OPTIONS = {
  snapshot: { type: 'string' },
  socket: { type: 'string' },
  policy: { type: 'string' },
  trace: { type: 'string' },
  'allow-uid': { type: 'string', multiple: true },
  'allow-any-uid': { type: 'boolean' },
  'warm-workers': { type: 'string' },
  'max-sessions': { type: 'string' },
  'stall-timeout': { type: 'string' },
  'log-format': { type: 'string' },
  once: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  endpoint: { type: 'string' },
  'cache-dir': { type: 'string' },
  'cache-size': { type: 'string' },
  'fetch-concurrency': { type: 'string' },
  'cache-memory': { type: 'string' },
  'fill-workers': { type: 'string' },
  'cache-folios': { type: 'string' },
  learn: { type: 'string' },
  'on-unservable': { type: 'string' },
  metrics: { type: 'string' },
} as const

/** --cache-memory: a size, or 0 for no cache. */
function cacheMemory(text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  if (text.trim() === '0') return 0
  return parseSize(text, '--cache-memory')
}

/** --learn DIR: an existing, writable directory (serve and vm resume). */
export function learnDir(dir: string | undefined): string | undefined {
  if (dir === undefined) return undefined
  let st
  try {
    st = statSync(dir)
  } catch (err) {
    throw new UsageError(`--learn ${dir}: ${describeError(err)}`)
  }
  if (!st.isDirectory()) throw new UsageError(`--learn ${dir}: not a directory`)
  try {
    accessSync(dir, constants.W_OK)
  } catch {
    throw new UsageError(`--learn ${dir}: not writable`)
  }
  return dir
}

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: joinNegativeValues(argv, SERVE_OPTIONS), options: SERVE_OPTIONS, strict: true })
  if (values.help) {
    console.log(SERVE_USAGE)
    return 0
  }
  if (!values.snapshot) throw new UsageError('serve: --snapshot is required')
  if (!values.socket) throw new UsageError('serve: --socket is required')
  const remote = isS3Url(values.snapshot)
  for (const flag of ['endpoint', 'cache-dir', 'cache-size', 'fetch-concurrency'] as const) {
    if (!remote && values[flag] !== undefined) throw new UsageError(`serve: --${flag} only applies to an s3:// --snapshot`)
  }
  if (values.metrics !== undefined) parseListenAddress(values.metrics)
  const logFormat = choiceItems('log-format', [values['log-format'] ?? 'text'], LOG_FORMATS)[0]
  const logger = new Logger(logFormat)
  const defaults = remoteStoreDefaults()
  const server = await PageServer.start({
    snapshotPath: values.snapshot,
    socketPath: values.socket,
    policy: values.policy,
    tracePath: values.trace,
    allowUids: (values['allow-uid'] ?? []).map(u => intOption('allow-uid', u, 0, 4294967294)),
    allowAnyUid: values['allow-any-uid'],
    warmWorkers: intOption('warm-workers', values['warm-workers'], 1, MAX_WARM_WORKERS, 1),
    maxSessions: intOption('max-sessions', values['max-sessions'], 1, MAX_SESSIONS, 256),
    stallTimeoutMs: values['stall-timeout'] === undefined ? undefined : intOption('stall-timeout', values['stall-timeout'], 1, 86400) * 1000,
    cacheMemoryBytes: cacheMemory(values['cache-memory']),
    fillWorkers: values['fill-workers'] === undefined ? undefined : intOption('fill-workers', values['fill-workers'], 1, 256),
    cacheFolios: values['cache-folios'] === undefined ? undefined : choiceItems('cache-folios', [values['cache-folios']], ['huge', 'small'] as const)[0],
    learnDir: learnDir(values.learn),
    onUnservable: choiceItems('on-unservable', [values['on-unservable'] ?? 'kill'], UNSERVABLE_ACTIONS)[0],
    remote: remote
      ? {
          endpoint: values.endpoint,
          cacheDir: values['cache-dir'] ?? defaults.cacheDir,
          cacheSizeBytes: values['cache-size'] === undefined ? defaults.cacheSizeBytes : parseSize(values['cache-size'], '--cache-size'),
          concurrency: intOption('fetch-concurrency', values['fetch-concurrency'], 1, 1024, 8),
        }
      : undefined,
  })
  // Listening before the first guest can be served, so every session is counted.
  const metrics = values.metrics === undefined ? undefined : new ServerMetrics(server)
  let endpoint: MetricsEndpoint | undefined
  try {
    endpoint = metrics === undefined ? undefined : await startMetricsEndpoint(values.metrics!, metrics)
  } catch (err) {
    await server.close()
    throw err
  }
  const policy = server.policySpec
  logger.info(`serving ${values.snapshot} on ${values.socket} (policy ${policy})`, { snapshot: values.snapshot, socket: values.socket, policy })
  for (const line of server.startNotices) logger.warn(line)
  if (endpoint !== undefined) logger.info(`metrics on http://${endpoint.address}/metrics`, { metrics: endpoint.address })
  if (server.store) {
    const st = server.store.stats
    logger.info(
      `chunk cache ${server.store.cache.dir}: ${st.cache.entries} chunks (${formatBytes(st.cache.bytes)}) of at most ${formatBytes(server.store.cache.capacityBytes)}; ` +
        `header and index fetched in ${st.requests} GET(s), ${formatBytes(st.bytesFetched)}`,
      { cacheDir: server.store.cache.dir, cacheChunks: st.cache.entries, cacheBytes: st.cache.bytes, gets: st.requests, bytesFetched: st.bytesFetched },
    )
  }
  server.on('log', (line, level) => {
    const m = /^session (\d+): /.exec(line)
    logger.log(level ?? 'info', line, m ? { session: Number(m[1]) } : undefined)
  })
  server.on('rejected', (pid, error) => logger.warn(`refused pid ${pid}: ${error}`, { guestPid: pid, error }))
  server.on('session', s =>
    logger.info(`session ${s.id}: pid ${s.pid}, ${s.form} handshake, ${(s.bytes / 2 ** 20).toFixed(0)} MiB`, {
      session: s.id,
      guestPid: s.pid,
      form: s.form,
      bytes: s.bytes,
    }),
  )
  let done!: () => void
  const finished = new Promise<void>(r => {
    done = r
  })
  server.on('ended', s => {
    if (s.error) logger.error(`session ${s.id} failed: ${s.error}`, { session: s.id, guestPid: s.pid, error: s.error })
    else if (s.stats) {
      const st = s.stats
      logger.info(
        `session ${s.id} ended (${st.endReason}): ${st.faults} faults, ${st.pagesInstalled.join('/')} pages by fault/prefetch/background, ` +
          `${st.zeroPagesInstalled} zero, service p50 ${(st.latency.p50Ns / 1000).toFixed(1)} µs p99 ${(st.latency.p99Ns / 1000).toFixed(1)} µs`,
        {
          session: s.id,
          guestPid: s.pid,
          endReason: st.endReason,
          faults: st.faults,
          pagesInstalled: { fault: st.pagesInstalled[0], prefetch: st.pagesInstalled[1], background: st.pagesInstalled[2] },
          zeroPages: st.zeroPagesInstalled,
          p50Us: st.latency.p50Ns / 1000,
          p99Us: st.latency.p99Ns / 1000,
          durationMs: st.durationMs,
        },
      )
      if (server.store) {
        const r = server.store.stats
        logger.info(
          `session ${s.id}: ${st.remoteWaits} faults waited for the object store; store so far: ${r.chunksFetched} chunks fetched in ` +
            `${r.chunkGets} GETs (${formatBytes(r.bytesFetched)}, ${r.retries} retries), ${r.chunksFromDisk} from an earlier run's cache, ` +
            `cache ${formatBytes(r.cache.bytes)}`,
          {
            session: s.id,
            remoteWaits: st.remoteWaits,
            chunksFetched: r.chunksFetched,
            chunkGets: r.chunkGets,
            bytesFetched: r.bytesFetched,
            retries: r.retries,
            chunksFromDisk: r.chunksFromDisk,
            cacheBytes: r.cache.bytes,
          },
        )
      }
    }
    if (values.once) done()
  })
  let signals = 0
  let exitCode = 0
  const onSignal = (signal: NodeJS.Signals) => {
    signals++
    if (signals === 1) {
      if (server.active.size > 0) logger.info(`stopping after ${server.active.size} guest(s) finish; interrupt again to stop now`)
      void server.close({ drain: true }).then(done)
      return
    }
    // A second signal stops everything, sessions stuck in a policy included.
    logger.warn(`stopping now: ${server.active.size} session(s) ended`)
    exitCode = 128 + (signal === 'SIGINT' ? 2 : 15)
    void server.stopNow().then(done)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  await finished
  await server.close()
  await endpoint?.close()
  return exitCode
}
