// Output files that never clobber an input or a special file. An output is checked against the
// command's inputs by device and inode (whatever the path says), refused when it exists and is
// not a regular file, and written either under a temporary name beside it, created exclusively
// and renamed over it at the end (ReplacementFile), or in place after the same checks on the
// descriptor actually opened (openOutputInPlace: the session trace, written as it goes).
import { randomBytes } from 'node:crypto'
import { closeSync, constants, fstatSync, fsyncSync, ftruncateSync, openSync, renameSync, statSync, unlinkSync, type BigIntStats } from 'node:fs'
import { constants as osConstants } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { FaultlineError, fileError } from '../errors.js'

export class OutputFileError extends FaultlineError {
  override readonly code: string = 'FL_ERR_OUTPUT_FILE'
}

/** A file as the kernel knows it: a path names it only for messages. */
export interface FileIdentity {
  dev: bigint
  ino: bigint
  /** How the command names this input, for the message (`--snapshot x.snap`, `RAW y.raw`). */
  name: string
}

/** The identity of the file `path` names (symlinks followed), or undefined if nothing is there. */
export function identityOf(path: string, name = path): FileIdentity | undefined {
  let st: BigIntStats
  try {
    st = statSync(path, { bigint: true })
  } catch {
    return undefined
  }
  return { dev: st.dev, ino: st.ino, name }
}

/** The identity of an open descriptor. */
export function identityOfFd(fd: number, name: string): FileIdentity {
  const st = fstatSync(fd, { bigint: true })
  return { dev: st.dev, ino: st.ino, name }
}

/** Identities of the inputs that exist (a missing input cannot be clobbered). */
export function inputIdentities(inputs: ReadonlyArray<{ path: string; name: string }>): FileIdentity[] {
  const out: FileIdentity[] = []
  for (const i of inputs) {
    const id = identityOf(i.path, i.name)
    if (id !== undefined) out.push(id)
  }
  return out
}

/** What kind of file `st` is, in words, for refusals. */
function kindOf(st: BigIntStats): string {
  if (st.isCharacterDevice()) return 'a character device'
  if (st.isBlockDevice()) return 'a block device'
  if (st.isFIFO()) return 'a FIFO'
  if (st.isSocket()) return 'a socket'
  if (st.isDirectory()) return 'a directory'
  return 'not a regular file'
}

function checkStats(st: BigIntStats, what: string, inputs: readonly FileIdentity[]): void {
  if (!st.isFile()) {
    const kind = kindOf(st)
    throw new OutputFileError(
      `${what}: is ${kind === 'not a regular file' ? 'not a regular file' : kind}; refusing to write over it (outputs must be regular files)`,
    )
  }
  for (const input of inputs) {
    if (input.dev === st.dev && input.ino === st.ino) {
      throw new OutputFileError(`${what}: is the same file as ${input.name}; refusing to overwrite an input (choose another output path)`)
    }
  }
}

/** Throws OutputFileError when `path` exists and is not a regular file, or is one of `inputs`.
 * `what` names the output as the command line does (`--trace t.fltrace`, `-o out.csv`). */
export function checkOutputPath(path: string, what: string, inputs: readonly FileIdentity[]): void {
  let st: BigIntStats
  try {
    st = statSync(path, { bigint: true })
  } catch {
    return // nothing there yet
  }
  checkStats(st, what, inputs)
}

/**
 * Opens `path` for writing in place (created 0644 if missing) and truncates it, but only once
 * the descriptor opened is known to be a regular file that is none of `inputs`: it is opened
 * without O_TRUNC and with O_NONBLOCK (a FIFO with no reader fails at once instead of blocking),
 * checked with fstat, then truncated. Returns the descriptor.
 */
