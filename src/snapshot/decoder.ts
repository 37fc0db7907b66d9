// Decodes a run of stored pages, already in memory, into place and checks each page's CRC.
// Shared by the file reader and by any store that fetches stored byte ranges elsewhere.

import { crc32 } from 'node:zlib'
import { KIND_LZ4, KIND_ZERO, SnapshotCorruptError, hex32 } from './format.js'
import { lz4, type Lz4Block } from './lz4.js'
import type { SnapshotIndex } from './snapshot-index.js'

const TWO_32 = 4294967296
/** Page views are cached for the first this-many page slots of a destination buffer. */
const MAX_CACHED_VIEWS = 4096

export class PageDecoder {
  private readonly index: SnapshotIndex
  private readonly codec: Lz4Block
  private readonly pageSize: number
  // The LZ4 binding writes from an output buffer's first byte, and crc32 takes no range, so
  // each destination page needs a Buffer of its own: keep them per destination buffer.
  private viewsOf: Buffer | null = null
  private views: Array<Buffer | undefined> = []
  private readonly viewCache = new WeakMap<Buffer, Array<Buffer | undefined>>()

  constructor(index: SnapshotIndex) {
    this.index = index
    this.codec = lz4()
    this.pageSize = index.pageSize
  }

  /**
   * Decode pages first..first+count-1 into `into` at `intoOffset`. `src[srcStart]` is the
   * data byte at index.runStart(first); src must hold through index.runEnd(last). Bounds
   * are the caller's job (the reader checks them).
   */
  decodeRun(first: number, count: number, src: Buffer, srcStart: number, into: Buffer, intoOffset: number): void {
    const ps = this.pageSize
    const w = this.index.words
    const decodeBlock = this.codec.decodeBlock
    if (into !== this.viewsOf) this.selectViews(into)
    const views = this.views
    const bi = first * 4
    const base = srcStart - (w[bi] + (w[bi + 1] & 0xffff) * TWO_32)
    let dst = intoOffset
    for (let p = first, i = bi, end = first + count; p < end; p++, i += 4, dst += ps) {
      const hi = w[i + 1]
      const kind = (hi >>> 16) & 0xff
      if (kind === KIND_ZERO) {
        into.fill(0, dst, dst + ps)
        continue
      }
      let view: Buffer | undefined
      const slot = dst / ps
      if (slot < MAX_CACHED_VIEWS && (dst & (ps - 1)) === 0) {
        view = views[slot]
        if (view === undefined) view = views[slot] = into.subarray(dst, dst + ps)
      } else {
        view = into.subarray(dst, dst + ps)
      }
      const s = base + w[i] + (hi & 0xffff) * TWO_32
      const len = w[i + 2]
      if (kind === KIND_LZ4) {
        const n = decodeBlock(src, view, s, s + len)
        if (n !== ps) this.corrupt(p, n < 0 ? `LZ4 data malformed at byte ${-n}` : `decodes to ${n} bytes, expected ${ps}`)
      } else {
        src.copy(into, dst, s, s + len)
      }
      const c = crc32(view)
      if (c !== w[i + 3]) this.corrupt(p, `checksum mismatch (stored ${hex32(w[i + 3])}, computed ${hex32(c)})`)
    }
  }

  private selectViews(into: Buffer): void {
    let v = this.viewCache.get(into)
    if (v === undefined) {
      v = []
      this.viewCache.set(into, v)
    }
    this.views = v
    this.viewsOf = into
  }

  private corrupt(page: number, detail: string): never {
    throw new SnapshotCorruptError(this.index.file, page, detail)
  }
}
