// Commands that write never clobber: an output that is one of the inputs (same device and
// inode, whatever the path) or an existing non-regular file is refused with one line; the
// temporary a replacement goes through is created exclusively, so a raw image or a symlink
// sitting where the old fixed name (OUT.tmp) pointed is never touched; inputs that are not
// regular files are refused at once instead of hanging.
import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, linkSync, readdirSync, readFileSync, statSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { snapshotCommand } from '../../src/cli/snapshot.js'
import { traceCommand } from '../../src/cli/trace.js'
import { PageServer } from '../../src/server/page-server.js'
import { writeSyntheticImage } from '../../src/snapshot/synthetic-image.js'
import { ROOT } from '../e2e/harness.js'
import { faults, writeTrace } from '../trace/fixtures.js'

const root = process.getuid?.() === 0

async function snapshot(argv: string[]) {
  let stdout = '',
    stderr = ''
  const code = await snapshotCommand(argv, { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) }, env: {} })
  return { code, stdout, stderr }
}

async function trace(argv: string[]) {
  let stdout = '',
    stderr = ''
  let code: number
  try {
    code = await traceCommand(argv, { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) } })
  } catch (err) {
    code = 1
    stderr += `faultline: ${(err as Error).message}\n`
  }
  return { code, stdout, stderr }
}

function image(dir: string, name = 'mem.raw'): { path: string; bytes: Buffer } {
  const path = join(dir, name)
  writeSyntheticImage(path, 1 << 20, { seed: 3 })
  return { path, bytes: readFileSync(path) }
}

t.test('snapshot create and extract refuse outputs that are their input', async t => {
  const dir = t.testdir()
  const raw = image(dir)
  linkSync(raw.path, join(dir, 'hard.snap'))
  symlinkSync(raw.path, join(dir, 'soft.snap'))
  for (const out of ['mem.raw', 'hard.snap', 'soft.snap']) {
    const r = await snapshot(['create', raw.path, join(dir, out)])
    t.equal(r.code, 1, `create onto ${out}: refused`)
    t.match(r.stderr, new RegExp(`^faultline: ${join(dir, out)}: is the same file as the raw image ${raw.path}; refusing to overwrite an input`), r.stderr)
  }
  t.ok(readFileSync(raw.path).equals(raw.bytes), 'the raw image is untouched')
  const snap = join(dir, 'mem.snap')
  t.equal((await snapshot(['create', raw.path, snap])).code, 0)
  const snapBytes = readFileSync(snap)
  linkSync(snap, join(dir, 'hard.raw'))
  for (const out of ['mem.snap', 'hard.raw']) {
    const r = await snapshot(['extract', snap, join(dir, out)])
    t.equal(r.code, 1, `extract onto ${out}: refused`)
    t.match(r.stderr, /is the same file as the snapshot .*mem\.snap; refusing to overwrite an input/, r.stderr)
  }
  t.ok(readFileSync(snap).equals(snapBytes), 'the snapshot is untouched')
  t.same(
    readdirSync(dir).filter(f => f.endsWith('.tmp')),
    [],
    'no temporary left behind',
  )
})

t.test('snapshot create and extract refuse existing device and FIFO outputs', { skip: root ? false : 'mknod needs root' }, async t => {
  const dir = t.testdir()
  const raw = image(dir)
  const snap = join(dir, 'mem.snap')
  t.equal((await snapshot(['create', raw.path, snap])).code, 0)
  // A private /dev/null (same device numbers), so the check can fail without harm.
  const devnull = join(dir, 'null'),
    fifo = join(dir, 'fifo')
  execFileSync('mknod', [devnull, 'c', '1', '3'])
  execFileSync('mkfifo', [fifo])
  for (const [out, kind] of [
    [devnull, 'a character device'],
    [fifo, 'a FIFO'],
  ]) {
    for (const argv of [
      ['create', raw.path, out],
      ['extract', snap, out],
    ]) {
      const r = await snapshot(argv)
      t.equal(r.code, 1, `${argv[0]} onto ${kind}: refused`)
      t.equal(r.stderr, `faultline: ${out}: is ${kind}; refusing to write over it (outputs must be regular files)\n`)
    }
  }
  t.ok(statSync(devnull).isCharacterDevice(), 'the device node is still a device')
  t.ok(statSync(fifo).isFIFO(), 'the FIFO is still a FIFO')
})

