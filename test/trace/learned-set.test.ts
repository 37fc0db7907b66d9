// Learned working sets: the file round-trips, keeps the last sessions, refuses another
// snapshot's set and damaged files with the path named, and gives the pages seen in k of n.
import { writeFileSync } from 'node:fs'
import t from 'tap'
import {
  decodeLearnedSet,
  encodeLearnedSet,
  LEARNED_MAX_SESSIONS,
  learnedPages,
  learnedSetPath,
  readLearnedSet,
  recordLearnedSession,
} from '../../src/trace/learned-set.js'
import { LearnedPolicy } from '../../src/policy/learned.js'
import { PolicyArgs } from '../../src/policy/args.js'
import { RunList } from '../../src/policy/policy.js'

const SNAP = { indexCrc: 0xdeadbeef, pageCount: 1000, pageSize: 4096 }

t.test('sessions are kept in order, the oldest dropped past the bound', async t => {
  const dir = t.testdir()
  t.equal(readLearnedSet(dir, SNAP), undefined, 'none yet')
  for (let k = 0; k < LEARNED_MAX_SESSIONS + 2; k++) recordLearnedSession(dir, SNAP, Uint32Array.of(k, 500 + k), 1000 + k)
  const set = readLearnedSet(dir, SNAP)!
  t.equal(set.sessions.length, LEARNED_MAX_SESSIONS)
  t.same([...set.sessions[0].pages], [2, 502], 'the two oldest were dropped')
  t.equal(set.sessions.at(-1)!.endedMs, 1000 + LEARNED_MAX_SESSIONS + 1)
  t.same(decodeLearnedSet(encodeLearnedSet(set), 'x'), set, 'encode and decode agree')
})

t.test('k of the last n, newest order first', async t => {
  const set = {
    snapshot: SNAP,
    sessions: [
      [1, 2, 3],
      [3, 4, 1],
      [5, 3, 1],
    ].map((p, i) => ({ endedMs: i, pages: Uint32Array.from(p) })),
  }
  t.same(learnedPages(set), [5, 3, 1, 4, 2], "union: the newest session's order, then older ones' new pages")
  t.same(learnedPages(set, 2), [3, 1], 'seen in at least 2 of the last 4')
  t.same(learnedPages(set, 3), [3, 1])
  t.same(learnedPages(set, 1, 1), [5, 3, 1], 'only the last session')
  t.same(learnedPages(set, 2, 2), [3, 1], '2 of the last 2')
})

t.test("another snapshot's set, and damaged files, are refused with the path", async t => {
  const dir = t.testdir()
  recordLearnedSession(dir, SNAP, Uint32Array.of(1))
  const path = learnedSetPath(dir, SNAP)
  const other = { ...SNAP, pageCount: 2000 }
  writeFileSync(learnedSetPath(dir, other), encodeLearnedSet({ snapshot: SNAP, sessions: [] }))
  t.throws(() => readLearnedSet(dir, other), { code: 'FL_ERR_LEARNED_SET', message: /learned on another snapshot/ })
  writeFileSync(path, 'garbage that is not a learned set at all, no magic here')
  t.throws(() => readLearnedSet(dir, SNAP), { message: new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: not a faultline learned working set`) })
  const truncated = encodeLearnedSet({ snapshot: SNAP, sessions: [{ endedMs: 1, pages: Uint32Array.of(1, 2, 3) }] }).subarray(0, 60)
  writeFileSync(path, truncated)
  t.throws(() => readLearnedSet(dir, SNAP), { message: /truncated in session 0/ })
  writeFileSync(path, encodeLearnedSet({ snapshot: SNAP, sessions: [{ endedMs: 1, pages: Uint32Array.of(5000) }] }))
  t.throws(() => readLearnedSet(dir, SNAP), { message: /page 5000 is past the snapshot's 1000 pages/ })
})

t.test('learned:FILE[@K/N] prefetches the set in order, from the start', async t => {
  const dir = t.testdir()
  recordLearnedSession(dir, SNAP, Uint32Array.of(7, 8, 9, 100))
  recordLearnedSession(dir, SNAP, Uint32Array.of(100, 7, 200))
  const path = learnedSetPath(dir, SNAP)
  const policy = LearnedPolicy.fromArgs(new PolicyArgs('learned', path))
  t.equal(policy.name, `learned:${path}`)
  const plan = new RunList()
  policy.onStart({ pageSize: 4096, pageCount: 1000, ranges: [{ firstPage: 0, pageCount: 1000 }], isResident: () => false, kindOf: () => 1 }, plan)
  t.same([...plan.first.subarray(0, plan.length)], [100, 7, 200, 8], "newest order, then the older session's other pages (8-9 joined)")
  t.same([...plan.count.subarray(0, plan.length)], [1, 1, 1, 2])
  const two = LearnedPolicy.fromArgs(new PolicyArgs('learned', `${path}@2/2`))
  t.equal(two.pages, 2, 'pages 100 and 7 are in both sessions')
  t.throws(() => LearnedPolicy.fromArgs(new PolicyArgs('learned', `${path}@3/2`)), { message: /^learned: expected K sessions of 1\.\.2, got '3'/ })
  t.throws(() => LearnedPolicy.fromArgs(new PolicyArgs('learned', undefined)), { message: /^learned: expected a learned set/ })
  t.throws(() => LearnedPolicy.fromArgs(new PolicyArgs('learned', `${dir}/none.fllearn`)), { message: /^learned: .*none\.fllearn/ })
})
