// shellQuote: migration streams go through `exec:` shell commands, so file names must be
// quoted to survive any character.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { shellQuote } from '../../src/vm/migration.js'

t.test('quotes for sh', async t => {
  t.equal(shellQuote('/tmp/state.bin'), `'/tmp/state.bin'`)
  t.equal(shellQuote(`it's`), `'it'\\''s'`)
  t.equal(shellQuote(''), `''`)
})

t.test('sh gets every name back unchanged', async t => {
  for (const name of ['/a b/c', `x'y"z`, '$(touch /tmp/pwned)', 'a;b&&c|d', 'tab\there', 'new\nline', '*?[]~', `''`]) {
    t.equal(execFileSync('sh', ['-c', `printf %s ${shellQuote(name)}`], { encoding: 'utf8' }), name)
  }
})
