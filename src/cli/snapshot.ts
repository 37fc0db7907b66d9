// `faultline snapshot create|info|verify|extract`: argument parsing and output only; the
// work is in src/snapshot/.

import { parseArgs } from 'node:util'
import { describeError, exitStatusOf, formatCliError, UsageError } from '../errors.js'
import {
  DEFAULT_CHUNK_PAGES,
  DEFAULT_PAGE_SIZE,
  KIND_NAMES,
  MAX_CHUNK_PAGES,
  MAX_PAGE_SIZE,
  MIN_PAGE_SIZE,
  hex32,
  isValidChunkPages,
  isValidPageSize,
} from '../snapshot/format.js'
import { SnapshotReader } from '../snapshot/reader.js'
import { createSnapshot } from '../snapshot/writer.js'
import { extractSnapshot, verifySnapshot } from '../snapshot/verify.js'
import { openRemoteSnapshot } from '../store/remote-snapshot.js'
import { createS3Client, isS3Url, parseS3Url, resolveS3Settings } from '../store/s3-config.js'
import { S3Object } from '../store/s3-object.js'
import { pushSnapshot } from '../store/upload.js'
import { joinNegativeValues } from './options.js'
import { Progress, type ProgressStream } from './progress.js'
import { formatBytes, formatRate } from '../util/format.js'

export interface CliIo {
  stdout: ProgressStream
  stderr: ProgressStream
  env: NodeJS.ProcessEnv
}

const USAGE = {
  create: 'faultline snapshot create RAW SNAP [--page-size N] [--chunk-pages N]',
  info: 'faultline snapshot info SNAP|s3://BUCKET/KEY [--json] [--endpoint URL]',
  verify: 'faultline snapshot verify SNAP [--json]',
  extract: 'faultline snapshot extract SNAP OUT',
  push: 'faultline snapshot push SNAP s3://BUCKET/KEY [--endpoint URL] [--create-bucket]',
} as const
type Sub = keyof typeof USAGE

const HELP = `usage:
  ${USAGE.create}
      compress a raw memory image into a snapshot (page size default ${DEFAULT_PAGE_SIZE}, chunk pages default ${DEFAULT_CHUNK_PAGES})
  ${USAGE.info}
      header, page kinds, sizes, ratio, checksums and chunking (validates header and index;
      for s3:// reads only those, with ranged GETs)
  ${USAGE.verify}
      decode every page and check its checksum; exit 1 if any page is corrupt
  ${USAGE.extract}
      write the raw image back, byte-identical to the original
  ${USAGE.push}
      upload a snapshot to an S3 store (multipart); endpoint and keys from AWS_ENDPOINT_URL_S3,
      AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, or --endpoint
`

/** Entry point for `faultline snapshot ...`; returns the exit status (0 ok, 1 failed, 2 usage). */
export async function snapshotCommand(argv: string[], io?: Partial<CliIo>): Promise<number> {
  const out: CliIo = { stdout: process.stdout, stderr: process.stderr, env: process.env, ...io }
  const [sub, ...rest] = argv
  try {
    if (sub === undefined) throw new UsageError(`snapshot: missing subcommand (create, info, verify, extract, push); see faultline snapshot --help`)
    if (sub === '--help' || sub === '-h' || sub === 'help') {
      out.stdout.write(HELP)
      return 0
    }
    if (!(sub in USAGE)) throw new UsageError(`snapshot: unknown subcommand "${sub}" (create, info, verify, extract, push)`)
    if (rest.includes('--help') || rest.includes('-h')) {
      out.stdout.write(`usage: ${USAGE[sub as Sub]}\n`)
      return 0
    }
    switch (sub as Sub) {
      case 'create':
        return await create(rest, out)
      case 'info':
        return await info(rest, out)
      case 'verify':
        return verify(rest, out)
      case 'extract':
        return extract(rest, out)
      case 'push':
        return await push(rest, out)
    }
  } catch (err) {
    out.stderr.write(`${formatCliError(err, out.env)}\n`)
    return exitStatusOf(err)
  }
  return 1
}

