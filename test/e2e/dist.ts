// Makes sure dist/ holds the sources compiled before a test runs compiled code (session
// workers, the CLI): npm install builds it; a source edited since gets it rebuilt here once,
// under a lock shared by test files running at once. The server itself refuses a stale dist/.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, rmdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { staleSource } from '../../src/util/build-freshness.js'
import { REPO_ROOT } from '../../src/util/repo.js'

const DIST_WORKER = join(REPO_ROOT, 'dist/server/session-worker.js')

export function ensureDist(): void {
  if (staleSource() === undefined) return
  const lock = join(tmpdir(), 'faultline-dist-build.lock')
  for (let tries = 0; ; tries++) {
    try {
      mkdirSync(lock)
      break
    } catch {
      /* another test file is building */
    }
    if (tries > 600) throw new Error(`${lock}: held for over 2 minutes; remove it if no build runs`)
    execFileSync('sleep', ['0.2'])
  }
  try {
    if (staleSource() === undefined) return
    // tsc still emits when a half-edited file does not type-check (the server then refuses the
    // sources saved during the build, which are newer than their output).
    try {
      execFileSync('npx', ['tsc', '-p', REPO_ROOT], { cwd: REPO_ROOT, stdio: 'ignore' })
    } catch {
      /* checked below */
    }
    if (!existsSync(DIST_WORKER)) throw new Error(`${DIST_WORKER}: missing after \`npx tsc -p .\``)
  } finally {
    rmdirSync(lock)
  }
}
