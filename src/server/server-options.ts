// What a page server is started with, checked before anything is opened: PageServerOptions,
// their bounds, the policy a --learn DIR gives, what a --trace must never overwrite, and the
// socket path made ready to listen on.
import { existsSync, lstatSync, unlinkSync } from 'node:fs'
import { FaultlineError } from '../errors.js'
import type { FaultPolicy } from '../policy/policy.js'
import { policyModulePath } from '../policy/registry.js'
import type { SnapshotReader } from '../snapshot/reader.js'
import type { ChunkStore, ChunkStoreOptions } from '../store/chunk-store.js'
import { learnedSetPath, readLearnedSet, type SnapshotIdentity } from '../trace/learned-set.js'
import * as uffd from '../uffd/index.js'
import { inputIdentities, type FileIdentity } from '../util/output-file.js'
import type { UnservableAction } from './unservable.js'

export interface PageServerOptions {
  socketPath: string
  snapshotPath: string
  /** `--policy` spec; default ondemand. */
  policy?: string
  tracePath?: string
  /** Peer uids allowed besides our own (the socket is then made connectable by others too:
   * SO_PEERCRED does the refusing). */
  allowUids?: number[]
  allowAnyUid?: boolean
  /** Workers kept waiting for the next guest (1..MAX_WARM_WORKERS, default 1). */
  warmWorkers?: number
  /** A replacement worker getting ready in SCHED_IDLE is raised after this long even when no
   * guest waits for it (default 2000 ms). */
  idleStartLimitMs?: number
  /** Guests served at once (1..MAX_SESSIONS, default 256); more wait for a slot, up to the
   * handshake timeout. */
  maxSessions?: number
  /** Serve one guest: no worker starts after the first one takes a guest, so nothing but that
   * guest's session runs in the process (benchmarks measure the server's own cost). */
  singleGuest?: boolean
  handshakeTimeoutMs?: number
  /** Connections whose first message is awaited, at most (default 128); more wait in the
   * socket's backlog. */
  maxPendingHandshakes?: number
  /** A session whose loop has not moved for this long while its guest has faults waiting is
   * ended and its guest failed closed (default 20000 ms). */
  stallTimeoutMs?: number
  /** Files a --trace must not overwrite, besides the snapshot and the policy's inputs. */
  protectedFiles?: FileIdentity[]
  /** For an s3:// snapshot: its chunk cache and how to reach the store (--cache-dir,
   * --cache-size, --endpoint); defaults from remoteStoreDefaults(). */
  remote?: Partial<ChunkStoreOptions>
  /** Decoded bytes the snapshot's decoded cache may hold (--cache-memory; default: the whole
   * image, never evicting; 0: no cache, every guest anonymous and every page decoded per
   * session). */
  cacheMemoryBytes?: number
  /** Fill workers decoding into the cache (--fill-workers; default: the machine's cores). */
  fillWorkers?: number
  /** 'small' keeps the cache in 4 KiB pages even where huge folios are possible. */
  cacheFolios?: 'huge' | 'small'
  /** serve --learn DIR: each session's used pages are kept there per snapshot, and with no
   * --policy the next sessions prefetch them (learned:). */
  learnDir?: string
  /** A guest whose page can be neither served nor poisoned: 'kill' (default) ends its process
   * (SIGKILL through its pidfd), 'close' only ends its session (unservable.ts). */
  onUnservable?: UnservableAction
}

export const MAX_WARM_WORKERS = 64
export const MAX_SESSIONS = 4096
export const MAX_PENDING_HANDSHAKES = 4096
export const DEFAULT_STALL_TIMEOUT_MS = 20000

export class ServerError extends FaultlineError {
  override readonly code: string = 'FL_ERR_SERVER'
}

function checkBound(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw new ServerError(`--${name}: expected ${min}..${max}, got ${value}`)
  return value
}

/** The numeric options' bounds. */
export function checkOptions(opts: PageServerOptions): void {
  checkBound('warm-workers', opts.warmWorkers ?? 1, 1, MAX_WARM_WORKERS)
  checkBound('max-sessions', opts.maxSessions ?? 256, 1, MAX_SESSIONS)
  checkBound('max-pending-handshakes', opts.maxPendingHandshakes ?? 128, 1, MAX_PENDING_HANDSHAKES)
}

export function snapshotIdentity(snapshot: SnapshotReader | undefined, store: ChunkStore | undefined): SnapshotIdentity {
  const h = snapshot?.header ?? store!.snapshot.header
  return { indexCrc: h.indexCrc, pageCount: h.pageCount, pageSize: h.pageSize }
}

/** The policy to run: --policy, else with --learn the snapshot's learned set when DIR holds
 * one, else ondemand. */
export function policyFor(opts: PageServerOptions, identity: SnapshotIdentity): string {
  if (opts.policy !== undefined) return opts.policy
  if (opts.learnDir === undefined) return 'ondemand'
  if (readLearnedSet(opts.learnDir, identity) === undefined) return 'ondemand'
  return `learned:${learnedSetPath(opts.learnDir, identity)}`
}

/** What a session's trace must never overwrite: the snapshot, what the policy read, the
 * policy module, and what the caller names. */
export function traceInputs(opts: PageServerOptions, snapshot: SnapshotReader | undefined, policy: FaultPolicy): FileIdentity[] {
  const out: FileIdentity[] = [...(opts.protectedFiles ?? [])]
  if (snapshot) out.push({ dev: snapshot.dev, ino: snapshot.ino, name: `the snapshot ${opts.snapshotPath}` })
  const module = policyModulePath(opts.policy ?? 'ondemand')
  const files = [...(policy.inputFiles ?? []).map(path => ({ path, name: `the policy's input ${path}` }))]
  if (module) files.push({ path: module, name: `the policy module ${module}` })
  return [...out, ...inputIdentities(files)]
}

/** --socket: a stale socket there is removed, a live one (another server) or anything else
 * refused. Returns the mode to create it with: others may connect only when other uids are
 * allowed (SO_PEERCRED does the refusing). */
export function prepareSocketPath(opts: PageServerOptions): number {
  if (existsSync(opts.socketPath)) {
    if (!lstatSync(opts.socketPath).isSocket()) throw new ServerError(`--socket ${opts.socketPath}: exists and is not a socket`)
    let live = false
    try {
      uffd.closeFd(uffd.connectUnix(opts.socketPath))
      live = true
    } catch {
      /* stale */
    }
    if (live) throw new ServerError(`--socket ${opts.socketPath}: another server is listening there`)
    unlinkSync(opts.socketPath)
  }
  return opts.allowAnyUid || (opts.allowUids ?? []).length > 0 ? 0o666 : 0o600
}
