// Whether the packages an end-to-end test needs are installed (scripts/test-deps.sh holds the
// list): the one line to fail with when they are not, naming them and how to install them.
import { spawnSync } from 'node:child_process'
import { repoPath } from '../../src/util/repo.js'

export type TestDepGroup = 'codec' | 'qemu' | 'programs' | 'ceph'

/** undefined when `group` is installed, else test-deps.sh's line for it. */
export function missingTestDeps(group: TestDepGroup): string | undefined {
  const r = spawnSync(repoPath('scripts/test-deps.sh'), ['--check', group], { encoding: 'utf8' })
  if (r.status === 0) return undefined
  return (r.stdout || r.stderr).trim().split('\n')[0] || `scripts/test-deps.sh --check ${group}: exit ${r.status}`
}
