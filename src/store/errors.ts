// Errors of the object-store side: a bad s3:// URL or option, and a remote read that failed
// for good (after retries, or at once when retrying cannot help), naming the object.
import { FaultlineError, UsageError } from '../errors.js'

/** A malformed `s3://bucket/key`, endpoint, size or cache argument: a usage error (exit 2). */
export class StoreArgumentError extends UsageError {
  override readonly code: string = 'FL_ERR_STORE_ARGUMENT'
}

/** Why a remote read failed; decides whether it is retried. */
export type RemoteFailureKind =
  | 'missing' // no such bucket or object (404): retrying will not make it appear
  | 'denied' // wrong credentials or no permission (403)
  | 'invalid' // the request itself is wrong (400, 416 range past the end, 301 region)
  | 'throttled' // 429 / 503 SlowDown: retried with backoff
  | 'server' // other 5xx: retried
  | 'timeout' // no complete answer within the per-attempt deadline: retried
  | 'network' // refused, reset, DNS...: retried
  | 'short' // fewer bytes than the range asked for: retried
  | 'corrupt' // data arrived but fails its checksum: retried once, then fatal
  | 'credentials' // no credentials could be found at all

/** A remote operation on `url` that failed for good: `s3://b/k: GET bytes=0-4095: ...`. */
export class RemoteStoreError extends FaultlineError {
  override readonly code: string = 'FL_ERR_REMOTE_STORE'
  readonly url: string
  readonly kind: RemoteFailureKind
  readonly attempts: number
  constructor(url: string, kind: RemoteFailureKind, detail: string, attempts = 1, options?: { cause?: unknown }) {
    super(`${url}: ${detail}`, options)
    this.url = url
    this.kind = kind
    this.attempts = attempts
  }
}

/** The on-disk chunk cache cannot be used (locked by another server, not writable...). */
export class ChunkCacheError extends FaultlineError {
  override readonly code: string = 'FL_ERR_CHUNK_CACHE'
}
