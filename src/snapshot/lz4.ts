// The LZ4 block codec from npm `lz4`, native binding only: its pure-JS fallback is slow and
// fails on incompressible data, so a missing binding is an error, never a silent fallback.

import { createRequire } from 'node:module'
import { FaultlineError } from '../errors.js'

export interface Lz4Block {
  /**
   * Compress all of `input` into `output[start, end)`; returns the compressed size, or 0
   * when it does not fit (LZ4_compress_default).
   */
  encodeBlock(input: Buffer, output: Buffer, start: number, end: number): number
  /**
   * Decompress `input[start, end)` into `output` from its first byte, at most
   * `output.length` bytes; returns the decoded size, negative on malformed input
   * (LZ4_decompress_safe). The binding does not bound-check `end` against `input.length`.
   */
  decodeBlock(input: Buffer, output: Buffer, start: number, end: number): number
  encodeBound(size: number): number
}

let loaded: Lz4Block | undefined

/** The native LZ4 block functions; throws a FaultlineError naming the fix when absent. */
export function lz4(): Lz4Block {
  if (loaded) return loaded
  const require = createRequire(import.meta.url)
  let mod: Record<string, unknown>
  try {
    // lib/utils.js requires build/Release/lz4.node directly; the pure-JS block code is only
    // used by the browser build. Load the binding itself so nothing else can stand in.
    mod = require('lz4/build/Release/lz4.node') as Record<string, unknown>
  } catch (err) {
    throw new FaultlineError(`lz4 native binding not loaded (${(err as Error).message.split('\n')[0]}); run \`npm rebuild lz4\``, { cause: err })
  }
  for (const name of ['compress', 'uncompress', 'compressBound']) {
    const fn = mod[name]
    if (typeof fn !== 'function' || !/\[native code\]/.test(Function.prototype.toString.call(fn))) {
      throw new FaultlineError(`lz4 native binding has no native ${name}(); run \`npm rebuild lz4\``)
    }
  }
  loaded = {
    encodeBlock: mod.compress as Lz4Block['encodeBlock'],
    decodeBlock: mod.uncompress as Lz4Block['decodeBlock'],
    encodeBound: mod.compressBound as Lz4Block['encodeBound'],
  }
  return loaded
}