t.test('the temporary is never a fixed name: neither a file nor a symlink there is touched', async t => {
  const dir = t.testdir()
  // The raw image is named like the old temporary of its own snapshot.
  const raw = image(dir, 'y.snap.tmp')
  const r = await snapshot(['create', raw.path, join(dir, 'y.snap')])
  t.equal(r.code, 0, r.stderr)
  t.ok(readFileSync(raw.path).equals(raw.bytes), 'y.snap.tmp, the raw image, is intact')
  t.equal((await snapshot(['verify', join(dir, 'y.snap')])).code, 0, 'and y.snap is its snapshot')
  // A symlink planted where the old temporary went, pointing at a file of the victim's.
  writeFileSync(join(dir, 'victim'), 'precious')
  symlinkSync(join(dir, 'victim'), join(dir, 'z.snap.tmp'))
  symlinkSync(join(dir, 'victim'), join(dir, 'z.raw.tmp'))
  t.equal((await snapshot(['create', raw.path, join(dir, 'z.snap')])).code, 0)
  t.equal((await snapshot(['extract', join(dir, 'z.snap'), join(dir, 'z.raw')])).code, 0)
  t.equal(readFileSync(join(dir, 'victim'), 'utf8'), 'precious', "the symlinks' target is untouched")
  t.ok(readFileSync(join(dir, 'z.raw')).equals(raw.bytes), 'extract wrote the image back')
})

t.test('inputs that are not regular files are refused at once, naming the file', async t => {
  const dir = t.testdir()
  const fifo = join(dir, 'fifo')
  execFileSync('mkfifo', [fifo])
  const started = Date.now()
  t.match((await snapshot(['create', fifo, join(dir, 'x.snap')])).stderr, `faultline: ${fifo}: not a regular file`)
  t.match((await snapshot(['info', fifo])).stderr, `faultline: ${fifo}: not a regular file`)
  t.match((await trace(['stats', fifo])).stderr, `faultline: ${fifo}: cannot read trace: not a regular file`)
  t.match((await trace(['stats', dir])).stderr, `faultline: ${dir}: cannot read trace: is a directory`)
  await t.rejects(PageServer.start({ snapshotPath: fifo, socketPath: join(dir, 's.sock') }), { message: `${fifo}: not a regular file` })
  t.ok(Date.now() - started < 10000, 'nothing waited for a writer on the FIFO')
  t.notOk(existsSync(join(dir, 's.sock')), 'no socket left behind')
})

t.test('a raw image too large for the index is refused with its name', async t => {
  const dir = t.testdir()
  const raw = join(dir, 'huge.raw')
  writeFileSync(raw, '')
  truncateSync(raw, 2 ** 40 + 4096) // sparse: 1 TiB and a page
  const r = await snapshot(['create', raw, join(dir, 'huge.snap')])
  t.equal(r.code, 1)
  t.match(r.stderr, new RegExp(`^faultline: ${raw}: raw image is 1099511631872 bytes; at most \\d+ with 4096-byte pages \\(the index`))
  t.same(readdirSync(dir), ['huge.raw'])
})

