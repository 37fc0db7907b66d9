// Drops one file's pages from the host page cache, for cold-cache resume runs, without
// touching the rest of the machine (unlike /proc/sys/vm/drop_caches).
import { execFileSync } from 'node:child_process'
import { VmError } from './errors.js'

/** GNU dd documents `iflag=nocache count=0` as "drop the whole file from the cache"
 * (posix_fadvise DONTNEED), which Node cannot call itself. Dirty pages are written first. */
export function dropFileCache(path: string): void {
  try {
    execFileSync('sync', ['--data', path], { stdio: 'ignore' })
    execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none'], { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (err) {
    const stderr = String((err as { stderr?: Buffer }).stderr ?? '')
      .trim()
      .split('\n')[0]
    throw new VmError(`${path}: cannot drop from the page cache: ${stderr || (err as Error).message}`)
  }
}
