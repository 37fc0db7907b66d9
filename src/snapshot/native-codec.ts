// The native page codec (native/build/libfaultline-codec.so: liblz4 and ISA-L's CRC-32),
// bound with koffi: one call reads (optionally), decodes and checks a whole run.
// FAULTLINE_CODEC=npm selects the npm lz4 binding and zlib's CRC-32, page by page, instead;
// so does a checkout where make found no liblz4-dev or libisal-dev (codecNotice says so).

import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { env } from 'node:process'
import { FaultlineError, UsageError } from '../errors.js'
import { nativeBuildPath } from '../util/repo.js'

export type PageCodecName = 'native' | 'npm'

export const CODEC_LIBRARY = nativeBuildPath('libfaultline-codec.so')

/** Why a run stopped at a page: args[A_DETAIL0]. */
export const FAIL_LZ4_MALFORMED = 1
export const FAIL_LZ4_SIZE = 2
export const FAIL_CHECKSUM = 3
/** readDecodeRun's results other than a page: pread failed, or the file ended; the file offset
 * where reading stopped is in A_DETAIL0, the errno (0 at the end) in A_DETAIL1. */
export const READ_FAILED = -2
export const END_OF_FILE = -3

/**
 * Slots of the argument block (a Float64Array) both calls take, as native/codec.c has them: addresses are written there
 * as doubles, so passing them boxes no heap number (V8's small integers stop at 2^30).
 * words: the index's address (four uint32 a page); src: the stored bytes of the run, from its
 * first stored byte; dst: where its pages go; first, count, pageSize: the run. On failure the
 * reason and its number (LZ4 error position, decoded size, computed CRC) come back in
 * DETAIL0/DETAIL1, or for a read the offset and errno. readDecodeRun first reads LENGTH bytes at FILE_OFFSET of FD to src.
 */
export const A_WORDS = 0,
  A_SRC = 1,
  A_DST = 2,
  A_FIRST = 3,
  A_COUNT = 4,
  A_PAGE_SIZE = 5,
  A_DETAIL0 = 6,
  A_DETAIL1 = 7,
  A_FD = 8,
  A_FILE_OFFSET = 9,
  A_LENGTH = 10
export const RUN_ARGS_SLOTS = 11

/** -1 when every page of the run decoded and matched its CRC, else the first page that did
 * not (or READ_FAILED / END_OF_FILE). Every address in the block must be off the V8 heap
 * (not a small typed array), as Buffers of a page or more are. */
export type RunFn = (args: Float64Array) => number

export interface NativeCodec {
  decodeRun: RunFn
  readDecodeRun: RunFn
  /** Address of a buffer's first byte, as a Number. */
  addressOf(buf: ArrayBufferView): number
}

/** A fresh argument block (its own ArrayBuffer, so it stays put). */
export function runArgs(): Float64Array {
  return new Float64Array(new ArrayBuffer(RUN_ARGS_SLOTS * 8))
}

/** The packages the native codec builds from, and how to get it. */
export const CODEC_PACKAGES = 'liblz4-dev libisal-dev'

/** The codec for FAULTLINE_CODEC=`name`: native or npm as told; unset, native when it was
 * built, else npm. */
export function selectCodec(name: string | undefined, nativeBuilt: boolean): PageCodecName {
  if (name === undefined || name === '') return nativeBuilt ? 'native' : 'npm'
  if (name === 'native' || name === 'npm') return name
  throw new UsageError(`FAULTLINE_CODEC=${name}: expected native or npm`)
}

/** The codec this thread uses, chosen once when the module loads. */
export const pageCodecName: PageCodecName = selectCodec(env.FAULTLINE_CODEC, existsSync(CODEC_LIBRARY))

/** One line for the user when the npm codec stands in for a native one that was not built
 * (FAULTLINE_CODEC unset); undefined otherwise. */
export function codecNotice(name = env.FAULTLINE_CODEC, chosen = pageCodecName): string | undefined {
  if (chosen !== 'npm' || (name !== undefined && name !== '')) return undefined
  return `page codec: npm lz4 (${CODEC_LIBRARY} was not built); for the faster native one: ` + `apt-get install ${CODEC_PACKAGES} && make -C native`
}

let loaded: NativeCodec | undefined

/** The native codec; throws a FaultlineError naming the fix when it cannot be loaded. */
export function nativeCodec(): NativeCodec {
  if (loaded) return loaded
  const require = createRequire(import.meta.url)
  const koffi = require('koffi') as typeof import('koffi')
  let lib: ReturnType<typeof koffi.load>
  try {
    lib = koffi.load(CODEC_LIBRARY)
  } catch (err) {
    throw new FaultlineError(
      `${CODEC_LIBRARY}: cannot load the page codec (${(err as Error).message.split('\n')[0]}); ` +
        `build it with \`make -C native\` (needs ${CODEC_PACKAGES}), or set FAULTLINE_CODEC=npm`,
      { cause: err },
    )
  }
  loaded = {
    decodeRun: lib.func('long fl_decode_run(void *args)') as RunFn,
    readDecodeRun: lib.func('long fl_read_decode_run(void *args)') as RunFn,
    addressOf: buf => Number(koffi.address(buf as Uint8Array)),
  }
  return loaded
}
