// Snapshots in a real object store, end to end: a single-node Ceph cluster (scripts/ceph)
// serves S3; snapshots are pushed to it with the CLI; real guests resume from it through
// userfaultfd with every touched page checked against the raw image; a second guest is
// served from the local cache; and store failures (injected by a loopback proxy, or real:
// missing object, wrong keys, corrupt data) fail the guest closed with the object named.
// remote.test.ts runs this when Ceph is installed.
import t from 'tap'
import { DeleteObjectCommand } from '@aws-sdk/client-s3'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { snapshotCommand } from '../../src/cli/snapshot.js'
import { serveCommand } from '../../src/cli/serve.js'
import type { PageServer, PageServerOptions } from '../../src/server/page-server.js'
import { SnapshotReader } from '../../src/snapshot/reader.js'
import { startCephCluster } from '../../src/bench/ceph-cluster.js'
import { createS3Client, resolveS3Settings } from '../../src/store/s3-config.js'
import { FaultProxy, type ProxyAction } from '../store/fault-proxy.js'
import { makeImage, runGuest, scratchDir, startServer, waitUntil } from './harness.js'

const ceph = await startCephCluster()
t.teardown(() => ceph.stop())
// Everything below (CLI commands included) takes the store from the standard variables.
Object.assign(process.env, ceph.env)

const dir = scratchDir(t, 'fl-remote-')
const MIB = 8
const img = await makeImage(dir, MIB, 7)
const BUCKET = 'faultline-e2e'
const URL = `s3://${BUCKET}/guests/mem.snap`
const reader = SnapshotReader.open(img.snap)
t.teardown(() => reader.close())
const index = reader.index
let caches = 0

/** Runs a snapshot subcommand in-process; returns its status and output. */
async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '',
    err = ''
  const code = await snapshotCommand(argv, {
    stdout: {
      write: (s: string) => {
        out += s
      },
    },
    stderr: {
      write: (s: string) => {
        err += s
      },
    },
    env: process.env,
  })
  return { code, out, err }
}

/** Stored chunks holding the non-zero pages of `pages` (what an ondemand guest must fetch). */
function chunksOf(pages: Iterable<number>): Set<number> {
  const out = new Set<number>()
  for (const p of pages) if (index.kindOf(p) !== 0) out.add(Math.floor(p / index.chunkPages))
  return out
}

function touched(file: string): number[] {
  const b = readFileSync(file)
  const out: number[] = []
  for (let i = 0; i < b.length; i += 4) out.push(b.readUInt32LE(i))
  return out
}

async function remoteServer(
  t: any,
  opts: Partial<PageServerOptions> = {},
  remote: PageServerOptions['remote'] = {},
): Promise<{ server: PageServer; socket: string; logs: string[] }> {
  const socket = join(dir, `s${++caches}.sock`)
  const server = await startServer(t, {
    snapshotPath: URL,
    socketPath: socket,
    ...opts,
    remote: { cacheDir: join(dir, `cache${caches}`), cacheSizeBytes: 256 * 2 ** 20, ...remote },
  })
  const logs: string[] = []
  server.on('log', l => logs.push(l))
  return { server, socket, logs }
}

