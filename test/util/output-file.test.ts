// Output files: refused when they are an input (by device and inode, whatever the path) or an
// existing non-regular file; replacements go through an exclusive temporary and a rename, so
// neither a planted symlink nor an interrupted write ever reaches the target.
import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { closeSync, existsSync, linkSync, lstatSync, readdirSync, readFileSync, statSync, symlinkSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { checkOutputPath, identityOf, openOutputInPlace, OutputFileError, ReplacementFile } from '../../src/util/output-file.js'

t.test('an output that is an input is refused, whatever path names it', async t => {
  const dir = t.testdir({ 'in.raw': 'input bytes' })
  const input = join(dir, 'in.raw')
  linkSync(input, join(dir, 'hard'))
  symlinkSync(input, join(dir, 'soft'))
  const inputs = [identityOf(input, 'the raw image in.raw')!]
  for (const name of ['in.raw', 'hard', 'soft']) {
    t.throws(() => checkOutputPath(join(dir, name), `OUT ${name}`, inputs), {
      name: 'OutputFileError',
      message: `OUT ${name}: is the same file as the raw image in.raw; refusing to overwrite an input (choose another output path)`,
    })
    t.throws(() => ReplacementFile.create(join(dir, name), { inputs }), OutputFileError)
    t.throws(() => openOutputInPlace(join(dir, name), `--trace ${name}`, inputs), OutputFileError)
  }
  t.equal(readFileSync(input, 'utf8'), 'input bytes', 'the input is untouched')
  t.same(readdirSync(dir).sort(), ['hard', 'in.raw', 'soft'], 'no temporary left behind')
  t.doesNotThrow(() => checkOutputPath(join(dir, 'new.out'), 'OUT', inputs), 'a new path is fine')
})

t.test('existing non-regular outputs are refused and left as they are', { skip: process.getuid?.() !== 0 ? 'mknod needs root' : false }, async t => {
  const dir = t.testdir()
  const dev = join(dir, 'null'),
    fifo = join(dir, 'fifo')
  execFileSync('mknod', [dev, 'c', '1', '3'])
  execFileSync('mkfifo', [fifo])
  t.throws(() => ReplacementFile.create(dev), { message: `${dev}: is a character device; refusing to write over it (outputs must be regular files)` })
  t.throws(() => ReplacementFile.create(fifo), { message: /: is a FIFO; refusing/ })
  t.throws(() => ReplacementFile.create(dir), { message: /: is a directory; refusing/ })
  // In place: the FIFO with no reader is refused at once (O_NONBLOCK), not waited on.
  t.throws(() => openOutputInPlace(fifo, '--trace fifo', []), { message: '--trace fifo: is a FIFO; refusing to write over it (outputs must be regular files)' })
  t.throws(() => openOutputInPlace(dev, '--trace null', []), { message: /--trace null: is a character device/ })
  t.ok(statSync(dev).isCharacterDevice(), 'the device is still a device')
  t.ok(statSync(fifo).isFIFO(), 'the FIFO is still a FIFO')
})

t.test('a replacement appears whole at commit, never before; abort leaves the target as it was', async t => {
  const dir = t.testdir({ 'out.txt': 'old' })
  const target = join(dir, 'out.txt')
  const f = ReplacementFile.create(target)
  t.match(f.tempPath, new RegExp(`^${dir}/\\.out\\.txt\\.${process.pid}-[0-9a-f]{12}\\.tmp$`), 'the temporary is a unique name beside the target')
  writeSync(f.fd, 'new contents')
  t.equal(readFileSync(target, 'utf8'), 'old', 'the target is untouched while writing')
  f.commit()
  t.equal(readFileSync(target, 'utf8'), 'new contents')
  t.notOk(existsSync(f.tempPath))
  const g = ReplacementFile.create(target)
  writeSync(g.fd, 'half')
  g.abort()
  t.equal(readFileSync(target, 'utf8'), 'new contents', 'an aborted replacement changes nothing')
  t.same(readdirSync(dir), ['out.txt'])
})

t.test('a symlink planted where the temporary would go is never followed', async t => {
  const dir = t.testdir({ victim: 'precious' })
  const victim = join(dir, 'victim')
  // The names faultline used to take (OUT.tmp), and a few guesses at this process's own.
  symlinkSync(victim, join(dir, 'z.snap.tmp'))
  const f = ReplacementFile.create(join(dir, 'z.snap'))
  t.ok(lstatSync(f.tempPath).isFile() && !lstatSync(f.tempPath).isSymbolicLink(), 'the temporary is a file of its own')
  writeSync(f.fd, 'snapshot')
  f.commit()
  t.equal(readFileSync(victim, 'utf8'), 'precious', "the symlink's target is untouched")
  t.ok(lstatSync(join(dir, 'z.snap.tmp')).isSymbolicLink(), 'the planted symlink is left alone')
  t.equal(readFileSync(join(dir, 'z.snap'), 'utf8'), 'snapshot')
})

t.test('in place: truncated only after the checks, on the descriptor opened', async t => {
  const dir = t.testdir({ trace: 'old trace bytes' })
  const fd = openOutputInPlace(join(dir, 'trace'), '--trace trace', [])
  writeSync(fd, 'new')
  closeSync(fd)
  t.equal(readFileSync(join(dir, 'trace'), 'utf8'), 'new')
})

t.test('an interrupted writer leaves no temporary and the target as it was', async t => {
  const dir = t.testdir({ out: 'old' })
  // A child that writes its replacement slowly and is interrupted midway.
  const script = `
    import { ReplacementFile } from ${JSON.stringify(new URL('../../src/util/output-file.ts', import.meta.url).href)}
    import { writeSync } from 'node:fs'
    const f = ReplacementFile.create(process.argv[1], { removeOnSignal: true })
    writeSync(f.fd, 'partial')
    console.log(f.tempPath)
    setTimeout(() => { f.commit() }, 60000)`
  const child = spawn(process.execPath, [...process.execArgv, '--input-type=module', '-e', script, join(dir, 'out')], { stdio: ['ignore', 'pipe', 'inherit'] })
  const temp = await new Promise<string>(r => child.stdout.once('data', d => r(String(d).trim())))
  t.ok(existsSync(temp), 'the temporary exists while writing')
  child.kill('SIGINT')
  const code = await new Promise<number | null>(r => child.on('exit', c => r(c)))
  t.equal(code, 130, 'the process still ends as SIGINT ends it (128 + 2)')
  t.notOk(existsSync(temp), 'the temporary was removed')
  t.equal(readFileSync(join(dir, 'out'), 'utf8'), 'old')
})
