// Replacement session workers get ready in SCHED_IDLE, so their start-up takes no CPU from the
// guests being served, and are raised at once when a guest waits for them. Driven with CPU
// hogs on every core: an idle-class thread then does not run unless raised.
import { spawn, type ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { makeImage, runGuest, scratchDir, waitUntil } from './harness.js'
import { startFastServer } from './reliability-helpers.js'

const SCHED_IDLE = 5

/** Scheduling policy of each of this process's threads (field 41 of /proc/self/task/T/stat). */
function threadPolicies(): Map<number, number> {
  const out = new Map<number, number>()
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      out.set(Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]))
    } catch {
      /* exited meanwhile */
    }
  }
  return out
}

const idleThreads = () => [...threadPolicies().values()].filter(p => p === SCHED_IDLE).length

t.test(
  'a replacement worker starts idle-class, is raised when a guest waits, and ends up normal',
  { skip: process.getuid?.() !== 0 ? 'needs root (leaving SCHED_IDLE needs CAP_SYS_NICE)' : false },
  async t => {
    const dir = scratchDir(t)
    const img = await makeImage(dir, 16)
    const socket = join(dir, 's.sock')
    // A limit far beyond the test's waits: only a waiting guest can have raised the worker.
    const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, warmWorkers: 1, idleStartLimitMs: 120000 })
    t.equal(idleThreads(), 0, 'the first warm worker started at normal priority')

    // One hog a core, in this process's session: with autogrouping, a hog in a session of its
    // own would only compete at the group level. Each stops by itself after 120 s.
    const hogs: ChildProcess[] = []
    const stopHogs = () => {
      for (const h of hogs.splice(0)) h.kill('SIGKILL')
    }
    t.teardown(stopHogs)
    for (let i = 0; i < cpus().length; i++) {
      hogs.push(spawn(process.execPath, ['-e', 'const end = Date.now() + 120000; while (Date.now() < end) {}'], { stdio: 'ignore', execArgv: [] } as object))
    }
    const guestArgs = (args: string[]) => ['--socket', socket, '--mib', '16', '--verify', img.raw, ...args]
    // Guest A takes the warm worker and keeps its session for a while.
    const a = runGuest(guestArgs(['--workload', 'random:0.2', '--pace-us', '3000']), { timeoutMs: 90000 })
    t.ok(await waitUntil(() => server.active.size === 1, 30000), 'guest A is being served')
    t.ok(await waitUntil(() => idleThreads() > 0, 5000), 'its replacement was created in SCHED_IDLE')
    await new Promise(r => setTimeout(r, 1000))
    t.ok(idleThreads() > 0, 'with every core busy, the idle-class replacement is still getting ready 1 s later')

    // Guest B finds no ready worker: the server raises the replacement, which then serves B.
    const t0 = Date.now()
    const b = await runGuest(guestArgs(['--workload', 'random:0.1']), { timeoutMs: 90000 })
    const waitedMs = Date.now() - t0
    t.equal(b.code, 0, `guest B was served: ${b.stderr}`)
    t.equal(b.report?.mismatches, 0)
    t.ok(waitedMs < 60000, `guest B waited ${waitedMs} ms for a worker (the limit is 120 s: it was raised because B waited)`)
    t.comment(`guest B, with every core hogged, was served after ${waitedMs} ms`)

    stopHogs()
    const ra = await a
    t.equal(ra.code, 0, `guest A was served to the end: ${ra.stderr}`)
    t.equal(ra.report?.mismatches, 0)
    const settled = await waitUntil(() => idleThreads() === 0 && server.active.size === 0, 30000)
    if (!settled) {
      const idle = [...threadPolicies()]
        .filter(([, p]) => p === SCHED_IDLE)
        .map(([tid]) => `${tid} ${readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim()} in ${readFileSync(`/proc/self/task/${tid}/wchan`, 'utf8')}`)
      t.comment(`still idle-class: ${idle.join(', ')}; workers ${server.workerCount}, active ${server.active.size}`)
    }
    t.ok(settled, 'once ready, every worker runs at normal priority')
  },
)
