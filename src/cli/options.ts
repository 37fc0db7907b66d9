// Shared parsing of numeric command-line options: one-line errors that name the option.
import { FaultlineError } from '../errors.js'

/** An integer option in [min, max]. */
export function intOption(name: string, value: string, min: number, max: number): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) throw new FaultlineError(`--${name}: expected ${min}..${max}, got '${value}'`)
  return n
}
