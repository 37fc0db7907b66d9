// The fill queue: priorities in order, FIFO within one, bounded rings, a sequence to wait on.
import t from 'tap'
import { FILL_BACKGROUND, FILL_FAULT, FILL_PREFETCH, FillQueue } from '../../src/cache/fill-queue.js'

t.test('faults first, then prefetch, then background; FIFO within a priority', async t => {
  const q = FillQueue.allocate(8)
  q.push(1, FILL_BACKGROUND)
  q.push(2, FILL_PREFETCH)
  q.push(3, FILL_FAULT)
  q.push(4, FILL_PREFETCH)
  q.push(5, FILL_FAULT)
  const p = new Int32Array(1)
  const out: Array<[number, number]> = []
  for (let f = q.pop(p); f >= 0; f = q.pop(p)) out.push([f, p[0]])
  t.same(out, [
    [3, 0],
    [5, 0],
    [2, 1],
    [4, 1],
    [1, 2],
  ])
})

t.test('a full ring refuses, and has room again once popped; another thread sees the same queue', async t => {
  const q = FillQueue.allocate(5) // rounded up to 8
  t.equal(q.capacity, 8)
  for (let i = 0; i < 8; i++) t.ok(q.push(i, FILL_FAULT))
  t.notOk(q.push(99, FILL_FAULT), 'full')
  t.equal(q.room(FILL_FAULT), 0)
  t.equal(q.room(FILL_BACKGROUND), 8, 'each priority has its own ring')
  const other = new FillQueue(q.buffers)
  t.equal(other.pop(), 0)
  t.ok(q.push(8, FILL_FAULT))
  const seq = q.sequence()
  q.push(1, FILL_BACKGROUND)
  t.ok(q.sequence() !== seq, 'a push moves the sequence')
  q.stop()
  t.ok(other.stopped)
})