export function openOutputInPlace(path: string, what: string, inputs: readonly FileIdentity[]): number {
  let fd: number
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_NONBLOCK, 0o644)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENXIO')
      throw new OutputFileError(`${what}: is a FIFO; refusing to write over it (outputs must be regular files)`)
    throw fileError(what, err, 'cannot write')
  }
  try {
    checkStats(fstatSync(fd, { bigint: true }), what, inputs)
    ftruncateSync(fd, 0)
    return fd
  } catch (err) {
    closeSync(fd)
    throw err instanceof FaultlineError ? err : fileError(what, err, 'cannot write')
  }
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

/**
 * A new version of `path`, written under a temporary name in the same directory (unique,
 * created with O_EXCL, so neither an existing file nor a planted symlink is ever followed or
 * truncated) and renamed over `path` by commit(): readers of `path` see the old file or the
 * whole new one, never a part. abort() (and, with `removeOnSignal`, SIGINT/SIGTERM/SIGHUP while
 * the file is open) removes the temporary.
 */
export class ReplacementFile {
  readonly path: string
  readonly tempPath: string
  private fdValue: number
  private committed = false
  private readonly what: string
  private readonly inputs: readonly FileIdentity[]
  private readonly onSignal: ((signal: NodeJS.Signals) => void) | undefined

  private constructor(path: string, tempPath: string, fd: number, what: string, inputs: readonly FileIdentity[], removeOnSignal: boolean) {
    this.path = path
    this.tempPath = tempPath
    this.fdValue = fd
    this.what = what
    this.inputs = inputs
    if (removeOnSignal) {
      // The temporary goes, then the process ends as the signal would have ended it (exit
      // status 128 + its number). Re-raising the signal instead races Node's own handler,
      // which may still be installed, and the writer would go on.
      this.onSignal = signal => {
        this.abort()
        process.exit(128 + osConstants.signals[signal])
      }
      for (const s of SIGNALS) process.once(s, this.onSignal)
    }
  }

  /** Checks `path` (see checkOutputPath) and creates the temporary. */
  static create(path: string, opts: { what?: string; inputs?: readonly FileIdentity[]; removeOnSignal?: boolean; mode?: number } = {}): ReplacementFile {
    const what = opts.what ?? path
    const inputs = opts.inputs ?? []
    checkOutputPath(path, what, inputs)
    const dir = dirname(path)
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW
    for (let attempt = 0; ; attempt++) {
      const tempPath = join(dir, `.${basename(path)}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`)
      try {
        const fd = openSync(tempPath, flags, opts.mode ?? 0o644)
        return new ReplacementFile(path, tempPath, fd, what, inputs, opts.removeOnSignal ?? false)
      } catch (err) {
        // A name taken by chance (or by someone guessing): draw another.
        if ((err as NodeJS.ErrnoException).code === 'EEXIST' && attempt < 16) continue
        throw fileError(what, err, `cannot create a temporary file in ${dir}`)
      }
    }
  }

  /** The temporary's descriptor (-1 once committed or aborted). */
  get fd(): number {
    return this.fdValue
  }

  /** fsync, close, and rename over `path` (checked again first: it may have appeared since). */
  commit(): void {
    try {
      fsyncSync(this.fdValue)
      closeSync(this.fdValue)
      this.fdValue = -1
      checkOutputPath(this.path, this.what, this.inputs)
      renameSync(this.tempPath, this.path)
      this.committed = true
    } catch (err) {
      this.abort()
      throw err instanceof FaultlineError ? err : fileError(this.what, err, 'cannot write')
    } finally {
      this.stopWatchingSignals()
    }
  }

  /** Closes and removes the temporary; `path` is left as it was. Nothing once committed. */
  abort(): void {
    this.stopWatchingSignals()
    if (this.committed) return
    if (this.fdValue >= 0) {
      try {
        closeSync(this.fdValue)
      } catch {
        /* already closed */
      }
      this.fdValue = -1
    }
    try {
      unlinkSync(this.tempPath)
    } catch {
      /* gone already (committed, or never there) */
    }
  }

  private stopWatchingSignals(): void {
    if (this.onSignal === undefined) return
    for (const s of SIGNALS) process.off(s, this.onSignal)
  }
}