t.test('snapshot push uploads (multipart) and info reads only the header and index', async t => {
  const r = await cli(['push', img.snap, URL, '--create-bucket'])
  t.equal(r.code, 0, r.err)
  t.match(
    r.out,
    new RegExp(
      `^${URL}: ${reader.fileSizeBytes} bytes \\(.*\\) uploaded from ${img.snap} in .* 1 part\\(s\\), etag "[0-9a-f-]+"; created bucket s3://${BUCKET}\\n$`,
    ),
  )
  const info = await cli(['info', URL, '--json'])
  t.equal(info.code, 0, info.err)
  const j = JSON.parse(info.out)
  t.equal(j.file, URL)
  t.equal(j.pageCount, reader.pageCount)
  t.equal(j.fileSizeBytes, reader.fileSizeBytes)
  t.equal(j.indexCrc, `0x${reader.header.indexCrc.toString(16).padStart(8, '0')}`)
  // One 64 KiB ranged GET holds the header and this snapshot's whole index.
  t.ok(reader.header.dataOffset <= 65536)
  t.equal(j.fetched.gets, 1, 'one ranged GET')
  t.equal(j.fetched.bytes, Math.min(65536, reader.fileSizeBytes), 'of 64 KiB: header and index, no page data beyond that read')
  const big = join(dir, 'big.snap')
  writeFileSync(big, Buffer.alloc(10))
  const bad = await cli(['push', big, `s3://${BUCKET}/x.snap`])
  t.equal(bad.code, 1)
  t.match(bad.err, /^faultline: .*big.snap: not a faultline snapshot/, 'push checks the file is a snapshot first')
  const badUrl = await cli(['push', img.snap, 's3://Bad_Bucket/x.snap'])
  t.equal(badUrl.code, 2, 'a malformed URL is a usage error')
  t.match(badUrl.err, /^faultline: snapshot push s3:\/\/Bad_Bucket\/x.snap: bucket 'Bad_Bucket' is not a valid bucket name/)
  const endpointLocal = await cli(['info', img.snap, '--endpoint', 'http://127.0.0.1:1'])
  t.equal(endpointLocal.code, 2)
  t.match(endpointLocal.err, /--endpoint only applies to an s3:\/\/ snapshot/)
  const noBucket = await cli(['push', img.snap, 's3://no-such-bucket-here/x.snap'])
  t.equal(noBucket.code, 1)
  t.match(noBucket.err, /^faultline: s3:\/\/no-such-bucket-here: no such bucket \(create it, or push with --create-bucket\)\n$/)
})

/** The stored bytes of `chunks`: what fetching them costs. */
function storedBytes(chunks: Iterable<number>): number {
  let n = 0
  for (const c of chunks) {
    const first = c * index.chunkPages
    n += index.runEnd(Math.min(index.pageCount, first + index.chunkPages) - 1) - index.runStart(first)
  }
  return n
}

/** Pages to touch, one per chunk, in chunks that hold stored pages: `pages:FILE` workloads
 * that each need chunks no other subtest touched. */
const storedPageOfChunk: number[] = []
for (let c = 0; c * index.chunkPages < index.pageCount; c++) {
  let p = c * index.chunkPages
  while (p < Math.min(index.pageCount, (c + 1) * index.chunkPages) && index.kindOf(p) === 0) p++
  if (p < Math.min(index.pageCount, (c + 1) * index.chunkPages)) storedPageOfChunk.push(p)
}
let pageLists = 0
function pagesWorkload(pages: number[]): string {
  const file = join(dir, `pages-${++pageLists}.txt`)
  writeFileSync(file, pages.join('\n') + '\n')
  return `pages:${file}`
}

/** The cold-cache server's first guest, traced (the working-set test replays it): the first
 * half of the image. The guests that run at once after it take the second half. */
const TRACE = join(dir, 'first-guest.trace')
const HALF = MIB / 2
const FIRST_GUEST = (socket: string) => ['--socket', socket, '--mib', String(HALF), '--workload', 'random:0.3', '--seed', '3', '--verify', img.raw]

