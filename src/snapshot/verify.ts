// Whole-snapshot checks and export: verify decodes every page and checks every checksum;
// extract writes the raw image back, byte-identical to the one the snapshot was made from.

import { writeSync } from 'node:fs'
import { fileError } from '../errors.js'
import { ReplacementFile } from '../util/output-file.js'
import { SnapshotCorruptError, type SnapshotHeader } from './format.js'
import { SnapshotReader } from './reader.js'

/** Pages decoded per step: 4 MiB at 4 KiB pages. */
const STEP_BYTES = 4 << 20
/** Corrupt page numbers kept in a report (the count is always exact). */
export const MAX_LISTED_CORRUPT = 100

export interface VerifyReport {
  header: SnapshotHeader
  pagesChecked: number
  zeroPages: number
  lz4Pages: number
  rawPages: number
  corruptPages: number
  /** The first MAX_LISTED_CORRUPT corrupt pages, ascending, with what is wrong. */
  corrupt: Array<{ page: number; detail: string }>
  ok: boolean
}

export interface ProgressOptions {
  /** Called after each step with image bytes handled so far. */
  onProgress?: (doneBytes: number, totalBytes: number) => void
}

/**
 * Decode every page of `snapPath` and check its CRC. Structural problems (header, index)
 * throw SnapshotFormatError at open; bad pages are counted and listed, not thrown.
 */
export function verifySnapshot(snapPath: string, opts: ProgressOptions = {}): VerifyReport {
  const reader = SnapshotReader.open(snapPath)
  try {
    const { pageSize: ps, pageCount } = reader
    const step = Math.max(1, Math.floor(STEP_BYTES / ps))
    const buf = Buffer.allocUnsafeSlow(step * ps)
    const report: VerifyReport = {
      header: reader.header,
      pagesChecked: 0,
      zeroPages: 0,
      lz4Pages: 0,
      rawPages: 0,
      corruptPages: 0,
      corrupt: [],
      ok: true,
    }
    const counts = [0, 0, 0]
    for (let first = 0; first < pageCount; first += step) {
      const count = Math.min(step, pageCount - first)
      try {
        reader.readPages(first, count, buf, 0)
      } catch (err) {
        if (!(err instanceof SnapshotCorruptError)) throw err
        // Find every bad page in this step, one page at a time.
        for (let p = first; p < first + count; p++) {
          try {
            reader.readPages(p, 1, buf, 0)
          } catch (e) {
            if (!(e instanceof SnapshotCorruptError)) throw e
            report.corruptPages++
            if (report.corrupt.length < MAX_LISTED_CORRUPT) report.corrupt.push({ page: p, detail: e.detail })
          }
        }
      }
      for (let p = first; p < first + count; p++) counts[reader.kindOf(p)]++
      report.pagesChecked += count
      opts.onProgress?.(Math.min(reader.imageSizeBytes, (first + count) * ps), reader.imageSizeBytes)
    }
    report.zeroPages = counts[0]
    report.lz4Pages = counts[1]
    report.rawPages = counts[2]
    report.ok = report.corruptPages === 0
    return report
  } finally {
    reader.close()
  }
}

export interface ExtractReport {
  header: SnapshotHeader
  bytesWritten: number
}

/**
 * Write the raw image of `snapPath` to `outPath` (trimmed to the image size), through a
 * temporary file beside it and a rename (see ReplacementFile): `outPath` must not be the
 * snapshot (by device and inode) nor an existing non-regular file. Throws SnapshotCorruptError
 * at the first bad page.
 */
export function extractSnapshot(snapPath: string, outPath: string, opts: ProgressOptions = {}): ExtractReport {
  const reader = SnapshotReader.open(snapPath)
  let out: ReplacementFile | undefined
  try {
    out = ReplacementFile.create(outPath, { inputs: [{ dev: reader.dev, ino: reader.ino, name: `the snapshot ${snapPath}` }] })
    const { pageSize: ps, pageCount, imageSizeBytes } = reader
    const step = Math.max(1, Math.floor(STEP_BYTES / ps))
    const buf = Buffer.allocUnsafeSlow(step * ps)
    let written = 0
    for (let first = 0; first < pageCount; first += step) {
      const count = Math.min(step, pageCount - first)
      reader.readPages(first, count, buf, 0)
      const len = Math.min(count * ps, imageSizeBytes - written)
      let done = 0
      while (done < len) {
        try {
          done += writeSync(out.fd, buf, done, len - done, written + done)
        } catch (err) {
          throw fileError(out.tempPath, err, 'write')
        }
      }
      written += len
      opts.onProgress?.(written, imageSizeBytes)
    }
    out.commit()
    out = undefined
    return { header: reader.header, bytesWritten: written }
  } finally {
    out?.abort()
    reader.close()
  }
}
