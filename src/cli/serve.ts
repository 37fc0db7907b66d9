// `faultline serve`: runs the page server until interrupted, one log line per guest.
import { parseArgs } from 'node:util'
import { UsageError } from '../errors.js'
import { PageServer } from '../server/page-server.js'
import { remoteStoreDefaults } from '../store/chunk-store.js'
import { isS3Url, parseSize } from '../store/s3-config.js'
import { formatBytes } from '../util/format.js'
import { intOption } from './options.js'

export const SERVE_USAGE = `usage: faultline serve --snapshot SNAP --socket PATH [options]

  --snapshot SNAP       snapshot to serve (faultline snapshot create makes one), a file or
                        s3://BUCKET/KEY (faultline snapshot push uploads one)
  --socket PATH         Unix socket to listen on (created with mode 0600)
  --policy NAME[:ARGS]  fault policy (default ondemand), or a path to a policy module
  --trace FILE          record every fault and install (session N>1 writes FILE.N)
  --allow-uid UID       also accept guests of this uid (repeatable; default: only ours)
  --allow-any-uid       accept guests of any uid
  --warm-workers N      workers kept ready for the next guest (default 1)
  --max-sessions N      guests served at once (default 256)
  --once                exit after the first guest's session ends

s3:// snapshots (endpoint and keys from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY):
  --endpoint URL        S3 endpoint, overriding the AWS_* variables (path-style addressing)
  --cache-dir DIR       on-disk chunk cache (default $XDG_CACHE_HOME/faultline or ~/.cache/faultline)
  --cache-size SIZE     bound on the cache, e.g. 4G (default 1G)
  --fetch-concurrency N GETs in flight at once (default 8)`

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      snapshot: { type: 'string' }, socket: { type: 'string' }, policy: { type: 'string' },
      trace: { type: 'string' }, 'allow-uid': { type: 'string', multiple: true },
      'allow-any-uid': { type: 'boolean' }, 'warm-workers': { type: 'string' },
      'max-sessions': { type: 'string' }, once: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      endpoint: { type: 'string' }, 'cache-dir': { type: 'string' }, 'cache-size': { type: 'string' },
      'fetch-concurrency': { type: 'string' },
    },
    strict: true,
  })
  if (values.help) { console.log(SERVE_USAGE); return 0 }
  if (!values.snapshot) throw new UsageError('serve: --snapshot is required')
  if (!values.socket) throw new UsageError('serve: --socket is required')
  const remote = isS3Url(values.snapshot)
  for (const flag of ['endpoint', 'cache-dir', 'cache-size', 'fetch-concurrency'] as const) {
    if (!remote && values[flag] !== undefined) throw new UsageError(`serve: --${flag} only applies to an s3:// --snapshot`)
  }
  const defaults = remoteStoreDefaults()
  const server = await PageServer.start({
    snapshotPath: values.snapshot,
    socketPath: values.socket,
    policy: values.policy,
    tracePath: values.trace,
    allowUids: (values['allow-uid'] ?? []).map(u => intOption('allow-uid', u, 0)),
    allowAnyUid: values['allow-any-uid'],
    warmWorkers: intOption('warm-workers', values['warm-workers'], 0, Infinity, 1),
    maxSessions: intOption('max-sessions', values['max-sessions'], 0, Infinity, 256),
    remote: remote ? {
      endpoint: values.endpoint,
      cacheDir: values['cache-dir'] ?? defaults.cacheDir,
      cacheSizeBytes: values['cache-size'] === undefined ? defaults.cacheSizeBytes : parseSize(values['cache-size'], '--cache-size'),
      concurrency: Math.max(1, intOption('fetch-concurrency', values['fetch-concurrency'], 0, Infinity, 8)),
    } : undefined,
  })
  const say = (line: string) => console.error(`faultline: ${line}`)
  say(`serving ${values.snapshot} on ${values.socket} (policy ${values.policy ?? 'ondemand'})`)
  if (server.store) {
    const st = server.store.stats
    say(`chunk cache ${server.store.cache.dir}: ${st.cache.entries} chunks (${formatBytes(st.cache.bytes)}) of at most ${formatBytes(server.store.cache.capacityBytes)}; ` +
      `header and index fetched in ${st.requests} GET(s), ${formatBytes(st.bytesFetched)}`)
  }
  server.on('log', say)
  server.on('rejected', (pid, error) => say(`refused pid ${pid}: ${error}`))
  server.on('session', s => say(`session ${s.id}: pid ${s.pid}, ${s.form} handshake, ${(s.bytes / 2 ** 20).toFixed(0)} MiB`))
  let done!: () => void
  const finished = new Promise<void>(r => { done = r })
  server.on('ended', s => {
    if (s.error) say(`session ${s.id} failed: ${s.error}`)
    else if (s.stats) {
      const st = s.stats
      say(`session ${s.id} ended (${st.endReason}): ${st.faults} faults, ${st.pagesInstalled.join('/')} pages by fault/prefetch/background, ` +
        `${st.zeroPagesInstalled} zero, service p50 ${(st.latency.p50Ns / 1000).toFixed(1)} µs p99 ${(st.latency.p99Ns / 1000).toFixed(1)} µs`)
      if (server.store) {
        const r = server.store.stats
        say(`session ${s.id}: ${st.remoteWaits} faults waited for the object store; store so far: ${r.chunksFetched} chunks fetched in ` +
          `${r.chunkGets} GETs (${formatBytes(r.bytesFetched)}, ${r.retries} retries), ${r.chunksFromDisk} from an earlier run's cache, ` +
          `cache ${formatBytes(r.cache.bytes)}`)
      }
    }
    if (values.once) done()
  })
  let signals = 0
  const onSignal = () => {
    signals++
    if (signals === 1 && server.active.size > 0) say(`stopping after ${server.active.size} guest(s) finish; interrupt again to stop now`)
    if (signals === 1) void server.close({ drain: true }).then(done)
    else server.stopSessions()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  await finished
  await server.close()
  return 0
}
