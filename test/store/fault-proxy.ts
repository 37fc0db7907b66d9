// A loopback HTTP proxy between faultline and a real S3 endpoint that injects the failures a
// remote store shows (error statuses, throttling, stalls, resets, bodies cut short) on chosen
// requests, and passes the rest through untouched (signatures stay valid: Host is kept).
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'

export type ProxyAction =
  | 'pass'
  /** Never answer (the client's deadline must fire). */
  | 'stall'
  /** Close the connection without an answer. */
  | 'reset'
  /** Send the status and headers and half the body, then close. */
  | 'truncate'
  /** Answer with an S3 error: status and XML <Code>. */
  | { status: number; code: string }
  /** Pass it on once this settles (a GET that takes as long as the test wants). */
  | { hold: Promise<void> }

export interface ProxiedRequest {
  method: string
  path: string
  range?: string
  action: string
}

export class FaultProxy {
  readonly requests: ProxiedRequest[] = []
  /** Decides each request's fate; `n` counts requests seen so far (0-based). */
  decide: (req: { method: string; path: string; range?: string }, n: number) => ProxyAction
  private readonly server: Server
  private readonly target: URL
  private readonly sockets = new Set<Socket>()
  port = 0

  private constructor(target: string, decide: FaultProxy['decide']) {
    this.target = new URL(target)
    this.decide = decide
    this.server = createServer((req, res) => this.handle(req, res))
    this.server.on('connection', s => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  static start(target: string, decide: FaultProxy['decide'] = () => 'pass'): Promise<FaultProxy> {
    const proxy = new FaultProxy(target, decide)
    return new Promise((resolve, reject) => {
      proxy.server.on('error', reject)
      proxy.server.listen(0, '127.0.0.1', () => {
        const a = proxy.server.address()
        proxy.port = typeof a === 'object' && a ? a.port : 0
        resolve(proxy)
      })
    })
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    return new Promise(r => this.server.close(() => r()))
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const info = { method: req.method ?? 'GET', path: req.url ?? '/', range: req.headers.range }
    const action = this.decide(info, this.requests.length)
    this.requests.push({ ...info, action: typeof action === 'string' ? action : 'hold' in action ? 'hold' : `${action.status} ${action.code}` })
    if (action === 'stall') return
    if (typeof action === 'object' && 'hold' in action) {
      void action.hold.then(() => this.forward(req, res, 'pass'))
      return
    }
    if (action === 'reset') {
      req.socket.destroy()
      return
    }
    if (typeof action === 'object') {
      const body = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${action.code}</Code><Message>injected by the test proxy</Message></Error>`
      res.writeHead(action.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) })
      res.end(body)
      return
    }
    this.forward(req, res, action)
  }

  private forward(req: IncomingMessage, res: ServerResponse, action: 'pass' | 'truncate'): void {
    if (req.socket.destroyed) return
    const upstream = request(
      {
        host: this.target.hostname,
        port: this.target.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      up => {
        res.writeHead(up.statusCode ?? 502, up.headers)
        if (action === 'truncate') {
          const length = Number(up.headers['content-length'] ?? 0)
          let sent = 0
          up.on('data', (d: Buffer) => {
            const room = Math.max(0, Math.floor(length / 2) - sent)
            if (room > 0) {
              res.write(d.subarray(0, room))
              sent += Math.min(room, d.length)
            }
            if (sent >= Math.floor(length / 2)) {
              req.socket.destroy()
              up.destroy()
            }
          })
          return
        }
        up.pipe(res)
      },
    )
    upstream.on('error', () => req.socket.destroy())
    req.pipe(upstream)
  }
}
