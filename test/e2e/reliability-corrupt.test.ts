// Corrupt snapshots against a live server: page data that fails its checksum is never
// installed. The guest touching such a page is failed closed (the page is poisoned, so it
// takes SIGBUS there, or its session ends with the reason), every page it read before was
// right, and the server goes on serving other guests. Snapshots damaged in their structure
// are refused when the server starts, with the file and the fault named.
import t from 'tap'
import type { Test } from '@tapjs/test'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { FaultlineError } from '../../src/errors.js'
import { HEADER_SIZE, KIND_ZERO } from '../../src/snapshot/format.js'
import { PageServer } from '../../src/server/page-server.js'
import { makeImage, runGuest, scratchDir, type GuestResult } from './harness.js'
import { startFastServer } from './reliability-helpers.js'

const MIB = 4
const PAGES = MIB * 256

/** xorshift32, seeded: the same damage on every run. */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1
  return () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s }
}

interface Stored { page: number; offset: number; length: number }

/** The stored (non-zero) pages of a snapshot file, from its index. */
function storedPages(snap: Buffer): Stored[] {
  const pageCount = Number(snap.readBigUInt64LE(24))
  const dataOffset = Number(snap.readBigUInt64LE(48))
  const out: Stored[] = []
  for (let p = 0; p < pageCount; p++) {
    const at = HEADER_SIZE + 16 * p
    if (snap[at + 6] === KIND_ZERO) continue
    out.push({ page: p, offset: dataOffset + snap.readUIntLE(at, 6), length: snap.readUInt32LE(at + 8) })
  }
  return out
}

/** Flips one byte inside each of `count` stored pages (the index stays valid): returns them. */
function damagePages(snap: Buffer, count: number, next: () => number): number[] {
  const stored = storedPages(snap)
  const hit = new Set<number>()
  while (hit.size < count) {
    const s = stored[next() % stored.length]
    if (hit.has(s.page)) continue
    snap[s.offset + (next() % s.length)] ^= 1 + (next() % 255)
    hit.add(s.page)
  }
  return [...hit].sort((a, b) => a - b)
}

/** What a guest that touched a damaged page must show: failed closed, at a damaged page. */
function checkFailedClosed(t: Test, r: GuestResult, damaged: number[], name: string): void {
  t.equal(r.report, undefined, `${name}: did not finish its workload`)
  t.notMatch(r.stderr, /verify:/, `${name}: no page it read differed from the image`)
  const sigbus = /^guest: SIGBUS at page (\d+): the page server poisoned it/.exec(r.stderr)
  const told = /^guest: page server closed the connection \(snapshot error: .*: page (\d+) is corrupt: (checksum mismatch|LZ4 data malformed|decodes to)/.exec(r.stderr)
  t.ok((r.code === 4 && sigbus) || (r.code === 3 && told), `${name}: exit ${r.code}, ${r.stderr.trim()}`)
  const page = Number((sigbus ?? told)?.[1])
  t.ok(damaged.includes(page), `${name}: stopped at page ${page}, one of the damaged ones`)
}

t.test('damaged page data: guests fail closed at the damaged page, the server serves on', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, MIB, 6)
  const good = readFileSync(img.snap)
  // One server; between rounds the file is damaged in place (same length, same index: only
  // page data changes under it, found page by page as it is read) and then repaired.
  const path = join(dir, 'live.snap')
  writeFileSync(path, good)
  const socket = join(dir, 's.sock')
  const server = await startFastServer(t, { snapshotPath: path, socketPath: socket, warmWorkers: 2 })
  const logs: string[] = []
  server.on('log', line => logs.push(line))
  const next = prng(0xbad5eed)
  let tried = 0, sigbus = 0, told = 0, toldRounds = 0
  for (let round = 0; round < 4; round++) {
    const snap = Buffer.from(good)
    const damaged = damagePages(snap, 1 + (next() % 4), next)
    writeFileSync(path, snap)
    tried++
    // Faultline form: the server poisons the page. Firecracker form (the guest chose no
    // POISON): the session ends, the guest's fault never returns, its watchdog says why.
    const form = round % 2 === 0 ? 'faultline' : 'firecracker'
    const r = await runGuest(['--socket', socket, '--mib', String(MIB), '--handshake', form, '--workload', 'sequential', '--verify', img.raw, '--verify-each'])
    checkFailedClosed(t, r, damaged, `round ${round} (${form} form, pages ${damaged.join(', ')} damaged)`)
    if (r.code === 4) sigbus++
    else told++
    // The pages before the first damaged one are fine, and the server still serves them.
    const pagesFile = join(dir, `good${round}.txt`)
    writeFileSync(pagesFile, Array.from({ length: damaged[0] }, (_, p) => p).join('\n') + '\n')
    const after = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', `pages:${pagesFile}`, '--verify', img.raw])
    t.equal(after.code, 0, `round ${round}: the next guest is served (${after.stderr.trim()})`)
    t.equal(after.report?.verified_pages, damaged[0])
    await server.idle()
    // A poisoned page fails that page alone: the session goes on (the guest ends it). A guest
    // that cannot be poisoned is failed closed: its session ends, saying which page.
    if (form === 'firecracker') toldRounds++
    const failures = server.ended.filter(s => s.stats?.endReason.startsWith('snapshot error'))
    t.equal(failures.length, toldRounds, `round ${round}: sessions failed only where the page could not be poisoned`)
    if (form === 'firecracker') {
      t.match(failures.at(-1)?.stats?.endReason, new RegExp(`^snapshot error: .*: page (${damaged.join('|')}) is corrupt: `), `round ${round}: the session says which page failed`)
    } else {
      t.ok(logs.some(l => new RegExp(`cannot serve page (${damaged.join('|')}): .*is corrupt`).test(l)), `round ${round}: the server's log names the damaged page`)
    }
  }
  // And repaired, it serves every page again.
  writeFileSync(path, good)
  const whole = await runGuest(['--socket', socket, '--mib', String(MIB), '--workload', 'sequential', '--verify', img.raw])
  t.equal(whole.code, 0, whole.stderr)
  t.equal(whole.report?.verified_pages, PAGES)
  t.comment(`live serve: ${tried} damaged snapshots served; guests failed closed ${sigbus} times by SIGBUS on the poisoned page, ${told} times told by the server`)
})

t.test('structural damage is refused when the server starts', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 1)
  const good = readFileSync(img.snap)
  const cases: Array<[string, (b: Buffer) => Buffer, RegExp]> = [
    ['truncated', b => b.subarray(0, b.length - 100), /: truncated: file is \d+ bytes, the snapshot it describes is \d+$/],
    ['bad magic', b => { b[0] ^= 1; return b }, /: not a faultline snapshot/],
    ['header checksum', b => { b[24] ^= 1; return b }, /: header checksum mismatch/],
    ['index checksum', b => { b[HEADER_SIZE + 20] ^= 1; return b }, /: index checksum mismatch/],
    ['trailing bytes', b => Buffer.concat([b, Buffer.alloc(10)]), /: 10 unexpected bytes after the end of data/],
  ]
  for (const [name, damage, expected] of cases) {
    const path = join(dir, `${name.replace(/ /g, '-')}.snap`)
    writeFileSync(path, damage(Buffer.from(good)))
    const err = await PageServer.start({ snapshotPath: path, socketPath: join(dir, 'x.sock') }).then(s => { void s.close(); return undefined }, e => e as Error)
    t.ok(err instanceof FaultlineError, `${name}: refused with a FaultlineError`)
    t.match(err?.message, new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}${expected.source}`), `${name}: ${err?.message}`)
  }
})
