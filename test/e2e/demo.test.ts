// `faultline demo` (npm start) driven small through the CLI, with the native page codec and with
// the npm one a machine without liblz4-dev/libisal-dev gets: both tables (cold, then hot) with
// the four rows, every touched page verified, and the hot cache-mapped row served without faults.
import t from 'tap'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ROOT } from './harness.js'
import { ensureDist } from './dist.js'

const MIB = 16
const TOUCHED = Math.round(0.25 * MIB * 256)

function rowsOf(section: string): Map<string, string[]> {
  const rows = new Map<string, string[]>()
  for (const line of section.split('\n')) {
    const m = /^(eager|mmap|faultline-cache \S+|faultline \S+)\s{2,}(.*)$/.exec(line)
    if (m) rows.set(m[1].split(' ')[0], m[2].trim().split(/\s{2,}/))
  }
  return rows
}

for (const codec of ['native', 'npm']) {
  t.test(`demo with the ${codec} codec: cold then hot, four rows each, memory verified`, async t => {
    ensureDist()
    const { stdout } = await promisify(execFile)(process.execPath, [join(ROOT, 'dist/cli/main.js'), 'demo', '--mib', String(MIB), '--repeat', '1'], {
      timeout: 180_000,
      env: { ...process.env, FAULTLINE_CODEC: codec },
    })
    t.match(stdout, new RegExp(`page codec ${codec}`), 'it says which codec decodes')
    const cold = stdout.indexOf('\nCold:'),
      hot = stdout.indexOf('\nHot:')
    t.ok(cold > 0 && hot > cold, 'the cold table comes first, then the hot one')
    const coldRows = rowsOf(stdout.slice(cold, hot)),
      hotRows = rowsOf(stdout.slice(hot))
    for (const [name, rows] of [
      ['cold', coldRows],
      ['hot', hotRows],
    ] as const) {
      t.same([...rows.keys()], ['eager', 'mmap', 'faultline', 'faultline-cache'], `${name}: eager, mmap and both faultline rows`)
    }
    // Columns: resume, first access, workload, total, vs mmap, faults, read from storage.
    t.equal(hotRows.get('faultline-cache')![5], '0', 'hot, cache-mapped: the decoded cache answered every touch (no fault reached the server)')
    t.not(coldRows.get('faultline')![6], '0 B', 'cold: faultline read the snapshot from storage')
    t.match(stdout, new RegExp(`memory verified: ${8 * TOUCHED} touched pages compared with the raw image across all runs, 0 mismatches`))
  })
}
