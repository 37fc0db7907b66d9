// The folder-order check (scripts/check-imports.mjs, run by npm run lint): src/ passes it, and
// an import against the order is caught, multi-line, type-only, re-exported or dynamic.
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { REPO_ROOT } from '../../src/util/repo.js'
// @ts-expect-error: a plain .mjs script, no declarations
import { importViolations } from '../../scripts/check-imports.mjs'

const check = importViolations as (srcDir: string) => string[]

t.test('src/ imports only down the order', async t => {
  t.same(check(join(REPO_ROOT, 'src')), [])
})

t.test('imports against the order are each reported with file and line', async t => {
  const dir = t.testdir()
  for (const room of ['uffd', 'store', 'cli', 'extras']) mkdirSync(join(dir, room))
  writeFileSync(
    join(dir, 'uffd/a.ts'),
    "import {\n  a,\n} from '../cli/x.js'\nimport type { Q } from '../store/y.js'\nconst m = await import('../cli/z.js')\nimport { errorsOk } from '../errors.js'\n",
  )
  writeFileSync(join(dir, 'store/y.ts'), "export { a } from '../cli/x.js'\nimport { b } from '../uffd/a.js'\n")
  writeFileSync(join(dir, 'cli/x.ts'), "import { x } from '../uffd/a.js'\nimport { y } from 'node:fs'\n")
  writeFileSync(join(dir, 'extras/c.ts'), 'export const c = 1\n')
  const found = check(dir).sort()
  t.equal(found.length, 5, found.join('\n'))
  t.match(found, [
    /^extras\/c\.ts: src\/extras\/ is not a room/,
    /^store\/y\.ts:1: store\/ imports \.\.\/cli\/x\.js from cli\/, a room above it/,
    /^uffd\/a\.ts:3: uffd\/ imports \.\.\/cli\/x\.js from cli\//,
    /^uffd\/a\.ts:4: uffd\/ imports \.\.\/store\/y\.js from store\//,
    /^uffd\/a\.ts:5: uffd\/ imports \.\.\/cli\/z\.js from cli\//,
  ])
})
