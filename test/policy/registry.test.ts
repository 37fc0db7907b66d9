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

t.test('built-in arguments: one parser, every refusal names the policy', async t => {
  t.equal((await createPolicy('readahead')).name, 'readahead:15', 'name alone: the defaults')
  t.equal((await createPolicy('readahead:0')).name, 'readahead:0')
  t.equal((await createPolicy('adaptive')).name, 'adaptive:256')
  t.equal((await createPolicy('background:address')).name, 'background')
  const refused: Array<[string, RegExp]> = [
    ['ondemand:junk', /^ondemand: takes no arguments, got 'junk'$/],
    ['ondemand:', /^ondemand: takes no arguments, got ''$/],
    ['eager:all', /^eager: takes no arguments, got 'all'$/],
    ['readahead:', /^readahead: expected a page count 0\.\.65536, got ''$/],
    ['readahead:x', /^readahead: expected a page count 0\.\.65536, got 'x'$/],
    ['readahead:-1', /^readahead: expected a page count/],
    ['readahead:1e3', /^readahead: expected a page count/],
    ['readahead: 5', /^readahead: expected a page count/],
    ['readahead:65537', /^readahead: expected a page count 0\.\.65536, got '65537'$/],
    ['adaptive:', /^adaptive: expected a largest window of 1\.\.65536 pages, got ''$/],
    ['adaptive:0', /^adaptive: expected a largest window of 1\.\.65536 pages, got '0'$/],
    ['workingset', /^workingset: expected a trace file/],
    ['workingset:', /^workingset: expected a trace file/],
    ['background:', /^background: expected an ORDER \('address' or a trace file\) after 'background:', got nothing$/],
    ['constructor', /^--policy: unknown policy 'constructor'/],
  ]
  for (const [spec, message] of refused) await t.rejects(createPolicy(spec), { name: 'PolicyArgumentError', code: 'FL_ERR_POLICY_ARGUMENT', message }, spec)
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
  await t.rejects(createPolicy('./stack-down.js:x', FIXTURES), {
    name: 'PolicyArgumentError',
    message: "--policy ./stack-down.js: the module's factory threw: stack-down: expected a page count, got 'x'",
  })
  await t.rejects(createPolicy('./throwing.js', FIXTURES), {
    name: 'PolicyArgumentError',
    message: "--policy ./throwing.js: the module's factory threw: cannot read properties of undefined",
  })
  const err = await createPolicy('./throwing.js', FIXTURES).catch(e => e as Error)
  t.ok(err instanceof PolicyArgumentError, 'a PolicyArgumentError, which the CLI prints as its one line')
})
