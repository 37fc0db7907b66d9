// A deterministic synthetic memory image that looks like a guest's RAM to a compressor:
// runs of zero pages, text, pointer-heavy heap pages, half-filled pages and incompressible
// (encrypted or compressed) data, in clustered runs as in real memory. Used by the demo,
// the tests and the benchmarks.
import { createCipheriv } from 'node:crypto'
import { closeSync, openSync, writeSync } from 'node:fs'

export interface SyntheticImageOptions {
  seed?: number
  /** Fractions of zero and incompressible pages; the rest is compressible. */
  zeroFraction?: number
  randomFraction?: number
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

const PAGE = 4096
const BLOCK_PAGES = 1024
const WORDS = (
  'the guest kernel maps memory pages into its address space and a page fault asks ' +
  'the server for the contents of one page which it decodes from the snapshot and installs'
).split(' ')

function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9
  return () => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return s
  }
}

/** Writes `sizeBytes` (a multiple of 4096) of synthetic image to `path`. */
export function writeSyntheticImage(path: string, sizeBytes: number, opts: SyntheticImageOptions = {}): void {
  const next = xorshift(opts.seed ?? 1)
  const zeroFraction = opts.zeroFraction ?? 0.35
  const randomFraction = opts.randomFraction ?? 0.15
  const pages = Math.ceil(sizeBytes / PAGE)
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, opts.seed ?? 1), Buffer.alloc(16))
  const block = Buffer.alloc(BLOCK_PAGES * PAGE)
  const fd = openSync(path, 'w')
  try {
    let kind = 0
    let runLeft = 0
    for (let first = 0; first < pages; first += BLOCK_PAGES) {
      const n = Math.min(BLOCK_PAGES, pages - first)
      block.fill(0, 0, n * PAGE)
      const noise = cipher.update(block.subarray(0, n * PAGE))
      for (let i = 0; i < n; i++) {
        if (runLeft === 0) {
          // Clustered runs (1..64 pages) of one kind, chosen with the requested proportions.
          const u = next() / 2 ** 32
          kind = u < zeroFraction ? 0 : u < zeroFraction + randomFraction ? 1 : 2 + (next() % 3)
          runLeft = 1 + (next() % 64)
        }
        runLeft--
        const page = block.subarray(i * PAGE, (i + 1) * PAGE)
        const pageNo = first + i
        if (kind === 1) noise.copy(page, 0, i * PAGE, (i + 1) * PAGE)
        else if (kind === 2) fillText(page, next, pageNo)
        else if (kind === 3) fillPointers(page, next, pageNo)
        else if (kind === 4) {
          fillText(page.subarray(0, PAGE / 2), next, pageNo)
        }
      }
      let off = 0
      while (off < n * PAGE) off += writeSync(fd, block, off, n * PAGE - off)
      opts.onProgress?.(Math.min(sizeBytes, (first + n) * PAGE), sizeBytes)
    }
  } finally {
    closeSync(fd)
  }
}

let textPool: Buffer | undefined

/** 256 KiB of word soup that text pages are cut from (at random offsets, so they differ). */
function pool(): Buffer {
  if (textPool) return textPool
  const next = xorshift(7)
  const b = Buffer.alloc(256 * 1024 + PAGE)
  let o = 0
  while (o < b.length) {
    const w = WORDS[next() % WORDS.length]
    o += b.write(next() % 11 === 0 ? `${w}.\n` : `${w} `, o)
  }
  textPool = b
  return b
}

function fillText(page: Buffer, next: () => number, pageNo: number): void {
  const text = pool()
  const from = next() % (text.length - PAGE)
  text.copy(page, 0, from, from + page.length)
  page.write(`[page ${pageNo}] `)
}

function fillPointers(page: Buffer, next: () => number, pageNo: number): void {
  // A heap page: 8-byte pointers into a few arenas, small counters and flags.
  const base = 0x7f0000000000 + (pageNo % 64) * 0x100000
  for (let o = 0; o + 16 <= page.length; o += 16) {
    const p = base + (next() % 4096) * 16
    page.writeUInt32LE(p % 2 ** 32, o)
    page.writeUInt32LE(Math.floor(p / 2 ** 32), o + 4)
    page.writeUInt32LE(next() % 100, o + 8)
    page.writeUInt32LE(next() % 4 === 0 ? 1 : 0, o + 12)
  }
}
