// Base error for faultline: every expected failure is a FaultlineError whose message is
// one line with its context, so the CLI can print `faultline: <message>` and stop.

export class FaultlineError extends Error {
  /** What kind of failure this is, for programs: stable (FL_ERR_*, one per class), where the
   * message is for people and may be reworded. Subclasses override it. */
  readonly code: string = 'FL_ERR_FAULTLINE'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

/** A bad command line, option value or setting (FAULTLINE_* variables): the CLI prints it as
 * one line and exits with status 2, in every command. */
export class UsageError extends FaultlineError {
  override readonly code: string = 'FL_ERR_USAGE'
}

/** The exit status for an error that reached the command line: 2 for a usage error (and for
 * node:util parseArgs's unknown or malformed options), 1 for any other failure. */
export function exitStatusOf(err: unknown): number {
  if (err instanceof UsageError) return 2
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS') ? 2 : 1
}

/** One line describing any thrown value: a FaultlineError's message, a system error
 * reworded as `<path>: <what>` when it names a path, else the first line of the message. */
export function describeError(err: unknown): string {
  if (err instanceof FaultlineError) return err.message
  if (err instanceof Error) {
    const e = err as NodeJS.ErrnoException
    if (typeof e.code === 'string' && typeof e.syscall === 'string') {
      const what = SYSTEM_ERRORS[e.code] ?? `${e.code} (${e.syscall})`
      return typeof e.path === 'string' ? `${e.path}: ${what}` : `${e.syscall}: ${what}`
    }
    return firstLine(err.message) || err.name
  }
  return firstLine(String(err))
}

/** What the CLI prints for an error: `faultline: <one line>`, plus the stack when
 * FAULTLINE_DEBUG=1. */
export function formatCliError(err: unknown, env: NodeJS.ProcessEnv = process.env): string {
  const line = `faultline: ${describeError(err)}`
  if (env.FAULTLINE_DEBUG === '1' && err instanceof Error && err.stack) {
    return `${line}\n${err.stack}`
  }
  return line
}

/** Rewrap a system error raised while touching `path` as a one-line FaultlineError. */
export function fileError(path: string, err: unknown, doing?: string): FaultlineError {
  if (err instanceof FaultlineError) return err
  const e = err as NodeJS.ErrnoException
  const what = typeof e?.code === 'string' ? (SYSTEM_ERRORS[e.code] ?? e.code) : describeError(err)
  return new FaultlineError(`${path}: ${doing ? `${doing}: ` : ''}${what}`, { cause: err })
}

function firstLine(s: string): string {
  const i = s.indexOf('\n')
  return (i < 0 ? s : s.slice(0, i)).trim()
}

const SYSTEM_ERRORS: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'not a directory',
  EEXIST: 'already exists',
  ENOSPC: 'no space left on device',
  EROFS: 'read-only file system',
  EMFILE: 'too many open files',
  EIO: 'I/O error',
}