async function create(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(
    'create',
    args,
    {
      'page-size': { type: 'string' },
      'chunk-pages': { type: 'string' },
    },
    ['RAW', 'SNAP'],
  )
  const [raw, snap] = positionals
  const pageSize = values['page-size'] === undefined ? undefined : parseCount('--page-size', values['page-size'])
  if (pageSize !== undefined && !isValidPageSize(pageSize)) {
    throw new UsageError(`--page-size ${pageSize}: must be a power of two from ${MIN_PAGE_SIZE} to ${MAX_PAGE_SIZE}`)
  }
  const chunkPages = values['chunk-pages'] === undefined ? undefined : parseCount('--chunk-pages', values['chunk-pages'])
  if (chunkPages !== undefined && !isValidChunkPages(chunkPages)) {
    throw new UsageError(`--chunk-pages ${chunkPages}: must be from 1 to ${MAX_CHUNK_PAGES}`)
  }
  const progress = new Progress(`create ${snap}`, 0, { stream: io.stderr })
  let r
  try {
    r = await createSnapshot(raw, snap, { pageSize, chunkPages, onProgress: progress.update })
  } finally {
    progress.clear()
  }
  const h = r.header
  const secs = r.elapsedMs / 1000
  io.stdout.write(
    `${snap}: ${h.pageCount} pages of ${h.pageSize} (zero ${h.zeroPages}, lz4 ${h.lz4Pages}, raw ${h.rawPages}), ` +
      `${h.imageSizeBytes} -> ${r.fileSizeBytes} bytes (ratio ${(h.imageSizeBytes / r.fileSizeBytes).toFixed(2)}), ` +
      `${secs.toFixed(2)} s, ${formatRate(h.imageSizeBytes / secs)}\n`,
  )
  return 0
}

async function info(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse('info', args, { json: { type: 'boolean' }, endpoint: { type: 'string' } }, ['SNAP'])
  const [snap] = positionals
  if (isS3Url(snap)) return remoteInfo(snap, values.endpoint, values.json === true, io)
  if (values.endpoint !== undefined) throw new UsageError(`snapshot info: --endpoint only applies to an s3:// snapshot`)
  const reader = SnapshotReader.open(snap)
  try {
    return printInfo(snapshotInfo(reader), values.json === true, io, [])
  } finally {
    reader.close()
  }
}

/** `info` of an s3:// snapshot: its header and index only, read with ranged GETs. */
async function remoteInfo(url: string, endpoint: string | undefined, json: boolean, io: CliIo): Promise<number> {
  const location = parseS3Url(url, 'snapshot info')
  const client = createS3Client(resolveS3Settings({ endpoint }, io.env), { maxSockets: 2 })
  const object = new S3Object(client, location)
  try {
    const r = await openRemoteSnapshot(object)
    const s = snapshotInfo({ path: url, fileSizeBytes: r.objectSizeBytes, header: r.header, index: r.index })
    const fetched = { gets: r.gets, bytes: r.bytesFetched }
    return printInfo({ ...s, etag: r.etag, fetched }, json, io, [
      ['etag', r.etag],
      ['fetched', `${fetched.bytes} bytes in ${fetched.gets} ranged GET(s): header and index only`],
    ])
  } finally {
    object.close()
    client.destroy()
  }
}

