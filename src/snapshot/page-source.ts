// PageSource: what the fault path reads pages from. A snapshot file (SnapshotReader) is one;
// remote stores and caches implement the same interface.

import type { PageKind } from './format.js'

export type { PageKind }

export interface PageSource {
  /** Bytes per page, a power of two from 4096 to 65536. */
  readonly pageSize: number
  readonly pageCount: number
  /** Length of the original image; the last page is zero-padded past it. */
  readonly imageSizeBytes: number
  /** 0 zero page, 1 LZ4, 2 raw. */
  kindOf(page: number): PageKind
  /**
   * Decode pages `first .. first+count-1` into `into[intoOffset ..
   * intoOffset + count*pageSize)`; zero pages become zeros. Synchronous (called from a
   * fault loop); throws SnapshotCorruptError naming the first page that fails its checksum.
   */
  readPages(first: number, count: number, into: Buffer, intoOffset: number): void
  close(): void
  /** Stored (compressed) bytes read from storage so far, when the source counts them. */
  readonly bytesRead?: number
}
