// The acceptor thread (acceptor.ts) as the page server's main thread sees it: started with its
// data, its messages turned into calls on the server; the server stops it through its eventfd.
import { Worker } from 'node:worker_threads'
import { describeError } from '../errors.js'
import { openFileCount, openFileLimit } from '../util/fd-limit.js'
import { workerEntry } from '../util/worker-url.js'
import { ServerError } from './server-options.js'
import type { AcceptorData, AcceptorMessage, GuestHandoff } from './worker-protocol.js'

export interface AcceptorHost {
  guest(g: GuestHandoff): void
  rejected(pid: number, error: string): void
  log(line: string): void
}

export class AcceptorThread {
  readonly exited: Promise<unknown>
  /** Resolves once the thread accepts; rejects when it fails to start. */
  readonly ready: Promise<void>

  constructor(data: AcceptorData, host: AcceptorHost) {
    const entry = workerEntry(import.meta.url, new URL('./acceptor.js', import.meta.url), new URL('../../dist/server/acceptor.js', import.meta.url))
    const acceptor = new Worker(entry.url, { ...entry.options, workerData: data })
    this.exited = new Promise(r => acceptor.once('exit', r))
    let listening!: () => void
    let failure = 'exited'
    this.ready = new Promise<void>((resolve, reject) => {
      listening = resolve
      acceptor.once('exit', () => reject(new ServerError(`acceptor thread failed to start: ${failure}`)))
    })
    acceptor.on('message', (m: AcceptorMessage) => {
      switch (m.type) {
        case 'listening':
          listening()
          break
        case 'guest':
          host.guest(m)
          break
        case 'rejected':
          host.rejected(m.pid, m.error)
          break
        case 'log':
          host.log(m.line)
          break
        case 'fatal':
          failure = m.error
          host.log(`acceptor failed: ${m.error}; no new guests are accepted`)
          break
      }
    })
    acceptor.on('error', err => host.log(`acceptor crashed: ${describeError(err)}; no new guests are accepted`))
  }
}

/** Pending handshakes at most: --max-pending-handshakes, and no more than half the
 * descriptors still free (the rest are for the sessions), so that a flood of silent clients
 * cannot take the descriptors a guest's session needs. A lowered bound is said in `notices`. */
export function pendingBound(maxPending: number, notices: string[]): number {
  const limit = openFileLimit()
  if (limit === undefined) return maxPending
  const free = Math.max(0, limit - openFileCount())
  const bound = Math.max(1, Math.min(maxPending, Math.floor(free / 2)))
  if (bound < maxPending) {
    notices.push(`descriptor limit ${limit} (${free} free): at most ${bound} handshakes pending at once instead of ${maxPending}`)
  }
  return bound
}
