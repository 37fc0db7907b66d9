// Finds the guest image built by scripts/vm/build-image.sh: kernel, initramfs and the
// kernel command line the workload expects.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { VmError } from './errors.js'

export interface GuestImage {
  kernel: string
  initrd: string
  /** Base kernel command line; `fl.mib=N` is appended per launch. */
  cmdline: string
}

export function loadGuestImage(dir: string): GuestImage {
  const manifest = join(dir, 'image.json')
  if (!existsSync(manifest)) {
    throw new VmError(`${manifest}: no guest image there: run scripts/vm/build-image.sh ${dir}`)
  }
  let parsed: Partial<GuestImage>
  try {
    parsed = JSON.parse(readFileSync(manifest, 'utf8')) as Partial<GuestImage>
  } catch (err) {
    throw new VmError(`${manifest}: not valid JSON (${(err as Error).message}): rebuild with scripts/vm/build-image.sh`)
  }
  const image: GuestImage = {
    kernel: parsed.kernel ?? join(dir, 'vmlinuz'),
    initrd: parsed.initrd ?? join(dir, 'initrd.cpio'),
    cmdline: parsed.cmdline ?? 'console=ttyS0 quiet loglevel=0 panic=-1',
  }
  for (const f of [image.kernel, image.initrd]) {
    if (!existsSync(f)) throw new VmError(`${f}: missing from the guest image: rerun scripts/vm/build-image.sh ${dir}`)
  }
  return image
}