function printInfo(s: SnapshotInfo & { etag?: string; fetched?: { gets: number; bytes: number } }, json: boolean, io: CliIo, extra: string[][]): number {
  if (json) {
    io.stdout.write(`${JSON.stringify(s, null, 2)}\n`)
    return 0
  }
  const pct = (n: number) => `${((100 * n) / s.pageCount).toFixed(1)}%`
  const lines = [
    ['file', `${s.file} (${s.fileSizeBytes} bytes, ${formatBytes(s.fileSizeBytes)})`],
    ['format', `faultline snapshot version ${s.version}, LZ4 block compression`],
    ['image', `${s.imageSizeBytes} bytes (${formatBytes(s.imageSizeBytes)}), ${s.pageCount} pages of ${s.pageSize} bytes`],
    ['pages', KIND_NAMES.map(k => `${k} ${s.pages[k]} (${pct(s.pages[k])})`).join(', ')],
    ['data', `${s.dataSizeBytes} bytes at offset ${s.dataOffset}; index ${s.pageCount * 16} bytes at offset ${s.indexOffset}`],
    ['ratio', `${s.ratio.toFixed(3)} (image bytes / file bytes)`],
    ['checksums', `${s.checksum} per decoded page; index CRC ${s.indexCrc}; header CRC ok`],
    [
      'chunking',
      `${s.chunkPages} pages (${formatBytes(s.chunkPages * s.pageSize)}) a chunk, ${s.chunkCount} chunks; ` +
        `stored bytes a chunk: median ${s.chunkStoredBytes.median}, max ${s.chunkStoredBytes.max}`,
    ],
    ...extra,
  ]
  io.stdout.write(lines.map(([k, v]) => `${k.padEnd(10)} ${v}\n`).join(''))
  return 0
}

/** `push`: upload a local snapshot (checked first) to s3://BUCKET/KEY. */
async function push(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse('push', args, { endpoint: { type: 'string' }, 'create-bucket': { type: 'boolean' } }, ['SNAP', 's3://BUCKET/KEY'])
  const [snap, url] = positionals
  if (isS3Url(snap)) throw new UsageError(`snapshot push: SNAP must be a local file, got ${snap} (usage: ${USAGE.push})`)
  const location = parseS3Url(url, 'snapshot push')
  const client = createS3Client(resolveS3Settings({ endpoint: values.endpoint }, io.env))
  const progress = new Progress(`push ${url}`, 0, { stream: io.stderr })
  let r
  try {
    r = await pushSnapshot(snap, location, client, { createBucket: values['create-bucket'], onProgress: progress.update })
  } finally {
    progress.clear()
    client.destroy()
  }
  const secs = r.elapsedMs / 1000
  io.stdout.write(
    `${r.url}: ${r.sizeBytes} bytes (${formatBytes(r.sizeBytes)}) uploaded from ${snap} in ${secs.toFixed(2)} s ` +
      `(${formatRate(r.sizeBytes / secs)}), ${r.parts} part(s), etag ${r.etag}${r.createdBucket ? `; created bucket s3://${location.bucket}` : ''}\n`,
  )
  return 0
}

export interface SnapshotInfo {
  file: string
  fileSizeBytes: number
  version: number
  pageSize: number
  pageCount: number
  imageSizeBytes: number
  indexOffset: number
  dataOffset: number
  dataSizeBytes: number
  pages: { zero: number; lz4: number; raw: number }
  ratio: number
  checksum: 'crc32'
  compression: 'lz4-block'
  indexCrc: string
  chunkPages: number
  chunkCount: number
  chunkStoredBytes: { min: number; median: number; max: number }
}

/** What `info` reports, from an open reader or a remote snapshot's header and index (no page
 * is decoded). */
export function snapshotInfo(reader: Pick<SnapshotReader, 'path' | 'fileSizeBytes' | 'header' | 'index'>): SnapshotInfo {
  const h = reader.header
  const ix = reader.index
  const chunkCount = Math.ceil(h.pageCount / h.chunkPages)
  const sizes = new Float64Array(chunkCount)
  for (let c = 0; c < chunkCount; c++) {
    const first = c * h.chunkPages
    const last = Math.min(h.pageCount, first + h.chunkPages) - 1
    sizes[c] = ix.runEnd(last) - ix.runStart(first)
  }
  sizes.sort()
  return {
    file: reader.path,
    fileSizeBytes: reader.fileSizeBytes,
    version: h.version,
    pageSize: h.pageSize,
    pageCount: h.pageCount,
    imageSizeBytes: h.imageSizeBytes,
    indexOffset: h.indexOffset,
    dataOffset: h.dataOffset,
    dataSizeBytes: h.dataSizeBytes,
    pages: { zero: h.zeroPages, lz4: h.lz4Pages, raw: h.rawPages },
    ratio: h.imageSizeBytes / reader.fileSizeBytes,
    checksum: 'crc32',
    compression: 'lz4-block',
    indexCrc: hex32(h.indexCrc),
    chunkPages: h.chunkPages,
    chunkCount,
    chunkStoredBytes: { min: sizes[0], median: sizes[chunkCount >> 1], max: sizes[chunkCount - 1] },
  }
}

