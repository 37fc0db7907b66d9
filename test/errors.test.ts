// Errors: every FaultlineError class has its own stable code, usage errors (and their kinds)
// exit 2, everything else 1.
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { exitStatusOf, FaultlineError, UsageError } from '../src/errors.js'
import { PolicyArgumentError } from '../src/policy/errors.js'
import { SnapshotCorruptError } from '../src/snapshot/format.js'
import { StoreArgumentError } from '../src/store/errors.js'
import { UffdError } from '../src/uffd/index.js'
import { REPO_ROOT } from '../src/util/repo.js'

t.test('codes: each class its own, inherited by instances', async t => {
  t.equal(new FaultlineError('x').code, 'FL_ERR_FAULTLINE')
  t.equal(new UsageError('x').code, 'FL_ERR_USAGE')
  t.equal(new PolicyArgumentError('x').code, 'FL_ERR_POLICY_ARGUMENT')
  t.equal(new SnapshotCorruptError('m.snap', 3, 'bad').code, 'FL_ERR_SNAPSHOT_CORRUPT')
  const u = new UffdError('ioctl', 22)
  t.match(u, { code: 'FL_ERR_SYSCALL', errno: 22, errnoName: 'EINVAL', message: 'ioctl failed: EINVAL' })
})

t.test('exit status: 2 for usage errors and parseArgs errors, 1 otherwise', async t => {
  t.equal(exitStatusOf(new UsageError('x')), 2)
  t.equal(exitStatusOf(new PolicyArgumentError('x')), 2)
  t.equal(exitStatusOf(new StoreArgumentError('x')), 2)
  t.equal(exitStatusOf(Object.assign(new TypeError('Unknown option'), { code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' })), 2)
  t.equal(exitStatusOf(new FaultlineError('x')), 1)
  t.equal(exitStatusOf(new SnapshotCorruptError('m.snap', 3, 'bad')), 1)
  t.equal(exitStatusOf(new Error('x')), 1)
  t.equal(exitStatusOf(undefined), 1)
})

t.test('every error class under src/ declares a code of its own, and no two share one', async t => {
  const src = join(REPO_ROOT, 'src')
  const codes = new Map<string, string>()
  const missing: string[] = []
  for (const e of readdirSync(src, { recursive: true, withFileTypes: true })) {
    if (!e.isFile() || !e.name.endsWith('.ts')) continue
    const file = join(e.parentPath, e.name)
    const text = readFileSync(file, 'utf8')
    for (const m of text.matchAll(/^(export )?class (\w+) extends (\w+) \{\n(.*)\n/gm)) {
      const [, exported, name, base, firstLine] = m
      if (!/Error$/.test(base) || base === 'Error') continue
      const code = /readonly code: string = '(FL_ERR_[A-Z_]+)'/.exec(firstLine)?.[1]
      if (code === undefined) {
        // A private subclass may share its base's code (it only marks where it was thrown).
        if (exported) missing.push(`${name} (${file})`)
        continue
      }
      if (codes.has(code)) t.fail(`${code}: ${name}, and already ${codes.get(code)}`)
      codes.set(code, name)
    }
  }
  t.same(missing, [], 'exported error classes without a code')
  t.ok(codes.size >= 15, `${codes.size} codes found`)
})
