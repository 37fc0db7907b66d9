// A PageServer in this process, its guest this process too: the test maps memory of its own,
// creates a uffd for it and hands both over with faultline's handshake, as the native guest
// does. Its reads then fault (user-mode faults, so no privilege is needed) and the server's
// session worker, another thread, serves them from the snapshot. What one guest costs the
// server end to end, refusals of bad clients, and a clean stop.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import type { SessionRecord } from '../../src/server/session-pool.js'
import * as uffd from '../../src/uffd/index.js'
import { makeImage, scratchDir } from '../e2e/harness.js'
import { connect, exchange, notAUserfaultfd, readReply, send, startFastServer } from '../e2e/reliability-helpers.js'

const PS = 4096

t.test("serves this process's own memory, refuses bad clients, stops cleanly", async t => {
  const dir = scratchDir(t, 'fl-page-server-')
  const img = await makeImage(dir, 1, 4)
  const raw = readFileSync(img.raw)
  const socket = join(dir, 's.sock')
  const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, policy: 'readahead:7' })
  const ended = new Promise<SessionRecord>(resolve => server.once('ended', resolve))

  const mem = uffd.mapAnonymous(1 << 20)
  t.teardown(() => uffd.unmap(mem))
  const body = JSON.stringify({ version: 1, register: true, regions: [{ base_host_virt_addr: mem.address, size: mem.length, offset: 0, page_size: PS }] })

  // A client whose descriptor is not a uffd is refused in one line; the server goes on.
  const bad = notAUserfaultfd()
  const refused = await exchange(socket, body, [bad])
  uffd.closeFd(bad)
  t.same(refused.reply, { ok: false, error: 'the file descriptor sent is not a userfaultfd' })

  const uffdFd = uffd.openUserfaultfd()
  const conn = connect(socket)
  send(conn, body, [uffdFd])
  uffd.closeFd(uffdFd) // the server holds its own copy now
  const ack = await readReply(conn)
  t.equal(ack.reply?.ok, true, `acknowledged: ${JSON.stringify(ack.reply)}`)
  t.type(ack.reply?.session, 'number')

  // Every read of an absent page blocks this thread in the kernel until the session worker
  // installs it: pages 0, 8, 16, ... fault; readahead:7 brings the 7 after each.
  const badPages: number[] = []
  for (let p = 0; p < 256; p++) {
    if (mem.bytes.compare(raw, p * PS, (p + 1) * PS, p * PS, (p + 1) * PS) !== 0) badPages.push(p)
  }
  t.same(badPages, [], 'all 256 pages read as the raw image')

  uffd.closeFd(conn) // the guest goes away: its session ends
  const rec = await ended
  t.equal(rec.id, ack.reply?.session)
  t.equal(rec.error, undefined, 'ended without an error')
  t.equal(rec.stats?.faults, 32, 'one fault per 8 pages')
  t.same(rec.stats?.pagesInstalled, [32, 224, 0], '32 faulting pages, 224 read ahead, no background')

  await server.close()
  t.notOk(existsSync(socket), 'the socket is removed on stop')
})
