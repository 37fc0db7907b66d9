// A loopback TCP proxy that delays every byte by a fixed one-way time in each direction (and a
// new connection by one round trip), to show what a real network between faultline and its
// object store costs. This kernel has no netem qdisc, so the bench puts this in the path.
import { createServer, connect, type Server, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'

export interface DelayProxyOptions {
  /** Where to forward to. */
  targetHost: string
  targetPort: number
  /** Added to each direction: the emulated round trip time is twice this. */
  oneWayDelayMs: number
}

export class DelayProxy {
  readonly port: number
  readonly oneWayDelayMs: number
  /** Connections accepted so far. */
  connections = 0
  private readonly server: Server
  private readonly sockets = new Set<Socket>()

  private constructor(server: Server, port: number, oneWayDelayMs: number) {
    this.server = server
    this.port = port
    this.oneWayDelayMs = oneWayDelayMs
  }

  /** `http://127.0.0.1:PORT` for an HTTP target. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  static start(opts: DelayProxyOptions): Promise<DelayProxy> {
    const delay = Math.max(0, opts.oneWayDelayMs)
    return new Promise((resolve, reject) => {
      let proxy: DelayProxy
      const server = createServer({ noDelay: true }, client => {
        proxy.connections++
        const upstream = connect({ host: opts.targetHost, port: opts.targetPort, noDelay: true })
        proxy.track(client)
        proxy.track(upstream)
        const toUpstream = new DelayedPipe(upstream, delay)
        const toClient = new DelayedPipe(client, delay)
        // The upstream connection may only carry data one round trip after it was asked for.
        toUpstream.holdUntil(performance.now() + 2 * delay)
        client.on('data', d => toUpstream.push(d))
        upstream.on('data', d => toClient.push(d))
        client.on('end', () => toUpstream.end())
        upstream.on('end', () => toClient.end())
        const fail = () => {
          client.destroy()
          upstream.destroy()
        }
        client.on('error', fail)
        upstream.on('error', fail)
        client.on('close', () => toUpstream.end())
        upstream.on('close', () => toClient.end())
      })
      server.on('error', reject)
      server.listen(0, '127.0.0.1', () => {
        const address = server.address()
        proxy = new DelayProxy(server, typeof address === 'object' && address ? address.port : 0, delay)
        resolve(proxy)
      })
    })
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    return new Promise(resolve => this.server.close(() => resolve()))
  }

  private track(s: Socket): void {
    this.sockets.add(s)
    s.on('close', () => this.sockets.delete(s))
  }
}

/** Writes what it is given to `to`, each piece `delayMs` after it arrived, in order. */
class DelayedPipe {
  private readonly to: Socket
  private readonly delayMs: number
  private readonly queue: Array<{ due: number; data: Buffer | null }> = []
  private timer: NodeJS.Timeout | undefined
  private notBefore = 0

  constructor(to: Socket, delayMs: number) {
    this.to = to
    this.delayMs = delayMs
  }

  holdUntil(time: number): void {
    this.notBefore = time
  }

  push(data: Buffer): void {
    this.enqueue(data)
  }

  /** Ends the destination after what is queued. */
  end(): void {
    this.enqueue(null)
  }

  private enqueue(data: Buffer | null): void {
    this.queue.push({ due: Math.max(performance.now() + this.delayMs, this.notBefore), data })
    if (this.timer === undefined) this.arm()
  }

  private arm(): void {
    const head = this.queue[0]
    if (head === undefined) return
    this.timer = setTimeout(() => this.flush(), Math.max(0, head.due - performance.now()))
  }

  private flush(): void {
    this.timer = undefined
    const now = performance.now()
    while (this.queue.length > 0 && this.queue[0].due <= now) {
      const { data } = this.queue.shift()!
      if (this.to.destroyed) {
        this.queue.length = 0
        return
      }
      if (data === null) this.to.end()
      else this.to.write(data)
    }
    this.arm()
  }
}
