// Guest memory semantics through real userfaultfd: after a guest discards, unmaps, moves or
// forks its memory, every page must read as it would without a page server (zeros where
// discarded, the snapshot's page at its original offset where moved, a full copy in a forked
// child), and many threads faulting the same or different pages, reading or writing, all get
// the right data. The guest checks every page of its region after each action.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { makeImage, runGuest, scratchDir, waitForEndedSessions } from './harness.js'
import { startFastServer, startServerProcess } from './reliability-helpers.js'

const MIB = 8
const PAGES = MIB * 256

/** Region pages in [first, first+count) whose snapshot page is not all zeros: a check that
 * expects zeros there can only pass if the server really served zeros. */
function nonZeroPages(raw: string, first: number, count: number): number {
  const bytes = readFileSync(raw)
  let n = 0
  for (let p = first; p < first + count; p++) {
    const page = bytes.subarray(p * 4096, (p + 1) * 4096)
    if (page.some(b => b !== 0)) n++
  }
  return n
}

t.test('discard, unmap, mremap and fork are served as the kernel would serve them', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB, 1)
  // Guests of a subtest run at once: keep workers ready for them.
  const ondemand = await startFastServer(t, { snapshotPath: img.snap, socketPath: join(dir, 'od.sock'), warmWorkers: 3 })
  const readahead = await startFastServer(t, { snapshotPath: img.snap, socketPath: join(dir, 'ra.sock'), policy: 'readahead:15', warmWorkers: 2 })
  const guest = (socket: string, args: string[]) => runGuest(['--socket', socket, '--mib', String(MIB), '--verify', img.raw, ...args], { timeoutMs: 120000 })
  /** The stats of the session that served the guest with this session number. */
  const sessionOf = async (server: typeof ondemand, id: number) => {
    for (let i = 0; i < 100 && !server.ended.some(s => s.id === id); i++) await new Promise(r => setTimeout(r, 50))
    return server.ended.find(s => s.id === id)
  }

  t.test('MADV_DONTNEED: discarded pages read as zeros afterwards, served or not', async t => {
    // Half the discarded range was touched (served) before, half never was.
    const first = PAGES / 4,
      count = PAGES / 2
    t.ok(nonZeroPages(img.raw, first, count) > count / 4, 'many discarded pages are not zero in the snapshot')
    const servers = [
      ['ondemand', join(dir, 'od.sock'), ondemand],
      ['readahead:15', join(dir, 'ra.sock'), readahead],
    ] as const
    // Firecracker's own uffd asks for EVENT_REMOVE (its balloon): so does the guest's.
    const [fc, ...runs] = await Promise.all([
      guest(join(dir, 'od.sock'), ['--handshake', 'firecracker', '--workload', 'random:0.5', '--discard', `0:${count}`]),
      ...servers.map(([, socket]) => guest(socket, ['--workload', 'sequential:0.5', '--discard', `${first}:${count}`])),
    ])
    for (const [i, [name, , server]] of servers.entries()) {
      const r = runs[i]
      t.equal(r.code, 0, `${name}: ${r.stderr}`)
      t.equal(r.report?.mismatches, 0, `${name}: the workload read the snapshot`)
      t.equal(r.report?.after_pages, PAGES, `${name}: every page checked after the discard`)
      t.equal(r.report?.after_mismatches, 0, `${name}: discarded pages are zeros, the rest the snapshot`)
      const s = await sessionOf(server, r.report?.session)
      t.equal(s?.stats?.removedPages, count, `${name}: the server saw the whole range removed`)
    }
    t.equal(fc.code, 0, fc.stderr)
    t.equal(fc.report?.after_mismatches, 0, 'Firecracker form: discarded pages are zeros')
  })

  t.test('munmap: the rest of the region is still served right, the hole is plain memory', async t => {
    // The fresh mapping in the hole is registered with the guest's uffd, so its faults reach
    // the server: only its UFFD_EVENT_UNMAP handling keeps it from serving the snapshot there.
    const first = PAGES / 8,
      count = PAGES / 4
    t.ok(nonZeroPages(img.raw, first, count) > count / 4, 'many pages of the hole are not zero in the snapshot')
    const servers = [
      ['ondemand', join(dir, 'od.sock')],
      ['readahead:15', join(dir, 'ra.sock')],
    ] as const
    const runs = await Promise.all(
      servers.map(([, socket]) => guest(socket, ['--workload', 'random:0.3', '--seed', '5', '--unmap', `${first}:${count}`, '--hole-registered'])),
    )
    for (const [i, [name]] of servers.entries()) {
      t.equal(runs[i].code, 0, `${name}: ${runs[i].stderr}`)
      t.equal(runs[i].report?.after_pages, PAGES, `${name}: every page checked after the unmap`)
      t.equal(runs[i].report?.after_mismatches, 0, `${name}: every page outside the hole is the snapshot's, the hole reads zeros`)
    }
  })

  t.test('a page dropped without an event (a uffd without EVENT_REMOVE) reads zeros', async t => {
    // Served pages, discarded by a guest whose uffd has no EVENT_REMOVE: the server still thinks
    // them installed, and answers their next fault with UFFDIO_ZEROPAGE.
    const count = PAGES / 4
    t.ok(nonZeroPages(img.raw, 0, count) > count / 4, 'many discarded pages are not zero in the snapshot')
    const r = await guest(join(dir, 'od.sock'), ['--handshake', 'firecracker', '--no-remove-event', '--workload', `sequential:0.5`, '--discard', `0:${count}`])
    t.equal(r.code, 0, r.stderr)
    t.equal(r.report?.mismatches, 0)
    t.equal(r.report?.after_mismatches, 0, 'the discarded pages read zeros, the rest the snapshot')
    const s = await sessionOf(ondemand, r.report?.session)
    t.equal(s?.stats?.removedPages, 0, 'the server was not told of the discard')
  })

  t.test("a range grown by mremap reads zeros past the snapshot's region", async t => {
    const runs = await Promise.all(
      [
        ['od.sock', ondemand],
        ['ra.sock', readahead],
      ].map(([socket]) => guest(join(dir, socket as string), ['--workload', 'random:0.3', '--seed', '3', '--grow', '256'])),
    )
    for (const r of runs) {
      t.equal(r.code, 0, r.stderr)
      t.equal(r.report?.after_pages, PAGES + 256, 'the region and its grown tail were checked')
      t.equal(r.report?.after_mismatches, 0, 'the snapshot in the region, zeros in the tail')
    }
  })

  t.test('mremap: moved pages are served at their new address with their original contents', async t => {
    // The whole region, after a quarter was served; a slice out of its middle; and pages
    // discarded, then moved: the zeros move with them.
    const [whole, both, ...parts] = await Promise.all([
      guest(join(dir, 'od.sock'), ['--workload', 'sequential:0.25', '--mremap', `0:${PAGES}`]),
      guest(join(dir, 'od.sock'), ['--workload', 'sequential', '--discard', '0:512', '--mremap', '256:1024']),
      guest(join(dir, 'od.sock'), ['--workload', 'random:0.3', '--seed', '9', '--mremap', `${PAGES / 4}:${PAGES / 8}`]),
      guest(join(dir, 'ra.sock'), ['--workload', 'random:0.3', '--seed', '9', '--mremap', `${PAGES / 4}:${PAGES / 8}`]),
    ])
    t.equal(whole.code, 0, whole.stderr)
    t.equal(whole.report?.after_mismatches, 0, 'all pages right at the new address')
    const s = await sessionOf(ondemand, whole.report?.session)
    t.equal(s?.stats?.faults, PAGES, 'ondemand: the 3/4 never touched before the move were served by fault at the new address')
    for (const [i, name] of ['ondemand', 'readahead:15'].entries()) {
      t.equal(parts[i].code, 0, `${name}: ${parts[i].stderr}`)
      t.equal(parts[i].report?.after_mismatches, 0, `${name}: moved slice and the pages around the hole it left are all right`)
    }
    t.equal(both.code, 0, both.stderr)
    t.equal(both.report?.after_mismatches, 0)
  })

  t.test('fork: the child reads the full snapshot, the parent goes on being served', async t => {
    // Plain; and everything at once: a discarded range and a moved slice are what the child
    // inherits, from a parent with four threads.
    const [r, mixed] = await Promise.all([
      guest(join(dir, 'od.sock'), ['--workload', 'random:0.3', '--seed', '7', '--fork']),
      guest(join(dir, 'ra.sock'), ['--workload', 'random:0.3', '--threads', '4', '--discard', '100:300', '--mremap', '1000:500', '--fork']),
    ])
    t.equal(r.code, 0, r.stderr)
    t.equal(r.report?.child_exit, 0, 'the child exited normally')
    t.equal(r.report?.child_signal, 0)
    t.equal(r.report?.child_mismatches, 0, 'the child checked every page')
    t.equal(r.report?.after_mismatches, 0, 'then the parent checked every page')
    const s = await sessionOf(ondemand, r.report?.session)
    t.equal(s?.stats?.forks, 1)
    t.equal(mixed.code, 0, mixed.stderr)
    t.equal(mixed.report?.child_mismatches, 0)
    t.equal(mixed.report?.after_mismatches, 0)
  })
})

