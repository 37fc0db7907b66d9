// Plots: the SVG holds the three panels with the trace's numbers; huge traces stay small.
import t from 'tap'
import { readTrace } from '../../src/trace/reader.js'
import { niceTicks, renderTraceHtml, renderTraceSvg } from '../../src/trace/plot.js'
import { faults, writeTrace, type Rec } from './fixtures.js'

t.test('svg and html', async t => {
  const dir = t.testdir()
  const records: Rec[] = faults(
    Array.from({ length: 200 }, (_, i) => i * 3),
    5,
  )
  records.forEach((r, i) => {
    r[6] = (i + 1) * 1000
  })
  records.push([150_000, 700, 32, 1, 0, 0, 9000])
  const tr = readTrace(writeTrace(dir, 'p.fltrace', records, { policy: 'adaptive:256' }))
  const svg = renderTraceSvg(tr)
  t.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
  t.ok(svg.trimEnd().endsWith('</svg>'))
  for (const title of ['Address over time', 'Fault service latency (CDF)', 'Working set over time']) t.ok(svg.includes(title), title)
  t.match(svg, /policy adaptive:256, session 3, pid 4242<\/text>/)
  t.match(svg, /200 faults, 200 pages faulted, 232 installed \(200 fault, 32 prefetch, 0 background\)/)
  t.match(svg, /p50 100 µs/, 'p50 of latencies 1..200 µs is 100 µs')
  t.match(svg, /p99 198 µs/)
  t.match(svg, /stroke="#e8912d"[^>]*\/>/, 'the prefetch is drawn')
  t.equal(svg.split('<').length, svg.split('>').length, 'tags are balanced')
  const html = renderTraceHtml(tr)
  t.match(html, /^<!doctype html>/)
  t.match(html, /<td>faults \(write, on present pages\)<\/td><td>200 \(0, 0\)<\/td>/)
  t.ok(html.includes(svg))
})

t.test('a large trace is binned to pixels', async t => {
  const dir = t.testdir()
  const records: Rec[] = []
  for (let i = 0; i < 200_000; i++) records.push([i * 1000, (i * 7919) % 65536, 1, 0, 0, 1, 1000 + (i % 5000)])
  const svg = renderTraceSvg(
    readTrace(writeTrace(dir, 'big.fltrace', records, { snapshotPages: 65536, regions: [{ address: 0, firstPage: 0, pageCount: 65536 }] })),
  )
  t.ok(svg.length < 4 * 2 ** 20, `${svg.length} bytes`)
})

t.test('ticks', async t => {
  t.same(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10])
  t.same(niceTicks(0, 1, 4), [0, 0.2, 0.4, 0.6, 0.8, 1])
  t.same(niceTicks(0.5, 7.5, 3), [2, 4, 6])
  t.same(niceTicks(3, 3), [3])
})
