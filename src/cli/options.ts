// Shared parsing of command-line options: one-line errors that name the option.
import { FaultlineError } from '../errors.js'

/** An integer option in [min, max]. */
export function intOption(name: string, value: string, min: number, max: number): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) throw new FaultlineError(`--${name}: expected ${min}..${max}, got '${value}'`)
  return n
}

/** A comma-separated list option: items trimmed, blank ones dropped. */
export function listOption(text: string): string[] {
  return text.split(',').map(s => s.trim()).filter(Boolean)
}

/** Items of a list option that must each be one of `choices` ("--NAME: expected a or b, got
 * 'x'", thrown as what `fail` makes of it). */
export function choiceItems<T extends string>(name: string, items: string[], choices: readonly T[], fail: (message: string) => Error): T[] {
  for (const item of items) {
    if (!(choices as readonly string[]).includes(item)) throw fail(`--${name}: expected ${choices.join(' or ')}, got '${item}'`)
  }
  return items as T[]
}
