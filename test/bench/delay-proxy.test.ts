// The bench's delay proxy: bytes arrive intact and in order, each direction at least the
// configured one-way delay later (a lower bound: the proxy can only add time).
import t from 'tap'
import { createServer, connect, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { DelayProxy } from '../../src/bench/delay-proxy.js'

t.test('delays each direction, keeps order and content', async t => {
  const echo = createServer(s => s.pipe(s))
  await new Promise<void>(r => echo.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => echo.close())
  const port = (echo.address() as { port: number }).port
  const proxy = await DelayProxy.start({ targetHost: '127.0.0.1', targetPort: port, oneWayDelayMs: 15 })
  t.teardown(() => proxy.close())
  const sock: Socket = connect({ host: '127.0.0.1', port: proxy.port })
  await new Promise<void>(r => sock.once('connect', () => r()))
  t.teardown(() => sock.destroy())
  const sent = Buffer.alloc(300_000)
  for (let i = 0; i < sent.length; i++) sent[i] = (i * 7 + (i >> 9)) & 0xff
  const got: Buffer[] = []
  let n = 0
  const t0 = performance.now()
  let firstMs = 0
  const done = new Promise<void>(r =>
    sock.on('data', d => {
      if (n === 0) firstMs = performance.now() - t0
      got.push(d)
      n += d.length
      if (n >= sent.length) r()
    }),
  )
  for (let o = 0; o < sent.length; o += 10_000) sock.write(sent.subarray(o, o + 10_000))
  await done
  t.ok(firstMs >= 2 * 15, `first byte back after ${firstMs.toFixed(1)} ms: both directions delayed`)
  t.same(Buffer.concat(got), sent, 'every byte, in order')
  t.equal(proxy.connections, 1)

  // Once connected, an exchange costs one round trip.
  const t1 = performance.now()
  const back = new Promise<void>(r => sock.once('data', () => r()))
  sock.write('x')
  await back
  t.ok(performance.now() - t1 >= 30, `round trip ${(performance.now() - t1).toFixed(1)} ms >= 30 ms`)
})