function verify(args: string[], io: CliIo): number {
  const { values, positionals } = parse('verify', args, { json: { type: 'boolean' } }, ['SNAP'])
  const [snap] = positionals
  const progress = new Progress(`verify ${snap}`, 0, { stream: io.stderr })
  let r
  try {
    r = verifySnapshot(snap, { onProgress: progress.update })
  } finally {
    progress.clear()
  }
  if (values.json) {
    const { header: _h, ...rest } = r
    io.stdout.write(`${JSON.stringify({ file: snap, ...rest }, null, 2)}\n`)
  } else {
    for (const c of r.corrupt) io.stdout.write(`page ${c.page}: ${c.detail}\n`)
    io.stdout.write(`${snap}: ${r.pagesChecked} pages checked (zero ${r.zeroPages}, lz4 ${r.lz4Pages}, raw ${r.rawPages}), ` + `${r.corruptPages} corrupt\n`)
  }
  if (!r.ok) {
    const listed = r.corrupt.length < r.corruptPages ? ` (first ${r.corrupt.length} listed)` : ''
    io.stderr.write(`faultline: ${snap}: ${r.corruptPages} of ${r.pagesChecked} pages corrupt${listed}, first: page ${r.corrupt[0].page}\n`)
    return 1
  }
  return 0
}

function extract(args: string[], io: CliIo): number {
  const { positionals } = parse('extract', args, {}, ['SNAP', 'OUT'])
  const [snap, outPath] = positionals
  const progress = new Progress(`extract ${outPath}`, 0, { stream: io.stderr })
  let r
  try {
    r = extractSnapshot(snap, outPath, { onProgress: progress.update })
  } finally {
    progress.clear()
  }
  io.stdout.write(`${outPath}: ${r.bytesWritten} bytes written from ${snap}\n`)
  return 0
}

type OptionSpec = Record<string, { type: 'string' | 'boolean' }>

function parse<O extends OptionSpec>(sub: Sub, args: string[], options: O, names: string[]) {
  let parsed
  try {
    parsed = parseArgs({ args: joinNegativeValues(args, options), options, allowPositionals: true, strict: true })
  } catch (err) {
    // parseArgs messages run to several sentences; keep the first.
    const msg = describeError(err).split(/\.\s/)[0].replace(/\.$/, '')
    throw new UsageError(`snapshot ${sub}: ${msg} (usage: ${USAGE[sub]})`)
  }
  const { positionals } = parsed
  if (positionals.length < names.length) {
    throw new UsageError(`snapshot ${sub}: missing ${names.slice(positionals.length).join(' ')} (usage: ${USAGE[sub]})`)
  }
  if (positionals.length > names.length) {
    throw new UsageError(`snapshot ${sub}: unexpected argument "${positionals[names.length]}" (usage: ${USAGE[sub]})`)
  }
  for (const [i, p] of positionals.entries()) {
    if (p === '') throw new UsageError(`snapshot ${sub}: ${names[i]} is an empty string`)
  }
  return parsed
}

function parseCount(name: string, text: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${name} "${text}": not a whole number`)
  const n = Number(text)
  if (!Number.isSafeInteger(n)) throw new UsageError(`${name} ${text}: too large`)
  return n
}
