#!/usr/bin/env node
// Fails when a module under src/ imports from a room above its own. The rooms, lowest first;
// each may import only from its own and the ones before it, following the data from the
// kernel up to the command line (policy after trace: a policy may replay a recorded trace):
//   util (and src/errors.ts) <- uffd <- snapshot <- trace <- policy <- store <- cache
//   <- server <- vm <- bench <- cli
// Type-only imports count too: a lower room that names a higher one's types knows about it.
// A new folder under src/ fails the check until it is given its place in ROOMS.
// Usage: node scripts/check-imports.mjs [SRC_DIR]   (npm run lint runs it)
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOMS = ['util', 'uffd', 'snapshot', 'trace', 'policy', 'store', 'cache', 'server', 'vm', 'bench', 'cli']

/** The room of a path relative to src/ ('errors.ts' at the top is util's level). */
function roomOf(rel) {
  const first = rel.split(sep)[0]
  return first.endsWith('.ts') || first.endsWith('.js') ? 'util' : first
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g

/** Every import against the order in the .ts files under `srcDir`, as one-line messages. */
export function importViolations(srcDir) {
  const out = []
  for (const e of readdirSync(srcDir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile() || !e.name.endsWith('.ts')) continue
    const file = join(e.parentPath, e.name)
    const rel = relative(srcDir, file)
    const from = roomOf(rel)
    if (!ROOMS.includes(from)) {
      out.push(`${rel}: src/${from}/ is not a room of scripts/check-imports.mjs`)
      continue
    }
    const text = readFileSync(file, 'utf8')
    for (const m of text.matchAll(IMPORT)) {
      const spec = m[1] ?? m[2]
      if (!spec.startsWith('.')) continue
      const target = relative(srcDir, resolve(dirname(file), spec))
      if (target.startsWith('..')) {
        out.push(`${rel}: imports ${spec}, outside src/`)
        continue
      }
      const to = roomOf(target)
      if (!ROOMS.includes(to)) {
        out.push(`${rel}: imports ${spec}: src/${to}/ is not a room`)
        continue
      }
      if (ROOMS.indexOf(to) > ROOMS.indexOf(from)) {
        const line = text.slice(0, m.index + m[0].indexOf(spec)).split('\n').length
        out.push(`${rel}:${line}: ${from}/ imports ${spec} from ${to}/, a room above it (order: ${ROOMS.join(' <- ')})`)
      }
    }
  }
  return out
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const srcDir = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '../src'))
  const bad = importViolations(srcDir)
  for (const line of bad) console.error(`check-imports: ${line}`)
  if (bad.length) process.exitCode = 1
}
