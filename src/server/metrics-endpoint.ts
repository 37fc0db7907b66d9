// `serve --metrics HOST:PORT`: an HTTP listener answering GET /metrics with ServerMetrics'
// text (on the main thread: a scrape reads shared counters, it never waits on a session).
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ServerError } from './page-server.js'
import type { ServerMetrics } from './metrics.js'

const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

export interface MetricsEndpoint {
  /** Where it listens, as HOST:PORT (the port chosen by the kernel when 0 was asked). */
  readonly address: string
  close(): Promise<void>
}

/** HOST:PORT (IPv6 hosts in brackets: [::1]:9464). */
export function parseListenAddress(spec: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]\s]+):(\d{1,5})$/.exec(spec)
  const port = m === null ? NaN : Number(m[2])
  if (m === null || port > 65535) throw new ServerError(`--metrics ${spec}: expected HOST:PORT (port 0..65535), e.g. 127.0.0.1:9464`)
  return { host: m[1].replace(/^\[|\]$/g, ''), port }
}

export function startMetricsEndpoint(spec: string, metrics: ServerMetrics): Promise<MetricsEndpoint> {
  const { host, port } = parseListenAddress(spec)
  const http: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0]
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n')
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end()
      return
    }
    let body: string
    try {
      body = metrics.render()
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`)
      return
    }
    res.writeHead(200, { 'content-type': CONTENT_TYPE, 'content-length': Buffer.byteLength(body) })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
  return new Promise((resolve, reject) => {
    http.once('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'EADDRINUSE'
          ? 'address in use'
          : err.code === 'EADDRNOTAVAIL'
            ? 'no such address on this host'
            : err.code === 'EACCES'
              ? 'permission denied (a port below 1024?)'
              : err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN'
                ? `cannot resolve host ${host}`
                : err.message
      reject(new ServerError(`--metrics ${spec}: cannot listen: ${why}`))
    })
    http.listen(port, host, () => {
      const a = http.address() as AddressInfo
      resolve({
        address: `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`,
        close: () =>
          new Promise<void>(r => {
            http.closeAllConnections()
            http.close(() => r())
          }),
      })
    })
  })
}
