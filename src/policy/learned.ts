// learned:FILE[@K/N]: a working set that `serve --learn DIR` learned from earlier sessions of
// the snapshot (FILE, a .fllearn in DIR): the pages seen in at least K of the last N sessions
// (default 1/4), prefetched from the start once the guest runs, in the newest session's order
// of first use, faults going first. `serve --learn DIR` picks it by itself when DIR holds a
// set for the snapshot and no --policy was given.
import { describeError } from '../errors.js'
import { decodeLearnedSet, LEARNED_DEFAULT_KEEP, LEARNED_MAX_SESSIONS, learnedPages, type LearnedSet } from '../trace/learned-set.js'
import type { PolicyArgs } from './args.js'
import { readRegularFile } from '../util/input-file.js'
import { WorkingSetPolicy } from './workingset.js'

export class LearnedPolicy extends WorkingSetPolicy {
  static fromArgs(args: PolicyArgs): LearnedPolicy {
    const spec = args.required('a learned set: --policy learned:FILE[@K/N] (serve --learn DIR writes them)')
    const m = /^(.*)@(\d+)\/(\d+)$/.exec(spec)
    const path = m ? m[1] : spec
    const keep = args.int('N sessions of', 1, LEARNED_MAX_SESSIONS, LEARNED_DEFAULT_KEEP, { piece: m?.[3] })
    const min = args.int('K sessions of', 1, keep, 1, { piece: m?.[2] })
    let set: LearnedSet
    try {
      set = decodeLearnedSet(readRegularFile(path, 'cannot read learned set'), path)
    } catch (err) {
      throw args.error(describeError(err), err)
    }
    return new LearnedPolicy(path, set, min, keep)
  }

  readonly set: LearnedSet

  constructor(path: string, set: LearnedSet, minSessions: number, keep: number) {
    const name = minSessions === 1 && keep === LEARNED_DEFAULT_KEEP ? `learned:${path}` : `learned:${path}@${minSessions}/${keep}`
    super(path, learnedPages(set, minSessions, keep), set.snapshot.pageSize, 0, name)
    this.set = set
  }
}
