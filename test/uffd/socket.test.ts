// The listening socket is 0600 from its first instant: what listenUnix asks of the kernel, in
// order, seen with strace: bound under a temporary name, chmod-ed, renamed into place, and only
// then listening (a connect before listen(2) is refused, whatever the mode).
import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ensureDist } from '../e2e/dist.js'
import { ROOT } from '../e2e/harness.js'

function hasStrace(): boolean {
  try {
    execFileSync('strace', ['-V'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** The socket system calls of a process that runs listenUnix(path, 128, mode). */
function traceListen(path: string, mode: number): string[] {
  const script = `import { listenUnix, closeFd } from ${JSON.stringify(join(ROOT, 'dist/uffd/index.js'))}
    closeFd(listenUnix(process.argv[1], 128, Number(process.argv[2])))`
  const r = spawnSync(
    'strace',
    [
      '-f',
      '-qq',
      '-e',
      'trace=bind,chmod,fchmod,fchmodat,rename,renameat,renameat2,listen',
      '-e',
      'signal=none',
      process.execPath,
      '--input-type=module',
      '-e',
      script,
      path,
      String(mode),
    ],
    { encoding: 'utf8' },
  )
  if (r.status !== 0) throw new Error(`strace failed: ${r.stderr}`)
  return r.stderr
    .split('\n')
    .map(l => l.replace(/^\[pid\s+\d+\] /, ''))
    .filter(l => /^(bind|chmod|fchmod|fchmodat|rename|renameat|renameat2|listen)\(/.test(l))
}

t.test('bound under a temporary name, chmod-ed, renamed, then listening', async t => {
  if (!hasStrace()) {
    t.fail('strace is not installed: apt-get install strace')
    return
  }
  ensureDist()
  const dir = mkdtempSync(join(tmpdir(), 'fl-sock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const mode of [0o600, 0o666]) {
    const path = join(dir, `s${mode.toString(8)}.sock`)
    const calls = traceListen(path, mode)
    t.equal(calls.length, 4, `four calls: ${calls.join(' | ')}`)
    const bind = /^bind\((\d+), \{sa_family=AF_UNIX, sun_path="([^"]+)"\}/.exec(calls[0] ?? '')
    t.ok(bind, `first, bind: ${calls[0]}`)
    const [, fd, tmp] = bind ?? []
    t.not(tmp, path, 'to a temporary name, not the socket path')
    t.match(
      calls[1],
      new RegExp(`^(chmod\\("${tmp}"|fchmodat\\(AT_FDCWD, "${tmp}"), 0${mode.toString(8)}\\) = 0`),
      `then chmod ${mode.toString(8)} of the temporary`,
    )
    t.match(calls[2], new RegExp(`^rename(at2?)?\\(.*"${tmp}", .*"${path}".*\\) = 0`), 'then renamed into place')
    t.match(calls[3], new RegExp(`^listen\\(${fd}, 128\\)\\s*= 0`), 'and only then listening')
    t.equal(statSync(path).mode & 0o777, mode)
  }
})
