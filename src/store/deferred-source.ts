// A PageSource whose pages are not all local yet (a snapshot in an object store): the fault
// loop asks what it can read now, asks for the rest, and learns through an eventfd it polls
// that more has arrived. A local file never implements this, so its path stays unchanged.
import type { PageSource } from '../snapshot/page-source.js'

export interface DeferredPageSource extends PageSource {
  /** Readable (eventfd) when a requested chunk has arrived or failed. */
  readonly readyFd: number
  /** Pages per fetch unit: a run never waits on more than one unit at a time. */
  readonly chunkPages: number
  /** Resets readyFd after a wake-up. */
  drainReady(): void
  /** How many pages from `first` (at most `count`) can be read now without waiting. */
  availablePages(first: number, count: number): number
  /** Asks for the pages' data; `priority` is the InstallCause it is for (0 fault first). */
  request(first: number, count: number, priority: number): void
  /** When the data of pages [first, first+count) was requested and could not be had: why,
   * one line naming the object. Undefined otherwise. */
  failure(first: number, count: number): string | undefined
  /** readPages, unless the data went away meanwhile (evicted, or its cached copy failed a
   * checksum: then it is requested again and false returned). */
  tryReadPages(first: number, count: number, into: Buffer, intoOffset: number): boolean
}

export function isDeferredSource(source: PageSource): source is DeferredPageSource {
  return typeof (source as Partial<DeferredPageSource>).tryReadPages === 'function'
}
