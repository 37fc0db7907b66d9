// Uploads a local snapshot to an object store (multipart, with progress), after checking it
// is a valid snapshot, and checks what landed.
import { CreateBucketCommand, HeadBucketCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { createReadStream } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { SnapshotReader } from '../snapshot/reader.js'
import { RemoteStoreError } from './errors.js'
import { classifyS3Error } from './retry.js'
import type { S3Location } from './s3-config.js'

export interface PushOptions {
  /** Create the bucket when it does not exist. */
  createBucket?: boolean
  /** Multipart part size (default 8 MiB; S3's minimum is 5 MiB). */
  partSizeBytes?: number
  /** Parts uploaded at once (default 4). */
  queueSize?: number
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

export interface PushResult {
  url: string
  sizeBytes: number
  etag: string
  parts: number
  elapsedMs: number
  createdBucket: boolean
}

export async function pushSnapshot(path: string, to: S3Location, client: S3Client, opts: PushOptions = {}): Promise<PushResult> {
  const reader = SnapshotReader.open(path)
  const sizeBytes = reader.fileSizeBytes
  reader.close()
  const t0 = performance.now()
  const createdBucket = await ensureBucket(client, to, opts.createBucket ?? false)
  const partSize = opts.partSizeBytes ?? 8 * 2 ** 20
  const upload = new Upload({
    client,
    params: { Bucket: to.bucket, Key: to.key, Body: createReadStream(path), ContentType: 'application/octet-stream' },
    partSize,
    queueSize: opts.queueSize ?? 4,
    leavePartsOnError: false,
  })
  upload.on('httpUploadProgress', p => opts.onProgress?.(p.loaded ?? 0, sizeBytes))
  try {
    await upload.done()
  } catch (err) {
    throw new RemoteStoreError(to.url, classifyS3Error(err).kind, `upload of ${path} failed: ${classifyS3Error(err).detail}`, 1, { cause: err })
  }
  let head
  try {
    head = await client.send(new HeadObjectCommand({ Bucket: to.bucket, Key: to.key }))
  } catch (err) {
    throw new RemoteStoreError(to.url, classifyS3Error(err).kind, `uploaded, but cannot be read back: ${classifyS3Error(err).detail}`, 1, { cause: err })
  }
  if (head.ContentLength !== sizeBytes) {
    throw new RemoteStoreError(to.url, 'short', `uploaded ${sizeBytes} bytes from ${path}, but the store holds ${head.ContentLength}`)
  }
  return {
    url: to.url,
    sizeBytes,
    etag: head.ETag ?? '',
    parts: Math.max(1, Math.ceil(sizeBytes / partSize)),
    elapsedMs: performance.now() - t0,
    createdBucket,
  }
}

/** Checks the bucket exists; creates it when asked to. Returns whether it was created. */
async function ensureBucket(client: S3Client, to: S3Location, create: boolean): Promise<boolean> {
  const bucketUrl = `s3://${to.bucket}`
  try {
    await client.send(new HeadBucketCommand({ Bucket: to.bucket }))
    return false
  } catch (err) {
    const c = classifyS3Error(err)
    // HeadBucket has no body: a 404 comes back as NotFound rather than NoSuchBucket.
    if (c.kind !== 'missing') throw new RemoteStoreError(bucketUrl, c.kind, c.detail, 1, { cause: err })
    if (!create) throw new RemoteStoreError(bucketUrl, 'missing', 'no such bucket (create it, or push with --create-bucket)')
  }
  try {
    await client.send(new CreateBucketCommand({ Bucket: to.bucket }))
  } catch (err) {
    const c = classifyS3Error(err)
    throw new RemoteStoreError(bucketUrl, c.kind, `cannot create the bucket: ${c.detail}`, 1, { cause: err })
  }
  return true
}
