// Picks and creates the file behind a decoded cache. Huge folios make a guest's hit ~4x
// cheaper than the kernel's own file paging and 30x cheaper than 4 KiB shmem pages (FACTS.md),
// so they are taken wherever the host allows: a memfd when shmem_enabled lets writes allocate
// them, else a private tmpfs mounted huge=within_size (root), else a memfd of 4 KiB pages.
import { fstatSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as uffd from '../uffd/index.js'

export type CacheBacking = 'memfd-huge' | 'tmpfs-huge' | 'memfd'

export interface BackingFile {
  fd: number
  backing: CacheBacking
  /** The fill unit: what one write allocates (a huge folio), or a page. */
  folioBytes: number
  sizeBytes: number
  /** One line: what the cache got and why. */
  why: string
}

export interface BackingOptions {
  /** 'small' forces 4 KiB pages (tests, and the comparison the benchmarks make). */
  folios?: 'huge' | 'small'
  /** Where the private tmpfs's mount point is made for an instant (default os.tmpdir()). */
  mountParent?: string
  pageSize: number
}

const SYSFS = '/sys/kernel/mm/transparent_hugepage'

function readSysfs(name: string): string | undefined {
  try {
    return readFileSync(`${SYSFS}/${name}`, 'utf8').trim()
  } catch {
    return undefined
  }
}

/** The bracketed choice of a sysfs list ("always [never] ..."). */
function selected(text: string | undefined): string | undefined {
  return text === undefined ? undefined : /\[(\S+)\]/.exec(text)?.[1]
}

function roundUp(n: number, unit: number): number {
  return Math.ceil(n / unit) * unit
}

/** Bytes one 4 KiB write at offset 0 allocates in a fresh file: its folio size. The probe's
 * folio is punched again. */
function probeFolioBytes(fd: number, pageSize: number): number {
  const page = Buffer.alloc(pageSize)
  uffd.pwriteAll(fd, page, pageSize, 0)
  const bytes = fstatSync(fd).blocks * 512
  uffd.punchHole(fd, 0, Math.max(bytes, pageSize))
  return Math.max(pageSize, bytes)
}

/** Creates the backing file for `imageBytes` of decoded pages. */
export function createBackingFile(imageBytes: number, opts: BackingOptions): BackingFile {
  const pmdBytes = Number(readSysfs('hpage_pmd_size') ?? 2 * 2 ** 20)
  const shmem = selected(readSysfs('shmem_enabled'))
  if (opts.folios === 'small') {
    return memfd(imageBytes, opts.pageSize, 'memfd', '4 KiB pages (asked for small folios)')
  }
  if (shmem === 'always' || shmem === 'within_size' || shmem === 'force') {
    const f = memfd(roundUp(imageBytes, pmdBytes), opts.pageSize, 'memfd-huge', '')
    if (f.folioBytes > opts.pageSize) {
      f.why = `huge folios (${f.folioBytes / 2 ** 20} MiB) in a memfd: shmem_enabled is ${shmem}`
      return f
    }
    uffd.closeFile(f.fd)
  }
  const size = roundUp(imageBytes, pmdBytes)
  let mountError: string
  try {
    // Room for the data and nothing else, on a mount no path reaches (the mount API; before
    // Linux 5.2, mounted on a fresh directory and detached at once).
    const options = { huge: 'within_size', size: String(size + pmdBytes), nr_inodes: '16', mode: '0700' }
    let fd: number
    try {
      fd = uffd.createUnattachedTmpfsFile(options)
    } catch (err) {
      if (!(err instanceof uffd.UffdError && err.op === 'fsopen' && err.errno === uffd.ENOSYS)) throw err
      fd = uffd.createDetachedTmpfsFile(
        opts.mountParent ?? tmpdir(),
        Object.entries(options)
          .map(([k, v]) => `${k}=${v}`)
          .join(','),
      )
    }
    try {
      uffd.truncateFile(fd, size)
      const folioBytes = probeFolioBytes(fd, opts.pageSize)
      if (folioBytes > opts.pageSize) {
        return {
          fd,
          backing: 'tmpfs-huge',
          folioBytes,
          sizeBytes: size,
          why: `huge folios (${folioBytes / 2 ** 20} MiB) on a private tmpfs mounted huge=within_size (shmem_enabled is ${shmem ?? 'absent'})`,
        }
      }
      mountError = 'a tmpfs mounted huge=within_size gave 4 KiB folios'
    } catch (err) {
      uffd.closeFile(fd)
      throw err
    }
    uffd.closeFile(fd)
  } catch (err) {
    mountError =
      err instanceof uffd.UffdError && (err.op === 'mount' || err.op === 'fsopen')
        ? `mounting a tmpfs with huge folios was refused (${err.errnoName}: needs CAP_SYS_ADMIN)`
        : (err as Error).message
  }
  return memfd(
    imageBytes,
    opts.pageSize,
    'memfd',
    `4 KiB pages in a memfd: shmem_enabled is ${shmem ?? 'absent'} and ${mountError}; ` +
      'hits cost ~0.5 µs a page instead of ~15 ns (run as root, or set shmem_enabled to within_size)',
  )
}

function memfd(imageBytes: number, pageSize: number, backing: CacheBacking, why: string): BackingFile {
  const fd = uffd.createMemfd('faultline-cache')
  try {
    const size = roundUp(imageBytes, pageSize)
    uffd.truncateFile(fd, size)
    const folioBytes = backing === 'memfd' ? pageSize : probeFolioBytes(fd, pageSize)
    return { fd, backing, folioBytes, sizeBytes: size, why }
  } catch (err) {
    uffd.closeFile(fd)
    throw err
  }
}