t.test('one server, cold cache', async t => {
  const { server, socket } = await remoteServer(t, { warmWorkers: 2, tracePath: TRACE })
  const store = server.store!

  t.test('a guest resumes from Ceph with its memory verified; a second one is served from the cache', async t => {
    t.equal(store.stats.chunksFetched, 0)
    const opened = store.stats.bytesFetched
    const list = join(dir, 'touched-1')
    const args = FIRST_GUEST(socket)
    const r1 = await runGuest([...args, '--touched-out', list])
    t.equal(r1.code, 0, r1.stderr)
    t.equal(r1.report?.mismatches, 0)
    t.equal(r1.report?.verified_pages, Math.round(0.3 * HALF * 256))
    const need = chunksOf(touched(list))
    const s1 = store.stats
    t.equal(s1.chunksFetched, need.size, 'exactly the chunks of the touched non-zero pages were fetched')
    t.equal(s1.bytesFetched - opened, storedBytes(need), 'and exactly their stored bytes')
    t.equal(s1.retries, 0)

    const r2 = await runGuest(args)
    t.equal(r2.code, 0, r2.stderr)
    t.equal(r2.report?.mismatches, 0)
    const s2 = store.stats
    t.equal(s2.bytesFetched, s1.bytesFetched, 'the second guest fetched nothing from the store')
    t.equal(s2.requests, s1.requests, 'not one GET')
    await server.idle()
    // By session id (accept order): the first guest's end can reach the main thread after the second's.
    const [e1, e2] = [...server.ended].sort((a, b) => a.id - b.id)
    t.ok(e1.stats!.remoteWaits > 0, `first guest: ${e1.stats!.remoteWaits} faults waited for Ceph`)
    t.equal(e2.stats!.remoteWaits, 0, 'second guest: no fault waited')
    t.equal(e2.stats!.faults, e1.stats!.faults)
  })

  t.test('guests at once: each chunk is fetched once for all of them', async t => {
    const cached = new Set<number>()
    for (let c = 0; c < store.layout.chunkCount; c++) if (store.table.state[c] === 2) cached.add(c)
    const before = store.stats.chunksFetched
    const lists = [1, 2].map(i => join(dir, `touched-many-${i}`))
    const runs = await Promise.all(
      lists.map((list, i) =>
        runGuest([
          '--socket',
          socket,
          '--mib',
          String(HALF),
          '--offset',
          String(HALF * 2 ** 20),
          '--workload',
          'random:0.3',
          '--seed',
          String(10 + i),
          '--threads',
          '2',
          '--verify',
          img.raw,
          '--touched-out',
          list,
        ]),
      ),
    )
    for (const r of runs) {
      t.equal(r.code, 0, r.stderr)
      t.equal(r.report?.mismatches, 0)
    }
    // Guest page p of the second half is snapshot page HALF MiB / 4 KiB + p.
    const need = [...chunksOf(lists.flatMap(touched).map(p => p + HALF * 256))].filter(c => !cached.has(c))
    t.ok(need.length >= 8, `${need.length} chunks the first guest did not need`)
    t.equal(store.stats.chunksFetched - before, need.length, 'each fetched once for both guests')
  })
})

t.test('cache-mapped guests from Ceph: fill workers fetch and decode whole folios into the decoded cache; the next guest maps them', async t => {
  const { server, socket } = await remoteServer(t, { warmWorkers: 2 })
  const store = server.store!
  const args = ['--socket', socket, '--mib', String(MIB), '--map', 'cache', '--workload', 'random:0.2', '--seed', '7', '--verify', img.raw, '--verify-each']
  const a = await runGuest(args)
  t.equal(a.code, 0, a.stderr)
  t.equal(a.report?.map, 'cache', 'an object-store snapshot has a decoded cache too')
  t.equal(a.report?.mismatches, 0)
  t.ok(await waitUntil(() => server.cacheCounts()!.pendingFolios === 0, 60000), 'the folios its faults asked for are in')
  const fetched = store.stats.chunksFetched
  t.ok(server.cacheCounts()!.fills > 0 && fetched > 0, `${server.cacheCounts()!.fills} folios filled from ${fetched} chunks`)
  const b = await runGuest(args)
  t.equal(b.code, 0, b.stderr)
  t.equal(b.report?.mismatches, 0)
  await server.idle()
  const [, eb] = [...server.ended].sort((x, y) => x.id - y.id)
  t.equal(eb.stats!.cache.privatePages, 0, 'the second guest found every folio in the cache')
  t.equal(store.stats.chunksFetched, fetched, 'and fetched nothing')
})

t.test('readahead prefetches chunks ahead of a sequential guest', async t => {
  const { server, socket } = await remoteServer(t, { policy: 'readahead:128' })
  const r = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'sequential', '--verify', img.raw])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.report?.verified_pages, MIB * 256)
  await server.idle()
  const st = server.ended[0].stats!
  t.ok(st.pagesInstalled[1] > st.pagesInstalled[0], `prefetch installed ${st.pagesInstalled[1]} pages, faults ${st.pagesInstalled[0]}`)
  t.ok(st.faults < (MIB * 256) / 4, `${st.faults} faults for ${MIB * 256} pages`)
  t.equal(server.store!.stats.chunksFetched, chunksOf(Array.from({ length: MIB * 256 }, (_, i) => i)).size)
})

