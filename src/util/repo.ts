// Where faultline's own files are: the checkout (or installed package) root, the same from
// src/ (tests run the sources) and dist/ (the compiled CLI), both two levels below it.
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

/** A path inside the repository, from parts relative to its root. */
export function repoPath(...parts: string[]): string {
  return join(REPO_ROOT, ...parts)
}

/** A file `make -C native` builds (native/build/NAME). */
export function nativeBuildPath(name: string): string {
  return join(REPO_ROOT, 'native/build', name)
}
