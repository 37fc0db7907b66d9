// `npm run test:unit`: the tests that need no root-only setup, QEMU, Ceph or the native test
// programs, in one process (a tap process per file costs ~2 s of CPU in ts-node alone, most of
// the tier's time). Every file under test/ whose name ends in .test.ts, except the folders and
// files below, which `npm test` runs with the rest.
import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { ensureDist } from './e2e/dist.js'

/** Not in the unit tier: real guests and servers (e2e/), the C programs and QEMU (native/),
 * every CLI command spawned many times (usage), the reader's fuzz (20 s of CPU). */
export const NOT_UNIT = ['e2e/', 'native/', 'cli/usage.test.ts', 'snapshot/fuzz.test.ts']

// Session and fill workers run dist/, and modules that start them refuse a stale one: build
// it first when a source is newer (most runs: nothing to do).
ensureDist()

const here = fileURLToPath(new URL('.', import.meta.url))
const files = readdirSync(here, { recursive: true, encoding: 'utf8' })
  .filter(f => f.endsWith('.test.ts') && !NOT_UNIT.some(n => f.startsWith(n)))
  .sort()
for (const f of files) {
  // A file that throws while loading fails on its own; the files after it still run.
  try {
    await import(`./${f}`)
  } catch (err) {
    t.fail(`test/${f}: ${(err as Error).stack ?? err}`)
  }
}