t.test('trace export and plot refuse to write over their trace, or a device', async t => {
  const dir = t.testdir()
  const tr = writeTrace(dir, 't.fltrace', faults([1, 2, 3]))
  const bytes = readFileSync(tr)
  linkSync(tr, join(dir, 'alias.csv'))
  linkSync(tr, join(dir, 'alias.svg'))
  for (const argv of [
    ['export', tr, '--csv', '-o', tr],
    ['export', tr, '--jsonl', '-o', join(dir, 'alias.csv')],
    ['plot', tr, '-o', join(dir, 'alias.svg')],
  ]) {
    const r = await trace(argv)
    t.not(r.code, 0, `${argv.join(' ')}: refused`)
    t.match(r.stderr, /-o .*: is the same file as the trace .*t\.fltrace; refusing to overwrite an input/)
  }
  t.ok(readFileSync(tr).equals(bytes), 'the trace is untouched')
  if (root) {
    execFileSync('mknod', [join(dir, 'null'), 'c', '1', '3'])
    const r = await trace(['export', tr, '--csv', '-o', join(dir, 'null')])
    t.match(r.stderr, /is a character device; refusing/)
    t.ok(statSync(join(dir, 'null')).isCharacterDevice())
  }
  const ok = await trace(['export', tr, '--csv', '-o', join(dir, 'out.csv')])
  t.equal(ok.code, 0, ok.stderr)
  t.equal(readFileSync(join(dir, 'out.csv'), 'utf8').trimEnd().split('\n').length, 4)
})

t.test('an interrupted trace export leaves no partial file', async t => {
  const dir = t.testdir()
  // A trace whose export takes a while (a few hundred ms at least).
  const pages = Array.from({ length: 400000 }, (_, i) => i % 4096)
  const tr = writeTrace(dir, 'big.fltrace', faults(pages))
  const out = join(dir, 'big.csv')
  writeFileSync(out, 'the previous export\n')
  const child = spawn(process.execPath, [join(ROOT, 'dist/cli/main.js'), 'trace', 'export', tr, '--csv', '-o', out], { stdio: ['ignore', 'ignore', 'inherit'] })
  // Interrupt it once its temporary exists, that is, midway.
  const deadline = Date.now() + 20000
  while (!readdirSync(dir).some(f => f.endsWith('.tmp')) && Date.now() < deadline && child.exitCode === null) await new Promise(r => setTimeout(r, 2))
  child.kill('SIGINT')
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>(r => child.on('exit', (c, s) => r([c, s])))
  t.equal(code, 130, `interrupted before it finished (exit ${code}, ${signal})`)
  t.equal(readFileSync(out, 'utf8'), 'the previous export\n', 'the output is as it was, not truncated')
  t.same(readdirSync(dir).sort(), ['big.csv', 'big.fltrace'], 'and no temporary is left')
})

t.test('serve --trace refuses the snapshot, the working-set trace, and devices', async t => {
  const dir = t.testdir()
  const raw = image(dir)
  const snap = join(dir, 'mem.snap')
  t.equal((await snapshot(['create', raw.path, snap])).code, 0)
  const bytes = readFileSync(snap)
  linkSync(snap, join(dir, 'alias'))
  const ws = writeTrace(dir, 'ws.fltrace', faults([1, 2]), { snapshotPages: 256 })
  const socket = join(dir, 's.sock')
  await t.rejects(PageServer.start({ snapshotPath: snap, socketPath: socket, tracePath: snap }), {
    message: `--trace ${snap}: is the same file as the snapshot ${snap}; refusing to overwrite an input (choose another output path)`,
  })
  await t.rejects(PageServer.start({ snapshotPath: snap, socketPath: socket, tracePath: join(dir, 'alias') }), { message: /is the same file as the snapshot/ })
  await t.rejects(PageServer.start({ snapshotPath: snap, socketPath: socket, tracePath: ws, policy: `workingset:${ws}` }), {
    message: `--trace ${ws}: is the same file as the policy's input ${ws}; refusing to overwrite an input (choose another output path)`,
  })
  if (root) {
    execFileSync('mkfifo', [join(dir, 'fifo')])
    await t.rejects(PageServer.start({ snapshotPath: snap, socketPath: socket, tracePath: join(dir, 'fifo') }), { message: /is a FIFO; refusing/ })
  }
  t.ok(readFileSync(snap).equals(bytes), 'the snapshot is untouched')
  t.notOk(existsSync(socket), 'no socket left behind')
})
