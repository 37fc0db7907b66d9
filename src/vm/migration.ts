// QEMU migration streams to and from files (QEMU 7.2 has no file: URI, so through exec:),
// with completion taken from MIGRATION events rather than polling.
import { existsSync, rmSync, statSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { VmError } from './errors.js'
import type { QmpClient } from './qmp.js'

/** The QEMU at the other end of a migration: one faultline launched (QemuVm) or one it only
 * reaches over QMP (ExternalQemu), whose `exited` is its QMP connection closing. */
export interface MigrationPeer {
  readonly name: string
  readonly qmp: QmpClient
  readonly exited: Promise<unknown>
  /** Rejects as soon as QEMU is gone. */
  failOnExit(when: string): Promise<never>
  /** QEMU's last stderr lines, '' when it is not ours to read. */
  lastStderr(lines?: number): string
}

export interface MigrationCapabilities {
  /** Leave RAM blocks backed by shared memory out of the stream (the RAM file holds them). */
  ignoreShared: boolean
}

/** Turns MIGRATION events on and sets x-ignore-shared; both ends must agree on the latter,
 * since it changes the stream's layout. */
export async function setMigrationCapabilities(vm: MigrationPeer, caps: MigrationCapabilities): Promise<void> {
  await vm.qmp.execute('migrate-set-capabilities', {
    capabilities: [
      { capability: 'events', state: true },
      { capability: 'x-ignore-shared', state: caps.ignoreShared },
    ],
  })
}

export interface MigrationResult {
  path: string
  sizeBytes: number
  durationMs: number
}

/** Migrates the (stopped) VM's state into `path`. The stream goes to `path.part` and is
 * renamed once `cat` has written all of it: QEMU reports completion before its exec child
 * has drained the pipe. */
export async function migrateToFile(vm: MigrationPeer, path: string, timeoutMs: number): Promise<MigrationResult> {
  const part = `${path}.part`
  rmSync(path, { force: true })
  rmSync(part, { force: true })
  const started = performance.now()
  const done = waitForMigrationEnd(vm, timeoutMs)
  done.catch(() => {}) // if `migrate` itself fails, that error is the one to report
  await vm.qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(part)} && mv ${shellQuote(part)} ${shellQuote(path)}` })
  await Promise.race([done, vm.failOnExit(`while migrating to ${path}`)])
  const deadline = Date.now() + timeoutMs
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new VmError(`${vm.name}: migration to ${path} completed but the file never appeared (did cat fail?)`)
    await sleep(2)
  }
  return { path, sizeBytes: statSync(path).size, durationMs: performance.now() - started }
}

/** Loads a stream saved by migrateToFile into a VM started with `incoming`. */
export async function migrateFromFile(vm: MigrationPeer, path: string, timeoutMs: number): Promise<void> {
  if (!existsSync(path)) throw new VmError(`${path}: no such migration stream`)
  const done = waitForMigrationEnd(vm, timeoutMs)
  done.catch(() => {}) // if `migrate-incoming` itself fails, that error is the one to report
  await vm.qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(path)}` })
  // A destination that cannot load the state exits: its stderr says why.
  await Promise.race([done, vm.failOnExit(`while loading ${path}`)])
}

async function waitForMigrationEnd(vm: MigrationPeer, timeoutMs: number): Promise<void> {
  const end = await vm.qmp.waitForEvent('MIGRATION', {
    timeoutMs,
    match: d => d.status === 'completed' || d.status === 'failed' || d.status === 'cancelled',
  })
  if (end.data.status !== 'completed') {
    let why = ''
    try {
      const info = await vm.qmp.execute<{ 'error-desc'?: string }>('query-migrate', undefined, 1000)
      why = info['error-desc'] ?? ''
    } catch {
      // A failed destination exits right away; its stderr says why (below).
    }
    if (!why) {
      await Promise.race([vm.exited, sleep(1000)])
      why = vm.lastStderr(2)
    }
    throw new VmError(`${vm.name}: migration ${String(end.data.status)}${why ? `: ${why}` : ''}`)
  }
}

export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}
