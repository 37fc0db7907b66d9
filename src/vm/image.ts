// Finds the guest image built by scripts/vm/build-image.sh (kernel, initramfs and the kernel
// command line the workload expects), and builds it when it is missing or older than its source.
import { spawn } from 'node:child_process'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { VmError } from './errors.js'
import { repoPath } from '../util/repo.js'

export const BUILD_IMAGE_SCRIPT = repoPath('scripts/vm/build-image.sh')
export const WORKLOAD_SOURCE = repoPath('native/vm-guest/workload.c')
/** Where the image goes unless told otherwise. */
export const DEFAULT_IMAGE_DIR = repoPath('.cache/vm')

export interface GuestImage {
  kernel: string
  initrd: string
  /** Base kernel command line; `fl.mib=N` is appended per launch. */
  cmdline: string
}

export function loadGuestImage(dir: string): GuestImage {
  const manifest = join(dir, 'image.json')
  if (!existsSync(manifest)) {
    throw new VmError(`${manifest}: no guest image there: run faultline vm image ${dir}`)
  }
  let parsed: Partial<GuestImage>
  try {
    parsed = JSON.parse(readFileSync(manifest, 'utf8')) as Partial<GuestImage>
  } catch (err) {
    throw new VmError(`${manifest}: not valid JSON (${(err as Error).message}): rebuild with faultline vm image ${dir}`)
  }
  const image: GuestImage = {
    kernel: parsed.kernel ?? join(dir, 'vmlinuz'),
    initrd: parsed.initrd ?? join(dir, 'initrd.cpio'),
    cmdline: parsed.cmdline ?? 'console=ttyS0 quiet loglevel=0 panic=-1',
  }
  for (const f of [image.kernel, image.initrd]) {
    if (!existsSync(f)) throw new VmError(`${f}: missing from the guest image: rebuild with faultline vm image ${dir}`)
  }
  return image
}

/** Runs scripts/vm/build-image.sh into `dir` (a few seconds: it copies the host's Debian
 * kernel and packs busybox and the workload), passing its lines to `log`. */
export async function buildGuestImage(dir: string, log: (line: string) => void = () => {}): Promise<GuestImage> {
  if (!existsSync(BUILD_IMAGE_SCRIPT))
    throw new VmError(`${BUILD_IMAGE_SCRIPT}: missing (the guest image builder ships with the repository, not the npm package)`)
  const child = spawn('sh', [BUILD_IMAGE_SCRIPT, dir], { stdio: ['ignore', 'pipe', 'pipe'] })
  let last = ''
  const onLines = (chunk: Buffer): void => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line.trim()) continue
      last = line
      log(line)
    }
  }
  child.stdout.on('data', onLines)
  child.stderr.on('data', onLines)
  const code = await new Promise<number | null>((res, rej) => {
    child.on('error', rej)
    child.on('close', res)
  })
  if (code !== 0) throw new VmError(`${BUILD_IMAGE_SCRIPT} ${dir}: exited with status ${code}: ${last}`)
  return loadGuestImage(dir)
}

/** The image in `dir`, built first if it is missing or its workload source is newer than
 * its initramfs (the console protocol may have changed). */
export async function ensureGuestImage(dir: string, log: (line: string) => void = () => {}): Promise<GuestImage> {
  const initrd = join(dir, 'initrd.cpio')
  const stale =
    !existsSync(join(dir, 'image.json')) || !existsSync(initrd) || (existsSync(WORKLOAD_SOURCE) && statSync(WORKLOAD_SOURCE).mtimeMs > statSync(initrd).mtimeMs)
  return stale ? buildGuestImage(dir, log) : loadGuestImage(dir)
}
