// The real-program recording end to end: build-image.sh --programs packs Debian's programs with
// their libraries; scripts/vm/record-traces.mjs boots that guest under QEMU (TCG), snapshots it
// idle over QMP, resumes it under faultline with --trace, runs python3 in it and stores the
// trace, its page map and its manifest entry; the trace then simulates under ondemand to the
// session the recorder printed. Where QEMU or a program is not installed (scripts/test-deps.sh:
// qemu, programs), it fails with one line naming the packages and the command that installs them.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createPolicy } from '../../src/policy/registry.js'
import { DEFAULT_COST_MODEL, loadCostModel } from '../../src/bench/cost-model.js'
import { readPageMap } from '../../src/trace/page-map.js'
import { readTrace } from '../../src/trace/reader.js'
import { accessOrder, simSpace, simulatePolicy } from '../../src/bench/simulate.js'
import { missingTestDeps } from './deps.js'
import { ROOT, scratchDir } from './harness.js'

const missing = missingTestDeps('qemu') ?? missingTestDeps('programs')
if (missing) {
  t.fail(missing)
} else {
  const dir = scratchDir(t, 'fl-record-')
  const image = join(dir, 'image')
  const build = spawnSync('sh', [join(ROOT, 'scripts/vm/build-image.sh'), '--programs', image], { encoding: 'utf8' })
  t.test('the programs image holds the programs, their libraries and the guest scripts', async t => {
    t.equal(build.status, 0, build.stderr)
    const list = spawnSync('sh', ['-c', `cpio -it --quiet < ${join(image, 'initrd.cpio')}`], { encoding: 'utf8', maxBuffer: 64 << 20 }).stdout.split('\n')
    for (const f of [
      'init',
      'usr/bin/python3.11',
      'usr/bin/sqlite3',
      'usr/bin/xz',
      'usr/bin/gcc-12',
      'usr/lib/gcc/x86_64-linux-gnu/12/cc1',
      'usr/lib/x86_64-linux-gnu/libsqlite3.so.0',
      'usr/lib64/ld-linux-x86-64.so.2',
      'usr/lib/python3.11/json/__init__.py',
      'usr/include/stdio.h',
      'progs/service.py',
      'progs/python-1.sh',
      'progs/gcc-2.sh',
      'progs/src/sieve.c',
    ]) {
      t.ok(list.includes(f), f)
    }
    t.match(JSON.parse(readFileSync(join(image, 'image.json'), 'utf8')), { programs: true })
  })

  t.test('record one program run and simulate it', async t => {
    const out = join(dir, 'out')
    const r = spawnSync(
      process.execPath,
      [join(ROOT, 'scripts/vm/record-traces.mjs'), '--only', 'python-1', '--ram', '384', '--image', image, '--out', out, '--work', join(dir, 'work')],
      { encoding: 'utf8', timeout: 540_000 },
    )
    t.equal(r.status, 0, r.stderr.trim().split('\n').slice(-3).join(' | '))
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'))
    t.equal(manifest.traces.length, 1)
    const entry = manifest.traces[0]
    t.match(entry, { trace: 'python-1.fltrace.gz', pageMap: 'ready.pagemap.gz', program: 'python', run: 1, ramMiB: 384 })
    t.ok(existsSync(join(out, 'ready.pagemap.gz')))
    const tr = readTrace(join(out, entry.trace))
    t.match(tr.header, { policy: 'ondemand', complete: true })
    t.equal(tr.header.regions[0].pageCount * 4096, 384 << 20, "the trace covers the guest's RAM")
    const faults = Number(/(\d+) faults/.exec(entry.session)![1])
    t.ok(faults > 1000, `python3's start faulted on ${faults} pages`)
    const sim = simulatePolicy(await createPolicy('ondemand'), accessOrder(tr), simSpace(tr, readPageMap(join(out, entry.pageMap))), {
      model: loadCostModel(DEFAULT_COST_MODEL),
      tier: 'warm',
    })
    t.equal(sim.faults, faults, "ondemand simulated = the recorded session's faults")
  })
}