t.test('many threads faulting the same and different pages, reading and writing', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB, 4)
  const socket = join(dir, 's.sock')
  const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, warmWorkers: 4 })
  const cases: Array<[string, string[]]> = [
    ['8 threads, same pages, reads', ['--threads', '8', '--same-pages']],
    ['8 threads, same pages, writes', ['--threads', '8', '--same-pages', '--write']],
    ['8 threads, different pages, writes', ['--threads', '8', '--write']],
    ['4 threads, same pages, writes, Firecracker form', ['--threads', '4', '--same-pages', '--write', '--handshake', 'firecracker']],
  ]
  const runs = await Promise.all(
    cases.map(([, args], i) =>
      runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.6', '--seed', String(i + 1), '--verify', img.raw, ...args], {
        timeoutMs: 120000,
      }),
    ),
  )
  const touched = Math.round(0.6 * PAGES)
  for (const [i, r] of runs.entries()) {
    t.equal(r.code, 0, `${cases[i][0]}: ${r.stderr}`)
    t.equal(r.report?.verified_pages, touched, cases[i][0])
    t.equal(r.report?.mismatches, 0, cases[i][0])
  }
  t.ok(await waitForEndedSessions(server, cases.length, 10000), 'every session ended')
  for (const s of server.ended) {
    t.equal(s.error, undefined)
    // ondemand installs each distinct page once, however many threads asked for it.
    t.equal(s.stats?.pagesInstalled[0], touched, `session ${s.id}: each page installed once`)
  }
})

