// The fault loop's allocation-free clock, and the FFI backend switch (FAULTLINE_FFI).
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { MonotonicClock } from '../../src/uffd/clock.js'
import { ffiBackend } from '../../src/uffd/libc.js'

t.test("MonotonicClock runs on performance.now()'s scale", async t => {
  const clock = new MonotonicClock()
  const a = clock.nowMs(),
    p = performance.now(),
    b = clock.nowMs()
  t.ok(Math.abs(p - a) < 5 && b >= a, `clock ${a} / ${b}, performance.now ${p}`)
  const until = performance.now() + 20
  while (performance.now() < until) {
    /* 20 ms */
  }
  const c = clock.nowMs()
  t.ok(c - b >= 19 && c - b < 1000, `20 ms measured as ${c - b}`)
})

const libcUrl = new URL('../../src/uffd/index.ts', import.meta.url).href
const probe =
  `import(${JSON.stringify(libcUrl)}).then(m => { const b = Buffer.alloc(8); ` +
  `console.log(m.ffiBackend, m.isUserfaultfd(0)) }, e => { console.log('ERR ' + e.message); })`

function run(env: string | undefined): string {
  return execFileSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', probe], {
    env: { ...process.env, FAULTLINE_FFI: env },
    encoding: 'utf8',
  }).trim()
}

t.test('FAULTLINE_FFI picks the backend before load, and refuses unknown ones', async t => {
  t.equal(ffiBackend, process.env.FAULTLINE_FFI === 'ffi-napi' ? 'ffi-napi' : 'koffi')
  t.equal(run('koffi'), 'koffi false')
  t.equal(run('ffi-napi'), 'ffi-napi false')
  t.match(run('libffi'), /^ERR FAULTLINE_FFI=libffi: expected koffi or ffi-napi$/)
})
