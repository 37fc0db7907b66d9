// When a failed S3 request is worth another try, and how long to wait before it: pure
// functions, so the classification of every failure the store can see is tested directly.
import type { RemoteFailureKind } from './errors.js'

export interface RetryOptions {
  /** Attempts in all, the first included. */
  attempts: number
  /** Backoff before retry n (1-based) is uniform in [0, min(maxDelayMs, baseDelayMs * 2^(n-1))]
   * ("full jitter"), so guests retrying together do not stampede the store. */
  baseDelayMs: number
  maxDelayMs: number
  /** One attempt, response body included, must finish within this. */
  attemptTimeoutMs: number
}

export const DEFAULT_RETRY: RetryOptions = { attempts: 5, baseDelayMs: 100, maxDelayMs: 2000, attemptTimeoutMs: 5000 }

export interface Classified {
  kind: RemoteFailureKind
  retry: boolean
  /** One line: what went wrong, with the S3 error code and HTTP status when there is one. */
  detail: string
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
])

/** Sorts an error thrown by an S3 client call (or its body stream) into a failure kind. */
export function classifyS3Error(err: unknown): Classified {
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } }
  const status = e?.$metadata?.httpStatusCode
  const name = e?.name ?? 'Error'
  const tag = status !== undefined ? `${name}, HTTP ${status}` : (e?.code ?? name)
  if (name === 'CredentialsProviderError') {
    return { kind: 'credentials', retry: false, detail: 'no S3 credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an AWS profile)' }
  }
  if (status === 404) {
    const what = name === 'NoSuchBucket' ? 'bucket' : 'object'
    return { kind: 'missing', retry: false, detail: `no such ${what} (${tag})` }
  }
  if (status === 403) {
    const hint =
      name === 'InvalidAccessKeyId' || name === 'SignatureDoesNotMatch'
        ? 'wrong credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY'
        : 'access denied'
    return { kind: 'denied', retry: false, detail: `${hint} (${tag})` }
  }
  if (status === 412) return { kind: 'invalid', retry: false, detail: `the object changed while being served (ETag no longer matches; ${tag})` }
  if (status === 416) return { kind: 'invalid', retry: false, detail: `range past the end of the object (${tag})` }
  if (status === 429 || (status === 503 && name !== 'ServiceUnavailable') || name === 'SlowDown' || name === 'Throttling' || name === 'ThrottlingException') {
    return { kind: 'throttled', retry: true, detail: `throttled (${tag})` }
  }
  if (status === 408 || name === 'RequestTimeout' || name === 'RequestTimeoutException') {
    return { kind: 'timeout', retry: true, detail: `the store timed the request out (${tag})` }
  }
  if (status !== undefined && status >= 500) return { kind: 'server', retry: true, detail: `server error (${tag})` }
  if (status !== undefined && status >= 300) return { kind: 'invalid', retry: false, detail: `request refused (${tag})` }
  if (name === 'TimeoutError' || name === 'AbortError') return { kind: 'timeout', retry: true, detail: `no answer in time (${name})` }
  if (e?.code !== undefined && NETWORK_CODES.has(e.code)) return { kind: 'network', retry: true, detail: `network error (${e.code})` }
  // Anything else without an HTTP status (a body cut short, a response that does not parse)
  // happened on the way: worth the bounded retries.
  const message = (e?.message ?? String(err)).split('\n')[0]
  return { kind: 'network', retry: true, detail: `${message} (${tag})` }
}

/** Delay before retry number `retry` (1 = the first retry). `random` is in [0, 1). */
export function backoffMs(retry: number, opts: RetryOptions, random: number = Math.random()): number {
  const cap = Math.min(opts.maxDelayMs, opts.baseDelayMs * 2 ** Math.max(0, retry - 1))
  return Math.floor(random * cap)
}
