import t from 'tap'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { extractSnapshot, verifySnapshot } from '../../src/snapshot/verify.js'
import { createSnapshot } from '../../src/snapshot/writer.js'
import { patternImage, randomBytes, textBytes, writeImage } from './fixtures/images.js'

const images: Array<[string, Buffer, number]> = [
  ['mixed, partial last page', patternImage(4096, 1500 * 4096 + 123, ['zero', 'text', 'random', 'zero', 'text']), 4096],
  ['random', randomBytes(64 * 4096 + 1), 4096],
  ['text, 16 KiB pages', textBytes(50 * 16384 - 7), 16384],
  ['all zero, partial', Buffer.alloc(3 * 4096 + 9), 4096],
  ['one byte', Buffer.from([0xff]), 65536],
]

t.test('verify counts pages; extract is byte-identical', async t => {
  const dir = t.testdir()
  for (const [i, [name, img, pageSize]] of images.entries()) {
    const raw = writeImage(dir, `${i}.raw`, img)
    const snap = join(dir, `${i}.snap`)
    const { header: h } = await createSnapshot(raw, snap, { pageSize })
    const steps: number[] = []
    const v = verifySnapshot(snap, { onProgress: d => steps.push(d) })
    t.equal(v.ok, true, `${name}: ok`)
    t.equal(v.corruptPages, 0)
    t.same(v.corrupt, [])
    t.equal(v.pagesChecked, Math.ceil(img.length / pageSize), `${name}: pages checked`)
    t.same([v.zeroPages, v.lz4Pages, v.rawPages], [h.zeroPages, h.lz4Pages, h.rawPages], `${name}: kind counts`)
    t.equal(steps.at(-1), img.length, `${name}: progress reaches the image size`)

    const out = join(dir, `${i}.out`)
    const e = extractSnapshot(snap, out)
    t.equal(e.bytesWritten, img.length)
    t.equal(statSync(out).size, img.length, `${name}: trimmed to the image size`)
    t.ok(readFileSync(out).equals(img), `${name}: byte-identical`)
    t.notOk(existsSync(`${out}.tmp`))
  }
})

t.test('mixed image counts', async t => {
  const dir = t.testdir()
  const [, img] = images[0]
  const raw = writeImage(dir, 'm.raw', img)
  await createSnapshot(raw, join(dir, 'm.snap'))
  const v = verifySnapshot(join(dir, 'm.snap'))
  // 1501 pages, fills cycle zero,text,random,zero,text; page 1500 (zero fill) is all zero.
  t.same([v.zeroPages, v.lz4Pages, v.rawPages], [601, 600, 300])
})

t.test('extract refuses to overwrite its own snapshot', async t => {
  const dir = t.testdir()
  const raw = writeImage(dir, 'a.raw', textBytes(4096))
  const snap = join(dir, 'a.snap')
  await createSnapshot(raw, snap)
  t.throws(() => extractSnapshot(snap, snap), {
    message: `${snap}: is the same file as the snapshot ${snap}; refusing to overwrite an input (choose another output path)`,
  })
  t.throws(() => extractSnapshot(snap, join(dir, 'no', 'out')), {
    message: `${join(dir, 'no', 'out')}: cannot create a temporary file in ${join(dir, 'no')}: no such file or directory`,
  })
  t.ok(verifySnapshot(snap).ok)
})