t.test('a recorded working set (workingset:TRACE) is fetched before the guest asks, and installed as it arrives', async t => {
  // The trace the first guest of the cold-cache server recorded, and the same guest again.
  const { server, socket } = await remoteServer(t, { policy: `workingset:${TRACE}` })
  const r = await runGuest(FIRST_GUEST(socket))
  t.equal(r.code, 0, r.stderr)
  t.equal(r.report?.mismatches, 0)
  await server.idle()
  const st = server.ended[0].stats!
  const pages = touched(join(dir, 'touched-1'))
  t.equal(server.store!.stats.chunksFetched, chunksOf(pages).size, "the working set's chunks, each once")
  t.ok(st.pagesInstalled[1] > 0, `${st.pagesInstalled[1]} pages installed ahead of their fault`)
  t.ok(st.faults < pages.length, `${st.faults} faults for ${pages.length} pages touched`)
})

t.test('serve CLI: --snapshot s3:// with --cache-dir, --cache-size and --endpoint', async t => {
  const socket = join(dir, 'cli.sock')
  const cache = join(dir, 'cli-cache')
  const proxy = await FaultProxy.start(ceph.endpoint)
  t.teardown(() => proxy.close())
  const served = serveCommand(['--snapshot', URL, '--socket', socket, '--cache-dir', cache, '--cache-size', '64M', '--endpoint', proxy.url, '--once'])
  // The guest may connect once the socket exists (the kernel queues it until a worker accepts).
  while (!existsSync(socket)) await new Promise(r => setTimeout(r, 20))
  const r = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.1', '--verify', img.raw])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.report?.mismatches, 0)
  t.equal(await served, 0)
  t.ok(proxy.requests.length > 1, `--endpoint used: ${proxy.requests.length} requests went through it`)
  t.ok(
    proxy.requests.every(q => q.path.startsWith(`/${BUCKET}/guests/mem.snap`)),
    'path-style addressing',
  )
})

