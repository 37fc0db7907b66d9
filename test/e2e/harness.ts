// Shared pieces of the end-to-end tests: a scratch directory, a synthetic image and its
// snapshot, an in-process page server, and the native guest run as a real process.
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PageServer, type PageServerOptions } from '../../src/server/page-server.js'
import { createSnapshot } from '../../src/snapshot/writer.js'
import { writeSyntheticImage } from '../../src/snapshot/synthetic-image.js'
import { REPO_ROOT } from '../../src/util/repo.js'
import { ensureDist } from './dist.js'

export const ROOT = REPO_ROOT
export const GUEST = join(ROOT, 'native/build/guest')

interface Teardown {
  teardown(fn: () => unknown): void
}

export function scratchDir(t: Teardown, prefix = 'fl-e2e-'): string {
  if (!existsSync(GUEST)) throw new Error(`${GUEST} is missing: run npm install (it builds native/)`)
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export interface ImageFiles {
  raw: string
  snap: string
  sizeBytes: number
}

/** A synthetic image of `mib` MiB and its snapshot in `dir`. */
export async function makeImage(dir: string, mib: number, seed = 1, name = 'mem'): Promise<ImageFiles> {
  const raw = join(dir, `${name}.raw`)
  const snap = join(dir, `${name}.snap`)
  writeSyntheticImage(raw, mib * 2 ** 20, { seed })
  await createSnapshot(raw, snap)
  return { raw, snap, sizeBytes: mib * 2 ** 20 }
}

/** A PageServer in this process, dist/ rebuilt first if a source is newer (its workers run
 * the compiled code, and it refuses a stale build). */
export async function startServer(t: Teardown, opts: PageServerOptions): Promise<PageServer> {
  ensureDist()
  const server = await PageServer.start(opts)
  t.teardown(() => server.close())
  return server
}

/** Waits until `count` sessions have ended: a guest's exit reaches the server's main thread
 * a little after the guest process is gone. */
export function waitForEndedSessions(server: { ended: unknown[] }, count: number, timeoutMs = 30000): Promise<boolean> {
  return waitUntil(() => server.ended.length >= count, timeoutMs)
}

/** Polls `condition` until it holds or `timeoutMs` passes; resolves to whether it held. What a
 * worker reports reaches the server's main thread a little after the guest has seen it. */
export async function waitUntil(condition: () => boolean, timeoutMs = 30000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!condition() && Date.now() < deadline) await new Promise(r => setTimeout(r, 20))
  return condition()
}

export interface GuestResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** The guest's JSON line, when it printed one. */
  report?: Record<string, any>
  /** runGuest's timeout killed it (SIGKILL): it hung. */
  timedOut: boolean
  /** From spawn to exit. */
  elapsedMs: number
}

/** Runs the native guest with `args`; kills it after `timeoutMs` (a hang is a failure). */
export function runGuest(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; binary?: string } = {}): Promise<GuestResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(opts.binary ?? GUEST, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env })
    let stdout = '',
      stderr = ''
    child.stdout.on('data', d => {
      stdout += d
    })
    child.stderr.on('data', d => {
      stderr += d
    })
    const started = Date.now()
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, opts.timeoutMs ?? 60000)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      let report: Record<string, any> | undefined
      const line = stdout.trim().split('\n').pop()
      try {
        report = line ? JSON.parse(line) : undefined
      } catch {
        /* not JSON */
      }
      resolvePromise({ code, signal, stdout, stderr, report, timedOut, elapsedMs: Date.now() - started })
    })
  })
}
