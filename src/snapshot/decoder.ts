// Decodes a run of stored pages, already in memory, into place and checks each page's CRC.
// Shared by the file reader and by any store that fetches stored byte ranges elsewhere.
// The native codec does a run in one call; the npm one (FAULTLINE_CODEC=npm) page by page.

import { crc32 } from 'node:zlib'
import { KIND_LZ4, KIND_ZERO, SnapshotCorruptError, hex32 } from './format.js'
import { lz4, type Lz4Block } from './lz4.js'
import {
  A_COUNT,
  A_DETAIL0,
  A_DETAIL1,
  A_DST,
  A_FD,
  A_FILE_OFFSET,
  A_FIRST,
  A_LENGTH,
  A_PAGE_SIZE,
  A_SRC,
  A_WORDS,
  FAIL_CHECKSUM,
  FAIL_LZ4_MALFORMED,
  nativeCodec,
  pageCodecName,
  runArgs,
  type NativeCodec,
  type PageCodecName,
} from './native-codec.js'
import type { SnapshotIndex } from './snapshot-index.js'

const TWO_32 = 4294967296
/** Page views are cached for the first this-many page slots of a destination buffer. */
const MAX_CACHED_VIEWS = 4096

export class PageDecoder {
  private readonly index: SnapshotIndex
  private readonly codec: Lz4Block
  private readonly pageSize: number
  /** The native codec, when this decoder uses it. */
  readonly native: NativeCodec | undefined
  private readonly args = runArgs()
  // Addresses of the last source and destination Buffers (the reader's and the session's
  // buffers stay the same from run to run, so each is looked up once).
  private srcOf: Buffer | null = null
  private srcAddress = 0
  private intoOf: Buffer | null = null
  private intoAddress = 0
  // The LZ4 binding writes from an output buffer's first byte, and crc32 takes no range, so
  // each destination page needs a Buffer of its own: keep them per destination buffer.
  private viewsOf: Buffer | null = null
  private views: Array<Buffer | undefined> = []
  private readonly viewCache = new WeakMap<Buffer, Array<Buffer | undefined>>()

  /** `codec` defaults to FAULTLINE_CODEC's choice. */
  constructor(index: SnapshotIndex, codec: PageCodecName = pageCodecName) {
    this.index = index
    this.codec = lz4()
    this.pageSize = index.pageSize
    this.native = codec === 'native' ? nativeCodec() : undefined
    if (this.native) {
      this.args[A_WORDS] = this.native.addressOf(index.words)
      this.args[A_PAGE_SIZE] = this.pageSize
    }
  }

  /**
   * Decode pages first..first+count-1 into `into` at `intoOffset`. `src[srcStart]` is the
   * data byte at index.runStart(first); src must hold through index.runEnd(last). Bounds
   * are the caller's job (the reader checks them).
   */
  decodeRun(first: number, count: number, src: Buffer, srcStart: number, into: Buffer, intoOffset: number): void {
    const native = this.native
    if (native !== undefined) {
      this.setRun(native, first, count, src, srcStart, into, intoOffset)
      const bad = native.decodeRun(this.args)
      if (bad >= 0) this.nativeFailure(bad)
      return
    }
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

  /**
   * Native codec only: pread `length` bytes at `fileOffset` of `fd` into `buf`, then decode
   * them as decodeRun(first, count, buf, 0, into, intoOffset) does, in one call. Returns 0, or
   * READ_FAILED / END_OF_FILE, with where and why in `readFailure`.
   */
  readDecodeRun(fd: number, fileOffset: number, length: number, buf: Buffer, first: number, count: number, into: Buffer, intoOffset: number): number {
    const native = this.native!
    const a = this.args
    if (!(length >= 0 && length <= buf.length)) throw new RangeError(`${this.index.file}: read of ${length} bytes into a buffer of ${buf.length}`)
    this.setRun(native, first, count, buf, 0, into, intoOffset)
    a[A_FD] = fd
    a[A_FILE_OFFSET] = fileOffset
    a[A_LENGTH] = length
    const r = native.readDecodeRun(a)
    if (r >= 0) this.nativeFailure(r)
    return r === -1 ? 0 : r
  }

  /** Where readDecodeRun's last failure stopped reading (file offset) and its errno (0 at the
   * end of the file). */
  get readFailure(): { offset: number; errno: number } {
    return { offset: this.args[A_DETAIL0], errno: this.args[A_DETAIL1] }
  }

  /** Checks the run fits both buffers (C trusts what it is given), then fills the block. */
  private setRun(native: NativeCodec, first: number, count: number, src: Buffer, srcStart: number, into: Buffer, intoOffset: number): void {
    const index = this.index
    const stored = count === 0 ? 0 : count > 0 && first >= 0 && first + count <= index.pageCount ? index.runEnd(first + count - 1) - index.runStart(first) : -1
    if (stored < 0 || srcStart < 0 || srcStart + stored > src.length || intoOffset < 0 || intoOffset + count * this.pageSize > into.length) {
      throw new RangeError(
        `${index.file}: run of pages ${first}+${count} does not fit its buffers (source ${src.length} bytes from ${srcStart}, ` +
          `destination ${into.length} from ${intoOffset})`,
      )
    }
    if (src !== this.srcOf) {
      this.srcAddress = native.addressOf(src)
      this.srcOf = src
    }
    if (into !== this.intoOf) {
      this.intoAddress = native.addressOf(into)
      this.intoOf = into
    }
    const a = this.args
    a[A_SRC] = this.srcAddress + srcStart
    a[A_DST] = this.intoAddress + intoOffset
    a[A_FIRST] = first
    a[A_COUNT] = count
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

  private nativeFailure(page: number): never {
    const why = this.args[A_DETAIL0],
      n = this.args[A_DETAIL1]
    if (why === FAIL_CHECKSUM) this.corrupt(page, `checksum mismatch (stored ${hex32(this.index.words[page * 4 + 3])}, computed ${hex32(n >>> 0)})`)
    this.corrupt(page, why === FAIL_LZ4_MALFORMED ? `LZ4 data malformed at byte ${n}` : `decodes to ${n} bytes, expected ${this.pageSize}`)
  }

  private corrupt(page: number, detail: string): never {
    throw new SnapshotCorruptError(this.index.file, page, detail)
  }
}