t.test('failures', async t => {
  t.test('injected by a proxy in front of Ceph', async t => {
    let decide: (dataGet: number) => ProxyAction = () => 'pass'
    let dataGets = 0
    const dataOffset = reader.header.dataOffset
    const proxy = await FaultProxy.start(ceph.endpoint, req =>
      Number(/^bytes=(\d+)-/.exec(req.range ?? '')?.[1] ?? 0) >= dataOffset ? decide(dataGets++) : 'pass',
    )
    t.teardown(() => proxy.close())
    const { server, socket, logs } = await remoteServer(
      t,
      { warmWorkers: 2 },
      { endpoint: proxy.url, retry: { attempts: 4, baseDelayMs: 5, maxDelayMs: 20, attemptTimeoutMs: 5000 } },
    )
    const store = server.store!
    /** Each case touches one chunk nobody touched before: its first GET meets the fault. */
    let nextChunk = 0
    const oneChunk = () => ['--socket', socket, '--mib', String(MIB), '--workload', pagesWorkload([storedPageOfChunk[nextChunk++]]), '--verify', img.raw]
    const inject = (actions: ProxyAction[]) => {
      const base = dataGets
      decide = n => actions[n - base] ?? 'pass'
    }

    t.test('throttling (503 SlowDown) and server errors are retried with backoff', async t => {
      const before = store.stats.retries
      inject([
        { status: 503, code: 'SlowDown' },
        { status: 500, code: 'InternalError' },
      ])
      const r = await runGuest(oneChunk())
      t.equal(r.code, 0, r.stderr)
      t.equal(r.report?.mismatches, 0)
      t.equal(store.stats.retries - before, 2)
      t.same(
        proxy.requests.filter(q => q.action !== 'pass').map(q => q.action),
        ['503 SlowDown', '500 InternalError'],
      )
    })

    t.test('a slow GET holds up only the faults that need its chunk', async t => {
      const cachedArgs = oneChunk()
      const warm = await runGuest(cachedArgs)
      t.equal(warm.code, 0, warm.stderr)
      let release!: () => void
      const held = new Promise<void>(r => {
        release = r
      })
      decide = () => ({ hold: held })
      let waitingDone = false
      const waiting = runGuest(oneChunk()).then(r => {
        waitingDone = true
        return r
      })
      while (!proxy.requests.some(q => q.action === 'hold')) await new Promise(r => setTimeout(r, 20))
      const other = await runGuest(cachedArgs)
      t.equal(other.code, 0, other.stderr)
      t.equal(other.report?.mismatches, 0)
      t.equal(waitingDone, false, "served while the other guest's GET is still held")
      decide = () => 'pass'
      release()
      const r = await waiting
      t.equal(r.code, 0, r.stderr)
      t.equal(r.report?.mismatches, 0)
    })

    t.test('a GET that never answers times out and is retried; a reset and a body cut short too', async t => {
      const before = store.stats.retries
      inject(['stall', 'reset', 'truncate'])
      const r = await runGuest(oneChunk())
      t.equal(r.code, 0, r.stderr)
      t.equal(r.report?.mismatches, 0)
      t.equal(store.stats.retries - before, 3)
      t.equal(store.stats.failures, 0)
    })

    t.test('retries exhausted: the guest fails closed, the server names the object', async t => {
      inject(Array(4).fill({ status: 500, code: 'InternalError' }))
      // No watchdog: the guest can only stop by the poisoned page's SIGBUS (POISON was
      // negotiated); a page neither served nor poisoned would hang it until the timeout.
      const page = storedPageOfChunk[nextChunk]
      const r = await runGuest([...oneChunk(), '--no-watchdog'], { timeoutMs: 30000 })
      t.equal(r.signal, null, 'it did not hang')
      t.equal(r.code, 4, 'exit 4: SIGBUS on a poisoned page')
      t.match(r.stderr, new RegExp(`^guest: SIGBUS at page ${page}: the page server poisoned it`), 'at the page the store could not deliver')
      await server.idle()
      const end = server.ended[server.ended.length - 1].stats!.endReason
      t.match(
        end,
        new RegExp(`^object store error: ${URL}: GET bytes=\\d+-\\d+: server error \\(InternalError, HTTP 500\\) \\(gave up after 4 attempts in \\d+ ms\\)$`),
      )
      t.match(logs.join('\n'), new RegExp(`session \\d+: cannot serve pages \\d+\\.\\.\\d+: ${URL}: GET`), 'one log line naming bucket and key')
    })

    t.test('the server keeps serving: the next guest gets that chunk once the store answers', async t => {
      nextChunk--
      const r = await runGuest(oneChunk())
      t.equal(r.code, 0, r.stderr)
      t.equal(r.report?.mismatches, 0)
    })

    t.test('retries exhausted, a guest that cannot be poisoned (Firecracker form): killed, and the log says why', async t => {
      inject(Array(4).fill({ status: 500, code: 'InternalError' }))
      const r = await runGuest([...oneChunk(), '--handshake', 'firecracker', '--no-watchdog'], { timeoutMs: 30000 })
      t.notOk(r.timedOut, `it did not hang (${r.elapsedMs} ms)`)
      t.equal(r.signal, 'SIGKILL', 'killed by the server (--on-unservable kill, the default)')
      await server.idle()
      t.match(
        logs.join('\n'),
        new RegExp(
          `session \\d+: object store error: ${URL}: GET bytes=\\d+-\\d+: server error \\(InternalError, HTTP 500\\).*; the guest's uffd cannot poison it: killed pid \\d+ \\(SIGKILL\\) \\(--on-unservable kill\\)`,
        ),
        'one line: the object, the reason, the kill',
      )
    })
  })

  t.test('a missing object or wrong keys stop the server from starting, with the reason', async t => {
    await t.rejects(
      startServer(t, {
        snapshotPath: `s3://${BUCKET}/nope.snap`,
        socketPath: join(dir, 'x.sock'),
        remote: { cacheDir: join(dir, 'x'), cacheSizeBytes: 2 ** 30 },
      }),
      new RegExp(`^s3://${BUCKET}/nope.snap: GET bytes=0-65535: no such object \\(NoSuchKey, HTTP 404\\)$`),
    )
    await t.rejects(
      startServer(t, {
        snapshotPath: URL,
        socketPath: join(dir, 'y.sock'),
        remote: { cacheDir: join(dir, 'y'), cacheSizeBytes: 2 ** 30, env: { ...process.env, AWS_SECRET_ACCESS_KEY: 'wrong' } },
      }),
      new RegExp(`^${URL}: GET bytes=0-65535: wrong credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \\(SignatureDoesNotMatch, HTTP 403\\)$`),
    )
    await t.rejects(
      startServer(t, {
        snapshotPath: URL,
        socketPath: join(dir, 'z.sock'),
        remote: { cacheDir: join(dir, 'z'), cacheSizeBytes: 2 ** 30, env: { ...process.env, AWS_ACCESS_KEY_ID: 'NOBODY' } },
      }),
      /InvalidAccessKeyId, HTTP 403/,
    )
  })

  t.test('corrupt data in the store, then the object deleted', async t => {
    // Flip bytes inside one stored LZ4 page: the header and index stay valid, the page's CRC
    // does not match any more.
    let page = 0
    while (index.kindOf(page) !== 1) page++
    const bytes = readFileSync(img.snap)
    const at = reader.header.dataOffset + index.storedOffset(page)
    for (let i = 0; i < index.storedLength(page); i += 7) bytes[at + i] ^= 0x3c
    const bad = join(dir, 'corrupt.snap')
    writeFileSync(bad, bytes)
    const key = 'guests/corrupt.snap'
    t.equal((await cli(['push', bad, `s3://${BUCKET}/${key}`])).code, 0)
    const socket = join(dir, 'corrupt.sock')
    const server = await startServer(t, {
      snapshotPath: `s3://${BUCKET}/${key}`,
      socketPath: socket,
      remote: {
        cacheDir: join(dir, 'corrupt-cache'),
        cacheSizeBytes: 64 * 2 ** 20,
        retry: { attempts: 3, baseDelayMs: 5, maxDelayMs: 20, attemptTimeoutMs: 5000 },
      },
    })
    const guest = (pages: number[]) => runGuest(['--socket', socket, '--mib', String(MIB), '--workload', pagesWorkload(pages), '--verify', img.raw])

    t.test('a page that fails its checksum is never served: poisoned, and named', async t => {
      // No watchdog: only the poisoned page's SIGBUS can stop the guest (see above).
      const r = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', pagesWorkload([page]), '--verify', img.raw, '--no-watchdog'], {
        timeoutMs: 30000,
      })
      t.equal(r.signal, null, 'it did not hang')
      t.equal(r.code, 4, 'exit 4: SIGBUS on a poisoned page')
      t.equal(r.report, undefined, 'it never got to check (and report) memory')
      t.match(r.stderr, new RegExp(`^guest: SIGBUS at page ${page}: the page server poisoned it`), 'poisoned at that very page')
      await server.idle()
      t.match(server.ended[0].stats!.endReason, new RegExp(`^object store error: s3://${BUCKET}/${key}: page ${page} is corrupt: `))
      t.equal(server.store!.stats.corruptFetches, 2, 'fetched twice before giving up')
    })

    t.test('the object deleted while being served: the guest fails closed, not retried', async t => {
      const client = createS3Client(resolveS3Settings())
      await client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: key }))
      client.destroy()
      const other = storedPageOfChunk.find(p => Math.floor(p / index.chunkPages) !== Math.floor(page / index.chunkPages))!
      const retries = server.store!.stats.retries
      const r = await guest([other])
      t.not(r.code, 0)
      t.equal(r.report, undefined)
      await server.idle()
      t.match(
        server.ended[1].stats!.endReason,
        new RegExp(`^object store error: s3://${BUCKET}/${key}: GET bytes=\\d+-\\d+: no such object \\(NoSuchKey, HTTP 404\\)$`),
      )
      t.equal(server.store!.stats.retries, retries, 'a missing object is not retried')
    })
  })
})
