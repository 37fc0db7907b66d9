// Where a worker thread's entry module is. Workers run compiled JS even when their parent runs
// from TypeScript sources (tests): a TS worker would transpile every module again on each
// start, which takes seconds on a loaded machine while a guest waits. `npm test` builds dist/.
import { existsSync } from 'node:fs'
import { assertBuildFresh } from './build-freshness.js'

/**
 * `entry` is the worker's URL next to the calling module (new URL('./x.js', import.meta.url))
 * and `distEntry` the same module under dist/. From a .ts parent the dist/ one is used when it
 * exists, without the parent's --import hooks (a TypeScript loader in each worker multiplies its
 * start-up time by ~10 and adds ~90 MB). A dist/ older than src/ is refused (StaleBuildError).
 */
export function workerEntry(parentUrl: string, entry: URL, distEntry: URL): { url: URL; options: { execArgv?: string[] } } {
  const compiled = parentUrl.endsWith('.ts') && existsSync(distEntry)
  if (compiled) assertBuildFresh()
  return compiled ? { url: distEntry, options: { execArgv: [] } } : { url: entry, options: {} }
}
