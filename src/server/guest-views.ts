// The address spaces one session serves: the guest's, and (cache-mapped) those of children it
// forked, which share the decoded cache and whose uffds join the session's poll set. A child's
// uffd says nothing when the child exits: it is probed now and then, and dropped once gone.
import * as uffd from '../uffd/index.js'
import type { GuestMemory } from './guest-memory.js'
import type { GuestInstaller } from './installer.js'

/** One address space served: its uffd, its layout and page states, its installer. */
export interface GuestView {
  fd: uffd.Userfaultfd
  memory: GuestMemory
  installer: GuestInstaller
  messages: uffd.UffdMessages
}

/** How often (ms) children's uffds are probed for an exited child. */
export const CHILD_PROBE_MS = 1000

export class ForkedChildren {
  readonly list: GuestView[] = []
  private lastProbeMs = 0

  /** Children take poll slots [firstSlot, firstSlot + capacity) of `poll`. */
  constructor(
    private readonly poll: uffd.PollSet,
    private readonly firstSlot: number,
    readonly capacity: number,
    private readonly pageSize: number,
  ) {
    for (let c = 0; c < capacity; c++) poll.set(firstSlot + c, -1, uffd.POLLIN)
  }

  get full(): boolean {
    return this.list.length >= this.capacity
  }

  /** Adds a child; returns how many are served now. */
  add(child: GuestView): number {
    this.poll.set(this.firstSlot + this.list.length, child.fd.fd, uffd.POLLIN)
    this.list.push(child)
    return this.list.length
  }

  /** The child whose poll slot has events, by index. */
  readyIndex(c: number): boolean {
    return this.poll.revents(this.firstSlot + c) !== 0
  }

  drop(child: GuestView): void {
    const at = this.list.indexOf(child)
    if (at < 0) return
    child.fd.close()
    this.list.splice(at, 1)
    for (let c = 0; c < this.capacity; c++) {
      const v = this.list[c]
      this.poll.set(this.firstSlot + c, v === undefined ? -1 : v.fd.fd, uffd.POLLIN)
    }
  }

  /** Drops children whose process is gone (at most every CHILD_PROBE_MS). */
  probe(nowMs: number): void {
    if (this.list.length === 0 || nowMs - this.lastProbeMs < CHILD_PROBE_MS) return
    this.lastProbeMs = nowMs
    for (let c = this.list.length - 1; c >= 0; c--) {
      const child = this.list[c]
      const r = child.memory.regions[0]
      if (r === undefined || !child.fd.isAttached(r.start, this.pageSize)) this.drop(child)
    }
  }

  anyDeferred(): boolean {
    for (const c of this.list) if (c.installer.deferred.length > 0) return true
    return false
  }

  closeAll(): void {
    for (const c of this.list) c.fd.close()
    this.list.length = 0
  }
}
