// The SVG plot: scales, ticks, and that each series is drawn where its numbers say.
import t from 'tap'
import { escapeXml, linearTicks, logTicks, renderSvgPlot, scale } from '../../src/bench/plot.js'

t.test('scales and ticks', async t => {
  const lin = scale(0, 10, 100, 200, false)
  t.equal(lin(0), 100)
  t.equal(lin(5), 150)
  t.equal(lin(10), 200)
  const log = scale(1, 100, 0, 100, true)
  t.equal(log(10), 50)
  t.same(logTicks(1, 100), [1, 2, 5, 10, 20, 50, 100])
  t.same(linearTicks(0, 10), [0, 2, 4, 6, 8, 10])
  t.equal(escapeXml(`a<b & "c"`), 'a&lt;b &amp; &quot;c&quot;')
})

t.test('draws one polyline per series at the right coordinates', async t => {
  const svg = renderSvgPlot({
    title: 'T',
    xLabel: 'x',
    yLabel: 'y',
    logX: true,
    logY: true,
    panels: [
      {
        title: 'cold',
        series: [
          {
            name: 'mmap',
            points: [
              { x: 256, y: 10 },
              { x: 1024, y: 100 },
            ],
          },
          {
            name: 'a<b',
            points: [
              { x: 256, y: 1 },
              { x: 1024, y: 1 },
            ],
          },
        ],
      },
      {
        title: 'warm',
        series: [
          {
            name: 'mmap',
            points: [
              { x: 256, y: 5 },
              { x: 1024, y: 50 },
            ],
          },
        ],
      },
    ],
  })
  t.match(svg, /^<svg xmlns/)
  t.equal((svg.match(/<polyline/g) ?? []).length, 3)
  t.equal((svg.match(/<circle/g) ?? []).length, 6)
  t.match(svg, /data-name="a&lt;b"/)
  t.notMatch(svg, /NaN|undefined/)
  // mmap in the cold panel rises: its second point is higher up (smaller y) and further right.
  const line = /data-name="mmap">\n<polyline[^>]*points="([^"]+)"/.exec(svg)!
  const [[x0, y0], [x1, y1]] = line[1].split(' ').map(p => p.split(',').map(Number))
  t.ok(x1 > x0 && y1 < y0, `${line[1]}`)
  // The flat series (y = 1 at both sizes) is horizontal.
  const flat = /data-name="a&lt;b">\n<polyline[^>]*points="([^"]+)"/.exec(svg)!
  const ys = flat[1].split(' ').map(p => Number(p.split(',')[1]))
  t.equal(ys[0], ys[1])
  // Both legend entries, once each.
  t.equal((svg.match(/class="legend"/g) ?? []).length, 2)
})

t.test('non-positive values on a log axis are left out, not drawn at -Infinity', async t => {
  const svg = renderSvgPlot({
    title: 'T',
    xLabel: 'x',
    yLabel: 'y',
    logY: true,
    panels: [
      {
        title: 'p',
        series: [
          {
            name: 's',
            points: [
              { x: 1, y: 0 },
              { x: 2, y: 10 },
              { x: 3, y: NaN },
            ],
          },
        ],
      },
    ],
  })
  t.equal((svg.match(/<circle/g) ?? []).length, 1)
  t.notMatch(svg, /Infinity|NaN/)
})
