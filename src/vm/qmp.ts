// A small QMP client over a Unix socket: greeting and capabilities negotiation, commands
// with timeouts matched by id, and events for whoever waits on them.
import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { QmpError, VmError } from './errors.js'

export interface QmpEvent {
  event: string
  data: Record<string, unknown>
  /** When QEMU emitted it (its wall clock), in ms. */
  timestampMs: number
}

export interface QmpConnectOptions {
  /** How long to keep retrying while QEMU has not created the socket yet. */
  timeoutMs?: number
  /** Stops the retries early (the QEMU process exited). */
  signal?: AbortSignal
}

export interface WaitForEventOptions {
  timeoutMs?: number
  match?: (data: Record<string, unknown>) => boolean
}

interface Pending {
  command: string
  resolve: (value: unknown) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

const DEFAULT_TIMEOUT_MS = 10_000
// Greeting plus responses are small; anything past this is not QMP.
const MAX_LINE_BYTES = 16 * 1024 * 1024

export class QmpClient {
  readonly path: string
  /** Resolves when the connection closes, for whatever reason. */
  readonly closed: Promise<void>
  private readonly socket: Socket
  private readonly pending = new Map<number, Pending>()
  private readonly eventListeners = new Set<(e: QmpEvent) => void>()
  private nextId = 1
  private buffer = ''
  private isClosed = false
  private greetingWaiter?: (greeting: Record<string, unknown> | Error) => void

  private constructor(path: string, socket: Socket) {
    this.path = path
    this.socket = socket
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => this.onData(chunk))
    this.closed = new Promise(resolve => {
      socket.on('close', () => {
        this.onClose()
        resolve()
      })
    })
    socket.on('error', () => {}) // 'close' follows and says everything the caller needs
  }

  /** Connects (retrying until QEMU has created the socket), reads the greeting and leaves
   * capabilities negotiation mode. */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_TIMEOUT_MS)
    for (;;) {
      if (options.signal?.aborted) throw new VmError(`QMP ${path}: gave up connecting: ${String(options.signal.reason ?? 'aborted')}`)
      try {
        const socket = await openSocket(path)
        const client = new QmpClient(path, socket)
        await client.handshake(Math.max(1, deadline - Date.now()))
        return client
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        const retry = code === 'ENOENT' || code === 'ECONNREFUSED'
        if (!retry) throw err instanceof VmError ? err : new VmError(`QMP ${path}: ${(err as Error).message}`)
        if (Date.now() >= deadline) throw new VmError(`QMP ${path}: no QEMU monitor there within ${options.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`)
        await sleep(5)
      }
    }
  }

  /** Runs one command; resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<T> {
    if (this.isClosed) return Promise.reject(new QmpError(command, 'Closed', 'the QMP connection is closed (QEMU exited?)'))
    const id = this.nextId++
    const message = JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id })
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new QmpError(command, 'Timeout', `no answer within ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer })
      this.socket.write(message + '\n')
    })
  }

  /** Calls `listener` for every event from now on; returns the function that stops it. */
  onEvent(listener: (e: QmpEvent) => void): () => void {
    this.eventListeners.add(listener)
    return () => this.eventListeners.delete(listener)
  }

  /** The next event named `name` (whose data passes `match`). Call it before the command
   * that causes the event: events are not kept. */
  waitForEvent(name: string, options: WaitForEventOptions = {}): Promise<QmpEvent> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    return new Promise((resolve, reject) => {
      const stop = (): void => {
        clearTimeout(timer)
        off()
        this.eventListeners.delete(onClose)
      }
      const timer = setTimeout(() => {
        stop()
        reject(new QmpError(`event ${name}`, 'Timeout', `not seen within ${timeoutMs} ms`))
      }, timeoutMs).unref() // the socket keeps the process alive while it waits
      const off = this.onEvent(e => {
        if (e.event === '__closed__') return
        if (e.event !== name || (options.match && !options.match(e.data))) return
        stop()
        resolve(e)
      })
      // The connection closing is delivered as a pseudo event so waiters fail at once.
      const onClose = (e: QmpEvent): void => {
        if (e.event !== '__closed__') return
        stop()
        reject(new QmpError(`event ${name}`, 'Closed', 'the QMP connection closed first (QEMU exited?)'))
      }
      this.eventListeners.add(onClose)
    })
  }

  close(): void {
    this.socket.destroy()
  }

  private async handshake(timeoutMs: number): Promise<void> {
    const greeting = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new VmError(`QMP ${this.path}: no greeting within ${timeoutMs} ms`)), timeoutMs)
      this.greetingWaiter = g => {
        clearTimeout(timer)
        if (g instanceof Error) reject(g)
        else resolve(g)
      }
    })
    if (!('QMP' in greeting)) throw new VmError(`QMP ${this.path}: unexpected greeting ${JSON.stringify(greeting).slice(0, 200)}`)
    await this.execute('qmp_capabilities', undefined, timeoutMs)
  }

  private onData(chunk: string): void {
    this.buffer += chunk
    let nl: number
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim()
      this.buffer = this.buffer.slice(nl + 1)
      if (line) this.onMessage(line)
    }
    if (this.buffer.length > MAX_LINE_BYTES) {
      this.socket.destroy(new Error('QMP message too long'))
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>
    try {
      msg = JSON.parse(line) as Record<string, unknown>
    } catch {
      return // QMP speaks JSON only; a torn line would only come from a dying QEMU
    }
    if (this.greetingWaiter) {
      const waiter = this.greetingWaiter
      this.greetingWaiter = undefined
      waiter(msg)
      return
    }
    if (typeof msg.event === 'string') {
      const ts = msg.timestamp as { seconds?: number; microseconds?: number } | undefined
      const event: QmpEvent = {
        event: msg.event,
        data: (msg.data as Record<string, unknown>) ?? {},
        timestampMs: ts ? (ts.seconds ?? 0) * 1000 + (ts.microseconds ?? 0) / 1000 : Date.now(),
      }
      for (const l of [...this.eventListeners]) l(event)
      return
    }
    const id = typeof msg.id === 'number' ? msg.id : undefined
    const p = id === undefined ? undefined : this.pending.get(id)
    if (!p || id === undefined) return
    this.pending.delete(id)
    clearTimeout(p.timer)
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string }
      p.reject(new QmpError(p.command, e.class ?? 'Error', e.desc ?? 'failed'))
    } else {
      p.resolve(msg.return)
    }
  }

  private onClose(): void {
    this.isClosed = true
    if (this.greetingWaiter) {
      this.greetingWaiter(new VmError(`QMP ${this.path}: connection closed before the greeting`))
      this.greetingWaiter = undefined
    }
    for (const p of this.pending.values()) {
      clearTimeout(p.timer)
      p.reject(new QmpError(p.command, 'Closed', 'the QMP connection closed (QEMU exited?)'))
    }
    this.pending.clear()
    const closedEvent: QmpEvent = { event: '__closed__', data: {}, timestampMs: Date.now() }
    for (const l of [...this.eventListeners]) l(closedEvent)
  }
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path)
    s.once('connect', () => {
      s.removeListener('error', reject)
      resolve(s)
    })
    s.once('error', reject)
  })
}
