// The one parser of the built-in policies' arguments (the text after `name:` in --policy):
// `name` alone gives a policy its defaults, and `name:` with anything it cannot take, an empty
// text included, is refused with the policy named.
import { PolicyArgumentError } from './errors.js'

export class PolicyArgs {
  /** The policy's name, as errors start. */
  readonly policy: string
  /** The text after `name:`; undefined for `name` alone. */
  readonly text: string | undefined

  constructor(policy: string, text: string | undefined) {
    this.policy = policy
    this.text = text
  }

  /** From a whole spec: `name` or `name:args`. */
  static fromSpec(spec: string): PolicyArgs {
    const colon = spec.indexOf(':')
    return colon < 0 ? new PolicyArgs(spec, undefined) : new PolicyArgs(spec.slice(0, colon), spec.slice(colon + 1))
  }

  /** For a policy that takes nothing: any `name:...` is refused. */
  none(): void {
    if (this.text !== undefined) throw this.error(`takes no arguments, got '${this.text}'`)
  }

  /** A whole number in [min, max] written in decimal digits, `fallback` when absent: "NAME:
   * expected WHAT MIN..MAX[ UNIT], got 'TEXT'". `piece` is the part of the text it is in (the
   * whole text by default). */
  int(what: string, min: number, max: number, fallback: number, opts: { unit?: string; piece?: string } = {}): number {
    const piece = 'piece' in opts ? opts.piece : this.text
    if (piece === undefined) return fallback
    const n = /^\d{1,9}$/.test(piece) ? Number(piece) : NaN
    if (!(n >= min && n <= max)) throw this.error(`expected ${what} ${min}..${max}${opts.unit ? ` ${opts.unit}` : ''}, got '${piece}'`)
    return n
  }

  /** Text that must be given and not be empty (a file): refused as "NAME: expected WHAT". */
  required(what: string): string {
    if (this.text === undefined || this.text === '') throw this.error(`expected ${what}`)
    return this.text
  }

  /** Text that may be absent (undefined) but not empty. */
  optional(what: string): string | undefined {
    if (this.text === '') throw this.error(`expected ${what} after '${this.policy}:', got nothing`)
    return this.text
  }

  /** "NAME: DETAIL" as a PolicyArgumentError. */
  error(detail: string, cause?: unknown): PolicyArgumentError {
    return new PolicyArgumentError(`${this.policy}: ${detail}`, cause === undefined ? undefined : { cause })
  }
}
