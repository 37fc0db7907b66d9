// One object in an S3 store, read by byte range: each read is a ranged GET with a deadline,
// retried with backoff when that can help, pinned to the object's ETag so a replaced
// snapshot is noticed instead of mixed.
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import { performance } from 'node:perf_hooks'
import { RemoteStoreError } from './errors.js'
import { backoffMs, classifyS3Error, DEFAULT_RETRY, type RetryOptions } from './retry.js'
import type { S3Location } from './s3-config.js'

export interface RangeResult {
  bytes: Buffer
  /** The whole object's size, from Content-Range. */
  objectSizeBytes: number
  etag: string
}

export interface RangeReadStats {
  /** GET requests sent, retries included. */
  requests: number
  retries: number
  /** Payload bytes of successful GETs. */
  bytesFetched: number
  /** Reads that failed for good. */
  failures: number
}

/** What the chunk store reads from: one remote object, by range. */
export interface RangeSource {
  readonly url: string
  readonly stats: RangeReadStats
  /** Bytes [start, start+length). `allowShort` accepts fewer when the object ends sooner. */
  read(start: number, length: number, allowShort?: boolean): Promise<RangeResult>
  close(): void
}

export class S3Object implements RangeSource {
  readonly url: string
  readonly location: S3Location
  readonly stats: RangeReadStats = { requests: 0, retries: 0, bytesFetched: 0, failures: 0 }
  /** Set after the first read: later reads send If-Match with it. */
  etag: string | undefined
  private readonly client: S3Client
  private readonly retry: RetryOptions
  private readonly inflight = new Set<AbortController>()
  private closed = false

  constructor(client: S3Client, location: S3Location, retry: Partial<RetryOptions> = {}) {
    this.client = client
    this.location = location
    this.url = location.url
    this.retry = { ...DEFAULT_RETRY, ...retry }
  }

  async read(start: number, length: number, allowShort = false): Promise<RangeResult> {
    const range = `bytes=${start}-${start + length - 1}`
    const t0 = performance.now()
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new RemoteStoreError(this.url, 'network', `GET ${range}: the store is closing`, attempt)
      const abort = new AbortController()
      let timedOut = false
      const timer = setTimeout(() => {
        timedOut = true
        abort.abort()
      }, this.retry.attemptTimeoutMs)
      this.inflight.add(abort)
      this.stats.requests++
      try {
        const res = await this.client.send(new GetObjectCommand({ Bucket: this.location.bucket, Key: this.location.key, Range: range, IfMatch: this.etag }), {
          abortSignal: abort.signal,
        })
        const body = await res.Body!.transformToByteArray()
        const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
        const total = /\/(\d+)$/.exec(res.ContentRange ?? '')
        const objectSizeBytes = total ? Number(total[1]) : bytes.length
        if (bytes.length !== length && !(allowShort && bytes.length === Math.min(length, objectSizeBytes - start))) {
          throw new ShortRead(`${bytes.length} of ${length} bytes arrived`)
        }
        this.stats.bytesFetched += bytes.length
        this.etag ??= res.ETag
        return { bytes, objectSizeBytes, etag: res.ETag ?? '' }
      } catch (err) {
        const c = this.closed
          ? { kind: 'network' as const, retry: false, detail: 'the store is closing' }
          : timedOut
            ? { kind: 'timeout' as const, retry: true, detail: `no complete answer within ${this.retry.attemptTimeoutMs} ms` }
            : err instanceof ShortRead
              ? { kind: 'short' as const, retry: true, detail: err.message }
              : classifyS3Error(err)
        if (!c.retry || attempt >= this.retry.attempts) {
          this.stats.failures++
          const gaveUp = attempt > 1 ? ` (gave up after ${attempt} attempts in ${Math.round(performance.now() - t0)} ms)` : ''
          throw new RemoteStoreError(this.url, c.kind, `GET ${range}: ${c.detail}${gaveUp}`, attempt, { cause: err })
        }
        this.stats.retries++
        await sleep(backoffMs(attempt, this.retry))
      } finally {
        clearTimeout(timer)
        this.inflight.delete(abort)
      }
    }
  }

  /** Aborts reads in flight; later reads fail at once. */
  close(): void {
    this.closed = true
    for (const a of this.inflight) a.abort()
  }
}

class ShortRead extends Error {}

const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms))
