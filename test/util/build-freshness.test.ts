// A build older than its sources is refused, naming the source (the server checks before it
// starts workers from dist/).
import t from 'tap'
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { assertBuildFresh, staleSource } from '../../src/util/build-freshness.js'

function tree(t: { testdir(): string }): string {
  const root = t.testdir()
  for (const d of ['src/server', 'dist/server']) mkdirSync(join(root, d), { recursive: true })
  for (const f of ['src/errors.ts', 'src/server/session.ts', 'src/server/types.d.ts']) writeFileSync(join(root, f), '')
  for (const f of ['dist/errors.js', 'dist/server/session.js']) writeFileSync(join(root, f), '')
  const old = new Date(Date.now() - 60000)
  for (const f of ['src/errors.ts', 'src/server/session.ts', 'src/server/types.d.ts']) utimesSync(join(root, f), old, old)
  return root
}

t.test('fresh: every source has a compiled file at least as new', async t => {
  const root = tree(t)
  t.equal(staleSource(root), undefined)
  t.doesNotThrow(() => assertBuildFresh(root))
})

t.test('a source edited after the build is named, and refused', async t => {
  const root = tree(t)
  const now = new Date(Date.now() + 1000)
  utimesSync(join(root, 'src/server/session.ts'), now, now)
  t.equal(staleSource(root), 'src/server/session.ts')
  t.throws(() => assertBuildFresh(root), {
    name: 'StaleBuildError',
    code: 'FL_ERR_STALE_BUILD',
    message: 'src/server/session.ts is newer than its build in dist/ (or was never built): run `npm run build` (session workers run the compiled code)',
  })
})

t.test('a source never built is stale; a tree without sources (an installed package) is not', async t => {
  const root = tree(t)
  writeFileSync(join(root, 'src/server/new-module.ts'), '')
  t.equal(staleSource(root), 'src/server/new-module.ts')
  t.equal(staleSource(join(root, 'dist')), undefined)
})
