// The benchmarks' one error: a run, a server, the guest or /proc did not do what a benchmark
// needs. Bad benchmark options are UsageErrors (src/errors.ts).
import { FaultlineError } from '../errors.js'

export class BenchError extends FaultlineError {
  override readonly code: string = 'FL_ERR_BENCH'
}
