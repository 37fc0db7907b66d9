// Shared parsing of command-line options: one-line usage errors that name the option.
import { UsageError } from '../errors.js'

/** An integer option in [min, max] (max defaults to no bound); `fallback` when it is absent. */
export function intOption(name: string, value: string | undefined, min: number, max = Infinity, fallback?: number): number {
  if (value === undefined && fallback !== undefined) return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) {
    const expected = max !== Infinity ? `${min}..${max}` : min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : `an integer >= ${min}`
    throw new UsageError(`--${name}: expected ${expected}, got '${value}'`)
  }
  return n
}

/** A comma-separated list option: items trimmed, blank ones dropped. */
export function listOption(text: string): string[] {
  return text.split(',').map(s => s.trim()).filter(Boolean)
}

/** Items of a list option that must each be one of `choices` (a UsageError "--NAME: expected
 * a or b, got 'x'" otherwise). */
export function choiceItems<T extends string>(name: string, items: string[], choices: readonly T[]): T[] {
  for (const item of items) {
    if (!(choices as readonly string[]).includes(item)) throw new UsageError(`--${name}: expected ${choices.join(' or ')}, got '${item}'`)
  }
  return items as T[]
}
