// The registry: built-in names and arguments, user modules by path.
import t from 'tap'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BUILTIN_POLICIES, createPolicy, PolicyArgumentError } from '../../src/policy/registry.js'
import { faults, writeTrace } from '../trace/fixtures.js'
import { SimContext, simulate } from './sim.js'

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures')

t.test('built-in policies by name', async t => {
  const dir = t.testdir()
  const trace = writeTrace(dir, 't.fltrace', faults([1, 2, 3]))
  for (const name of ['ondemand', 'readahead', 'adaptive', 'workingset', 'background']) t.ok(BUILTIN_POLICIES[name], name)
  t.equal((await createPolicy('ondemand')).name, 'ondemand')
  t.equal((await createPolicy('readahead:4')).name, 'readahead:4')
  t.equal((await createPolicy('adaptive:64')).name, 'adaptive:64')
  t.equal((await createPolicy(`workingset:${trace}`)).name, `workingset:${trace}`)
  t.equal((await createPolicy(`background:${trace}`)).name, `background:${trace}`)
  await t.rejects(createPolicy('nosuch'), { name: 'PolicyArgumentError', message: /unknown policy 'nosuch' \(built in: .*adaptive, workingset, background/ })
})

t.test('a user module loads, takes its arguments and serves faults', async t => {
  const policy = await createPolicy('./stack-down.js:3', FIXTURES)
  t.equal(policy.name, 'stack-down:3')
  const ctx = new SimContext(64)
  const down: Array<[number, number]> = []
  for (let p = 63; p >= 0; p--) down.push([p, 1])
  const r = simulate(policy, ctx, down)
  t.equal(r.faults, 16, 'each fault installs itself and the 3 pages below it')
  t.equal(r.untouched, 0)
  const abs = await createPolicy(join(FIXTURES, 'stack-down.js'))
  t.equal(abs.name, 'stack-down:8', 'an absolute path, default argument')
})

t.test('user module errors', async t => {
  await t.rejects(createPolicy('./missing.js', FIXTURES), { name: 'PolicyArgumentError', message: /--policy \.\/missing\.js: cannot load module/ })
  await t.rejects(createPolicy('./not-a-policy.js', FIXTURES), { message: /must export a default function/ })
  await t.rejects(createPolicy('./stack-down.js:x', FIXTURES),
    { name: 'PolicyArgumentError', message: "--policy ./stack-down.js: the module's factory threw: stack-down: expected a page count, got 'x'" })
  await t.rejects(createPolicy('./throwing.js', FIXTURES),
    { name: 'PolicyArgumentError', message: "--policy ./throwing.js: the module's factory threw: cannot read properties of undefined" })
  const err = await createPolicy('./throwing.js', FIXTURES).catch(e => e as Error)
  t.ok(err instanceof PolicyArgumentError, 'a PolicyArgumentError, which the CLI prints as its one line')
})

t.test('built-in policies refuse arguments they do not take', async t => {
  await t.rejects(createPolicy('ondemand:foo'), { name: 'PolicyArgumentError', message: "ondemand: takes no arguments, got 'foo'" })
  await t.rejects(createPolicy('eager:1'), { name: 'PolicyArgumentError', message: "eager: takes no arguments, got '1'" })
  t.equal((await createPolicy('ondemand:')).name, 'ondemand', 'an empty argument is no argument')
})
