// Whether dist/ (what `npm run build` compiles, and what session workers and the CLI run) is
// as new as src/: after an edit, an unbuilt dist/ would serve, or pass a test, as the old code.
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { FaultlineError } from '../errors.js'
import { REPO_ROOT } from './repo.js'

export class StaleBuildError extends FaultlineError {
  override readonly code: string = 'FL_ERR_STALE_BUILD'
}

/** The first source under `root`/src whose compiled file in `root`/dist is missing or older;
 * undefined when every one is built, or when there are no sources (an installed package). */
export function staleSource(root = REPO_ROOT): string | undefined {
  const src = join(root, 'src')
  if (!existsSync(src)) return undefined
  for (const entry of readdirSync(src, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.ts') || entry.name.endsWith('.d.ts')) continue
    const ts = join(entry.parentPath, entry.name)
    const js = join(root, 'dist', relative(src, ts)).replace(/\.ts$/, '.js')
    let built: number
    try {
      built = statSync(js).mtimeMs
    } catch {
      return relative(root, ts)
    }
    if (built < statSync(ts).mtimeMs) return relative(root, ts)
  }
  return undefined
}

/** Refuses to run compiled code older than its sources, naming the first such source. */
export function assertBuildFresh(root = REPO_ROOT): void {
  const stale = staleSource(root)
  if (stale !== undefined) {
    throw new StaleBuildError(
      `${stale} is newer than its build in dist/ (or was never built): run \`npm run build\` ` + '(session workers run the compiled code)',
    )
  }
}
