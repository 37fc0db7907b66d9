// Failing a guest closed by killing it (unservable.ts): through a pidfd, its forked children
// first (found by /proc and checked to be its children), never a process that merely reused a pid.
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import * as uffd from '../../src/uffd/index.js'
import { killGuest } from '../../src/server/unservable.js'

function waitFor(cond: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms
  return new Promise(resolve => {
    const tick = () => {
      if (cond()) resolve(true)
      else if (Date.now() > end) resolve(false)
      else setTimeout(tick, 10)
    }
    tick()
  })
}

/** Gone, or a zombie waiting for its (new) parent to reap it. */
function dead(pid: number): boolean {
  try {
    return /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))
  } catch {
    return true
  }
}

t.test('a guest and the children it forked are killed through pidfds', async t => {
  // sh forks a sleep and waits: the guest and its child.
  const guest = spawn('sh', ['-c', 'sleep 60 & wait'], { stdio: 'ignore' })
  const exited = new Promise<NodeJS.Signals | null>(r => guest.on('exit', (_c, s) => r(s)))
  t.ok(await waitFor(() => uffd.childPids(guest.pid!).length === 1), 'the guest forked its child')
  const [child] = uffd.childPids(guest.pid!)
  t.equal(uffd.parentPid(child), guest.pid, 'parentPid reads /proc/PID/stat')
  const pidfd = uffd.pidfdOpen(guest.pid!)
  t.equal(killGuest(pidfd, guest.pid!, true), `killed pid ${guest.pid} and 1 child(ren) it forked (SIGKILL)`)
  t.equal(await exited, 'SIGKILL', 'the guest died of SIGKILL')
  t.ok(await waitFor(() => dead(child)), 'and so did its child')
  t.equal(killGuest(pidfd, guest.pid!, false), `pid ${guest.pid} had exited already`, 'a second kill finds it gone (ESRCH), whatever has the pid now')
  uffd.closeFd(pidfd)
})

t.test('without children asked for, only the guest is killed', async t => {
  const guest = spawn('sh', ['-c', 'sleep 60 & wait'], { stdio: 'ignore' })
  const exited = new Promise<NodeJS.Signals | null>(r => guest.on('exit', (_c, s) => r(s)))
  t.ok(await waitFor(() => uffd.childPids(guest.pid!).length === 1))
  const [child] = uffd.childPids(guest.pid!)
  const pidfd = uffd.pidfdOpen(guest.pid!)
  t.equal(killGuest(pidfd, guest.pid!, false), `killed pid ${guest.pid} (SIGKILL)`)
  t.equal(await exited, 'SIGKILL')
  t.notOk(dead(child), 'its child runs on (it was served whole)')
  process.kill(child, 'SIGKILL')
  uffd.closeFd(pidfd)
})

t.test('no pidfd: said, nothing signalled', async t => {
  t.equal(killGuest(-1, 4242, true), 'could not kill pid 4242: no pidfd of it was opened at connect')
  t.equal(uffd.parentPid(2 ** 22 + 1), -1, 'parentPid of no process: -1')
  t.same(uffd.childPids(2 ** 22 + 1), [], 'childPids of no process: none')
  t.ok(existsSync('/proc/self/stat'))
})