t.test('without CAP_SYS_PTRACE: the rest of the events are enabled, the log says what a forking guest gets', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB, 2)
  const socket = join(dir, 's.sock')
  // The server without CAP_SYS_PTRACE (out of its bounding and inheritable sets, so root's
  // exec does not give it back): the kernel refuses UFFD_FEATURE_EVENT_FORK to it.
  const server = await startServerProcess(
    t,
    ['--snapshot', img.snap, '--socket', socket],
    ['setpriv', '--inh-caps=-sys_ptrace', '--bounding-set=-sys_ptrace', '--'],
  )
  const plain = await runGuest([
    '--socket',
    socket,
    '--mib',
    String(MIB),
    '--workload',
    'random:0.3',
    '--verify',
    img.raw,
    '--discard',
    '0:256',
    '--mremap',
    '512:256',
  ])
  t.equal(plain.code, 0, `a guest is served: ${plain.stderr}`)
  t.equal(plain.report?.after_mismatches, 0, 'with its discards and moves served right (EVENT_REMOVE, EVENT_REMAP)')
  t.match(server.log(), /UFFDIO_API refused EVENT_FORK \(the server lacks CAP_SYS_PTRACE\): a child the guest forks will read zeros for pages not served yet/)
  const forking = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'random:0.3', '--verify', img.raw, '--fork'])
  t.ok(forking.report?.child_mismatches > 0, `as logged, a forked child reads zeros where pages were not served (${forking.report?.child_mismatches} pages)`)
  t.equal(forking.report?.after_mismatches, 0, 'the parent itself is served right')
})
