// Which snapshot pages a guest used, in the order it first used them: what `serve --learn`
// keeps for the next session. Faults say it for pages that were not there; pages already
// there (a cache-mapped guest's hits, which never reach the server) are seen by sampling the
// guest's /proc/PID/pagemap now and then; start-set pages an anonymous guest was given count as
// used (its page tables cannot tell a page it touched from one installed for it).
import { closeSync, openSync } from 'node:fs'
import * as uffd from '../uffd/index.js'
import type { GuestMemory } from './guest-memory.js'

/** Sampling costs about a read of 8 bytes a page: it is done at most this often, and at most
 * 1/SAMPLE_COST_SHARE of the time. */
const MIN_SAMPLE_INTERVAL_MS = 50
const SAMPLE_COST_SHARE = 50
const SYSTEM_PAGE = 4096

export class UsageRecorder {
  private readonly seen: Uint8Array
  private order: Uint32Array
  private length = 0
  private pagemapFd = -1
  private entries = Buffer.alloc(0)
  private present = new Uint8Array(0)
  private nextSampleMs = 0
  private intervalMs = MIN_SAMPLE_INTERVAL_MS

  /** `samplePid`: a cache-mapped guest's pid, whose hits are found by sampling; 0 for none. */
  constructor(
    pageCount: number,
    private readonly pageSize: number,
    samplePid: number,
  ) {
    this.seen = new Uint8Array(pageCount)
    this.order = new Uint32Array(1024)
    if (samplePid > 0) {
      try {
        this.pagemapFd = openSync(`/proc/${samplePid}/pagemap`, 'r')
      } catch {
        /* no sampling: faults only */
      }
    }
  }

  /** The guest used snapshot page `page` (allocation-free unless the list grows). */
  note(page: number): void {
    if (this.seen[page] !== 0) return
    this.seen[page] = 1
    if (this.length === this.order.length) {
      const bigger = new Uint32Array(this.order.length * 2)
      bigger.set(this.order)
      this.order = bigger
    }
    this.order[this.length++] = page
  }

  noteRun(first: number, count: number): void {
    for (let p = first, end = first + count; p < end; p++) this.note(p)
  }

  /** Samples the guest's mapped pages when it is time to (cheap to call every loop turn). */
  maybeSample(memory: GuestMemory, nowMs: number): void {
    if (this.pagemapFd < 0 || nowMs < this.nextSampleMs) return
    const t0 = performance.now()
    this.sample(memory)
    const cost = performance.now() - t0
    this.intervalMs = Math.max(MIN_SAMPLE_INTERVAL_MS, cost * SAMPLE_COST_SHARE)
    this.nextSampleMs = nowMs + this.intervalMs
  }

  /** Milliseconds until the next sample is due (0: now), or -1 when this recorder does not
   * sample: the session's poll must wake for it, or a guest that stops faulting (its hits
   * all in the cache) would go unsampled until it exits, when its page tables are gone. */
  msUntilSample(nowMs: number): number {
    if (this.pagemapFd < 0) return -1
    return Math.max(0, Math.ceil(this.nextSampleMs - nowMs))
  }

  /** Every page of the guest's regions now mapped in its page tables, in address order. */
  sample(memory: GuestMemory): void {
    if (this.pagemapFd < 0) return
    const per = this.pageSize / SYSTEM_PAGE
    for (const r of memory.regions) {
      const systemPages = r.pages * per
      if (this.present.length < systemPages) {
        this.present = new Uint8Array(systemPages)
        this.entries = Buffer.alloc(systemPages * 8)
      }
      if (uffd.presentPages(this.pagemapFd, r.start, systemPages, this.entries, this.present) === 0) continue
      for (let i = 0; i < systemPages; i++) if (this.present[i] !== 0) this.note(r.firstPage + Math.floor(i / per))
    }
  }

  /** The pages used, in first-use order (a final sample first). */
  finish(memory: GuestMemory): Uint32Array {
    this.sample(memory)
    if (this.pagemapFd >= 0) closeSync(this.pagemapFd)
    this.pagemapFd = -1
    return this.order.slice(0, this.length)
  }
}
