// Where an s3:// snapshot lives and how to reach it: URL parsing, and the S3 client settings
// taken the way every S3 tool takes them (AWS_* variables, overridden by --endpoint).
import { S3Client } from '@aws-sdk/client-s3'
import { Agent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import { StoreArgumentError } from './errors.js'

export interface S3Location {
  bucket: string
  key: string
  /** `s3://bucket/key`, as errors and logs name the object. */
  url: string
}

export function isS3Url(text: string): boolean {
  return text.startsWith('s3://')
}

// S3's bucket naming rules (3-63 of a-z 0-9 . -, starting and ending alnum): RGW accepts
// more, but a name valid everywhere keeps snapshots portable between stores.
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/

/** Parses `s3://bucket/key`; `what` names the argument in errors (e.g. `--snapshot`). */
export function parseS3Url(text: string, what = 'URL'): S3Location {
  if (!isS3Url(text)) throw new StoreArgumentError(`${what} ${text}: expected s3://BUCKET/KEY`)
  const rest = text.slice('s3://'.length)
  const slash = rest.indexOf('/')
  const bucket = slash < 0 ? rest : rest.slice(0, slash)
  const key = slash < 0 ? '' : rest.slice(slash + 1)
  if (!BUCKET.test(bucket)) {
    throw new StoreArgumentError(`${what} ${text}: bucket '${bucket}' is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')`)
  }
  if (key === '') throw new StoreArgumentError(`${what} ${text}: no object key after the bucket (s3://${bucket}/KEY)`)
  if (Buffer.byteLength(key) > 1024) throw new StoreArgumentError(`${what} ${text}: object key longer than 1024 bytes`)
  return { bucket, key, url: `s3://${bucket}/${key}` }
}

export interface S3Settings {
  /** Custom endpoint (Ceph RGW, MinIO...); undefined means AWS itself. */
  endpoint?: string
  /** Where the endpoint came from, for messages. */
  endpointFrom: string
  region: string
  /** From AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; undefined leaves it to the SDK's chain
   * (profiles, SSO, instance roles). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }
  /** Path-style addressing (`endpoint/bucket/key`), used whenever an endpoint is given. */
  forcePathStyle: boolean
}

/** Resolves endpoint, region and credentials: `--endpoint` beats AWS_ENDPOINT_URL_S3, which
 * beats AWS_ENDPOINT_URL. */
export function resolveS3Settings(flags: { endpoint?: string } = {}, env: NodeJS.ProcessEnv = process.env): S3Settings {
  let endpoint: string | undefined
  let endpointFrom = 'AWS'
  for (const [from, value] of [
    ['--endpoint', flags.endpoint],
    ['AWS_ENDPOINT_URL_S3', env.AWS_ENDPOINT_URL_S3],
    ['AWS_ENDPOINT_URL', env.AWS_ENDPOINT_URL],
  ] as const) {
    if (value !== undefined && value !== '') {
      endpoint = value
      endpointFrom = from
      break
    }
  }
  if (endpoint !== undefined) {
    let u: URL
    try {
      u = new URL(endpoint)
    } catch {
      throw new StoreArgumentError(`${endpointFrom} ${endpoint}: not a URL (expected http://HOST:PORT)`)
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new StoreArgumentError(`${endpointFrom} ${endpoint}: expected an http:// or https:// URL`)
    }
    endpoint = endpoint.replace(/\/+$/, '')
  }
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1'
  let credentials: S3Settings['credentials']
  const id = env.AWS_ACCESS_KEY_ID,
    secret = env.AWS_SECRET_ACCESS_KEY
  if (id || secret) {
    if (!id) throw new StoreArgumentError('AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not')
    if (!secret) throw new StoreArgumentError('AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not')
    credentials = { accessKeyId: id, secretAccessKey: secret, sessionToken: env.AWS_SESSION_TOKEN || undefined }
  }
  return { endpoint, endpointFrom, region, credentials, forcePathStyle: endpoint !== undefined }
}

export interface S3ClientOptions {
  /** Sockets kept open to the endpoint (the fetch pool's concurrency). */
  maxSockets?: number
  connectTimeoutMs?: number
}

/** An S3 client for `settings`. Retries are faultline's own (see retry.ts): the SDK makes one
 * attempt per call. Checksums only when required: Ceph Pacific has no flexible checksums. */
export function createS3Client(settings: S3Settings, opts: S3ClientOptions = {}): S3Client {
  // The SDK warns once per process that releases after January 2027 need Node 22; faultline
  // pins its SDK version, so the warning is noise on every command. An explicit setting wins.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
  const maxSockets = opts.maxSockets ?? 16
  return new S3Client({
    endpoint: settings.endpoint,
    region: settings.region,
    credentials: settings.credentials,
    forcePathStyle: settings.forcePathStyle,
    maxAttempts: 1,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      connectionTimeout: opts.connectTimeoutMs ?? 3000,
      httpAgent: new Agent({ keepAlive: true, maxSockets }),
      httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
    },
  })
}

const SIZE = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i
/** 1 PiB: beyond any cache or memory size given on a command line (and exact as a Number). */
const MAX_SIZE_BYTES = 2 ** 50

/** Parses a size like `4G`, `512M`, `1.5GiB` or a plain byte count (powers of 1024). */
export function parseSize(text: string, what: string): number {
  const m = SIZE.exec(text.trim())
  if (!m) throw new StoreArgumentError(`${what} ${text}: expected a size such as 4G, 512M or a byte count`)
  const scale = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't']
  const bytes = Math.floor(Number(m[1]) * scale)
  if (bytes > MAX_SIZE_BYTES) throw new StoreArgumentError(`${what} ${text}: too large (at most ${MAX_SIZE_BYTES / 2 ** 40}T)`)
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new StoreArgumentError(`${what} ${text}: must be a positive size`)
  return bytes
}
