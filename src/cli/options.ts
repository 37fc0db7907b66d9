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

/** A decimal option (digits, an optional fraction) in (min, max]; `fallback` when absent. */
export function decimalOption(name: string, value: string | undefined, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback
  const n = /^\d+(\.\d+)?$/.test(value) ? Number(value) : NaN
  if (!(n > min && n <= max)) throw new UsageError(`--${name}: expected a number > ${min} and at most ${max}, got '${value}'`)
  return n
}

/** A comma-separated list option: items trimmed, blank ones dropped. */
export function listOption(text: string): string[] {
  return text
    .split(',')
    .map(s => s.trim())
    .filter(Boolean)
}

/** Items of a list option that must each be one of `choices` (a UsageError "--NAME: expected
 * a or b, got 'x'" otherwise). */
export function choiceItems<T extends string>(name: string, items: string[], choices: readonly T[]): T[] {
  for (const item of items) {
    if (!(choices as readonly string[]).includes(item)) throw new UsageError(`--${name}: expected ${choices.join(' or ')}, got '${item}'`)
  }
  return items as T[]
}

/** `--name -1` as `--name=-1` for the string options among `options` (and their short forms),
 * so a negative number reaches the option's own check ("--name: expected 1..64, got '-1'")
 * instead of parseArgs' "argument is ambiguous". Only values that look like numbers are
 * joined: `--trace --once` still means two options. */
export function joinNegativeValues(argv: readonly string[], options: Record<string, { type: 'string' | 'boolean'; short?: string }>): string[] {
  const takesValue = new Map<string, string>()
  for (const [name, o] of Object.entries(options)) {
    if (o.type !== 'string') continue
    takesValue.set(`--${name}`, name)
    if (o.short) takesValue.set(`-${o.short}`, name)
  }
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--') {
      out.push(...argv.slice(i))
      break
    }
    const name = takesValue.get(argv[i])
    if (name !== undefined && i + 1 < argv.length && /^-[\d.]/.test(argv[i + 1])) {
      out.push(`--${name}=${argv[i + 1]}`)
      i++
    } else {
      out.push(argv[i])
    }
  }
  return out
}
