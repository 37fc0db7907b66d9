// Test pieces for the store: a small synthetic snapshot on disk, and a RangeSource over its
// bytes in memory that counts reads and can be held, failed or corrupted on demand.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSnapshot } from '../../src/snapshot/writer.js'
import { writeSyntheticImage } from '../../src/snapshot/synthetic-image.js'
import { RemoteStoreError } from '../../src/store/errors.js'
import type { RangeReadStats, RangeResult, RangeSource } from '../../src/store/s3-object.js'

interface Teardown {
  teardown(fn: () => unknown): void
}

export function tempDir(t: Teardown, prefix = 'fl-store-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export interface TestSnapshot {
  raw: string
  snap: string
  rawBytes: Buffer
  snapBytes: Buffer
}

/** A `mib` MiB synthetic image and its snapshot (default 64-page chunks). */
export async function testSnapshot(dir: string, mib: number, seed = 1, chunkPages?: number): Promise<TestSnapshot> {
  const raw = join(dir, `img${seed}.raw`)
  const snap = join(dir, `img${seed}.snap`)
  writeSyntheticImage(raw, mib * 2 ** 20, { seed })
  await createSnapshot(raw, snap, { chunkPages })
  return { raw, snap, rawBytes: readFileSync(raw), snapBytes: readFileSync(snap) }
}

/** What the next read does instead of answering. */
export type ReadFault = { kind: 'fail'; error: RemoteStoreError } | { kind: 'corrupt' }

export class MemoryRangeSource implements RangeSource {
  readonly url: string
  readonly stats: RangeReadStats = { requests: 0, retries: 0, bytesFetched: 0, failures: 0 }
  /** Every read, as [start, length]. */
  readonly reads: Array<[number, number]> = []
  /** Reads wait for this while set (to hold fetches in flight). */
  gate: Promise<void> | undefined
  /** Reads starting at a key wait for its promise (one slow GET among others). */
  readonly holds = new Map<number, Promise<void>>()
  /** Faults applied to the next reads, in order (a read past the header only). */
  faults: ReadFault[] = []
  inflight = 0
  maxInflight = 0
  private bytes: Buffer

  constructor(bytes: Buffer, url = 's3://test-bucket/mem.snap') {
    this.bytes = bytes
    this.url = url
  }

  async read(start: number, length: number, allowShort = false): Promise<RangeResult> {
    this.stats.requests++
    this.reads.push([start, length])
    this.inflight++
    this.maxInflight = Math.max(this.maxInflight, this.inflight)
    try {
      if (this.gate !== undefined) await this.gate
      const hold = this.holds.get(start)
      if (hold !== undefined) await hold
      await new Promise(r => setImmediate(r))
      const fault = start >= 4096 && length > 0 ? this.faults.shift() : undefined
      if (fault?.kind === 'fail') {
        this.stats.failures++
        throw fault.error
      }
      const end = Math.min(this.bytes.length, start + length)
      if (end - start !== length && !allowShort) throw new RemoteStoreError(this.url, 'short', `read past the end`)
      const out = Buffer.from(this.bytes.subarray(start, end))
      if (fault?.kind === 'corrupt') for (let i = 0; i < out.length; i += 97) out[i] ^= 0x5a
      this.stats.bytesFetched += out.length
      return { bytes: out, objectSizeBytes: this.bytes.length, etag: '"test"' }
    } finally {
      this.inflight--
    }
  }

  close(): void {}
}

/** Resolves after the event loop has run `turns` times (fetches in memory finish in a few). */
export async function settle(turns = 50): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise(r => setImmediate(r))
}
