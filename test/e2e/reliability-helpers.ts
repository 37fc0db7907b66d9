// Shared pieces of the reliability tests: a page server whose session workers run the
// compiled dist/ code (a worker compiling the TypeScript sources again takes seconds, which
// would decide every multi-guest test), the server as a separate process to kill, a hostile
// client that speaks the wire protocol by hand, and counts of the process's fds and threads.
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { PageServer, type PageServerOptions } from '../../src/server/page-server.js'
import * as uffd from '../../src/uffd/index.js'
import { ensureDist } from './dist.js'
import { ROOT, waitUntil } from './harness.js'

interface Teardown {
  teardown(fn: () => unknown): void
}

const CLI = join(ROOT, 'dist/cli/main.js')

/** A PageServer in this process; its session workers run dist/'s compiled code (PageServer
 * picks it when it runs from TypeScript), made fresh first. */
export async function startFastServer(t: Teardown, opts: PageServerOptions): Promise<PageServer> {
  ensureDist()
  const server = await PageServer.start(opts)
  t.teardown(() => server.close())
  return server
}

export interface ServerProcess {
  child: ChildProcess
  /** Everything it wrote to stderr so far (its log lines). */
  log(): string
  /** Resolves once its log has a line matching `pattern` (rejects after `timeoutMs`). */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<void>
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** `faultline serve` (compiled) as a child process, ready when it says it is serving; `wrapper`
 * runs it under another command (`prlimit --nofile=100 --`). */
export async function startServerProcess(t: Teardown, args: string[], wrapper: string[] = []): Promise<ServerProcess> {
  ensureDist()
  const argv = [...wrapper, process.execPath, CLI, 'serve', ...args]
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] })
  let text = ''
  const waiters: Array<() => void> = []
  child.stderr!.on('data', d => {
    text += d
    for (const w of waiters.splice(0)) w()
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(r => child.on('exit', (code, signal) => r({ code, signal })))
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const proc: ServerProcess = {
    child,
    exited,
    log: () => text,
    waitForLog(pattern, timeoutMs = 30000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`server log has no ${pattern} after ${timeoutMs} ms:\n${text}`)), timeoutMs)
        const check = () => {
          if (pattern.test(text)) {
            clearTimeout(timer)
            resolve()
            return
          }
          if (child.exitCode !== null || child.signalCode !== null) {
            clearTimeout(timer)
            reject(new Error(`server exited:\n${text}`))
            return
          }
          waiters.push(check)
        }
        check()
      })
    },
  }
  await proc.waitForLog(/faultline: serving |"msg":"serving /)
  return proc
}

/** `faultline ARGS` (compiled) run to its end: exit status and what it wrote to stderr. Killed
 * (and so failing the test) after `timeoutMs`. */
export async function runCli(args: string[], timeoutMs = 60000): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  ensureDist()
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', d => {
    stderr += d
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>(r => child.on('close', (c, s) => r([c, s])))
  clearTimeout(timer)
  return { code, signal, stderr }
}

/** Open descriptors of this process. */
export function fdCount(): number {
  return readdirSync('/proc/self/fd').length
}

/** Threads of this process (the main one, libuv's, V8's, and one per worker). */
export function threadCount(): number {
  return readdirSync('/proc/self/task').length
}

/** Resident set of a process (this one by default), bytes. */
export function rssBytes(pid: number | 'self' = 'self'): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))
  return m ? Number(m[1]) * 1024 : NaN
}

/** Polls `cond` every 20 ms until it holds or `timeoutMs` passes; returns whether it held. */
export function waitFor(cond: () => boolean, timeoutMs = 10000): Promise<boolean> {
  return waitUntil(cond, timeoutMs)
}

export interface Reply {
  /** The server's reply line, parsed; undefined when it closed without one. */
  reply?: { ok: boolean; error?: string; session?: number }
  /** The connection reached end of stream (the server closed it). */
  closed: boolean
  /** Milliseconds from the send to the reply (or the close). */
  ms: number
}

/** Connects to `socket` as a client of the wire protocol. */
export function connect(socket: string): number {
  return uffd.connectUnix(socket)
}

/** Sends `body` with `fds` attached (none: a message without SCM_RIGHTS); returns the bytes
 * the socket took (a huge body may not all fit). */
export function send(fd: number, body: string | Buffer, fds: number[] = []): number {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body
  let sent = 0
  try {
    sent = uffd.sendWithFds(fd, bytes, fds)
  } catch (err) {
    // The server may refuse and close before a huge body is all written.
    if (!(err instanceof uffd.UffdError) || !['EPIPE', 'ECONNRESET', 'EAGAIN'].includes(err.code)) throw err
  }
  return sent
}

/** Waits for the server's reply line, or the close, on a connected socket. */
export async function readReply(fd: number, timeoutMs = 15000): Promise<Reply> {
  const start = Date.now()
  const buf = Buffer.alloc(4096)
  let text = ''
  for (;;) {
    const n = uffd.receiveBytes(fd, buf)
    if (n > 0) {
      text += buf.toString('utf8', 0, n)
      const nl = text.indexOf('\n')
      if (nl >= 0) return { reply: JSON.parse(text.slice(0, nl)), closed: false, ms: Date.now() - start }
      continue
    }
    if (n === 0) return { reply: text ? JSON.parse(text) : undefined, closed: true, ms: Date.now() - start }
    if (Date.now() - start > timeoutMs) throw new Error(`no reply within ${timeoutMs} ms (got ${JSON.stringify(text)})`)
    await new Promise(r => setTimeout(r, 5))
  }
}

/** One hostile (or broken) client: connect, send, read the answer, close. */
export async function exchange(socket: string, body: string | Buffer, fds: number[] = []): Promise<Reply> {
  const fd = connect(socket)
  try {
    send(fd, body, fds)
    return await readReply(fd)
  } finally {
    uffd.closeFd(fd)
  }
}

/** A file descriptor that is not a userfaultfd, for a client to send. */
export function notAUserfaultfd(): number {
  return openSync('/dev/null', 'r')
}

export { closeSync }
