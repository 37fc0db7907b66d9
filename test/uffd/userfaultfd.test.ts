// FFI layer against the real kernel: API negotiation, register, COPY/ZEROPAGE/POISON into a
// region of our own, EEXIST handling, message batches, sockets with SCM_RIGHTS.
import t from 'tap'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as uffd from '../../src/uffd/index.js'

const PAGE = 4096

t.test("UFFDIO_API reports this kernel's features and negotiates a subset", async t => {
  const all = uffd.supportedFeatures()
  t.ok(all & uffd.UFFD_FEATURE_THREAD_ID, 'THREAD_ID offered')
  const fd = uffd.Userfaultfd.create()
  const r = fd.api(uffd.UFFD_FEATURE_THREAD_ID | uffd.UFFD_FEATURE_EVENT_REMOVE | (1 << 30))
  t.equal(r.features, uffd.UFFD_FEATURE_THREAD_ID | uffd.UFFD_FEATURE_EVENT_REMOVE)
  t.same(r.missing, [], 'bit 30 is not a named feature, so nothing named is missing')
  t.ok(uffd.isUserfaultfd(fd.fd))
  t.throws(() => fd.api(0), /UFFDIO_API failed: EINVAL/, 'a second UFFDIO_API is refused')
  fd.close()
  t.notOk(uffd.isUserfaultfd(0))
})

t.test('copy, zeropage, EEXIST and poison into a registered region', async t => {
  const fd = uffd.Userfaultfd.create()
  fd.api(uffd.UFFD_FEATURE_POISON)
  const region = uffd.mapAnonymous(16 * PAGE)
  fd.register(region.address, region.length)
  const src = new uffd.CopySourceBuffer(4 * PAGE)
  t.equal(src.address % PAGE, 0, 'copy source is page aligned')
  for (let i = 0; i < 4 * PAGE; i++) src.buffer[i] = (i * 7 + 3) & 0xff
  t.equal(fd.copy(region.address, src.address, 4 * PAGE, PAGE), 4 * PAGE)
  t.ok(region.bytes.subarray(0, 4 * PAGE).equals(src.buffer), 'copied bytes are in the region')
  // Page 2 exists: a copy over pages 1..5 must skip it (EEXIST) and install the others.
  src.buffer.fill(0xab)
  t.equal(fd.copy(region.address + 4 * PAGE, src.address, 2 * PAGE, PAGE), 2 * PAGE)
  t.equal(fd.copy(region.address + 3 * PAGE, src.address, 4 * PAGE, PAGE), 4 * PAGE, 'EEXIST pages are skipped')
  t.equal(region.bytes[3 * PAGE], (3 * PAGE * 7 + 3) & 0xff, 'existing page untouched')
  t.equal(region.bytes[6 * PAGE + 5], 0xab)
  t.equal(fd.zeropage(region.address + 8 * PAGE, 2 * PAGE, PAGE), 2 * PAGE)
  t.equal(region.bytes[8 * PAGE + 100], 0)
  t.equal(fd.poison(region.address + 10 * PAGE, PAGE, PAGE), PAGE)
  fd.unregister(region.address, region.length)
  uffd.unmap(region)
  fd.close()
})

t.test('UffdError names the errno and operation', async t => {
  const fd = uffd.Userfaultfd.create()
  fd.api(0)
  t.throws(() => fd.register(4096 * 3, 4096), { name: 'UffdError', code: 'FL_ERR_SYSCALL', errnoName: 'EINVAL' })
  t.throws(() => fd.register(123, 4096), { name: 'UffdError', message: /^UFFDIO_REGISTER failed: EINVAL \(0x7b\+4096\)$/ })
  fd.close()
})

t.test('sockets: 0600 listener, peer credentials, SCM_RIGHTS round trip', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'fl-sock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const path = join(dir, 's.sock')
  const listener = uffd.listenUnix(path)
  t.equal(statSync(path).mode & 0o777, 0o600)
  const client = uffd.connectUnix(path)
  const server = uffd.acceptConnection(listener)
  t.ok(server >= 0)
  const cred = uffd.peerCredentials(server)
  t.equal(cred.pid, process.pid)
  t.equal(cred.uid, process.getuid!())
  const sent = uffd.Userfaultfd.create()
  uffd.sendWithFds(client, Buffer.from('{"hello":1}'), [sent.fd])
  const rx = new uffd.MessageReceiver()
  const buf = Buffer.alloc(1024)
  const m = rx.receive(server, buf, 0)
  t.equal(buf.subarray(0, m.bytes).toString(), '{"hello":1}')
  t.equal(m.fds.length, 1)
  t.ok(uffd.isUserfaultfd(m.fds[0]), 'received descriptor is the uffd')
  t.equal(rx.receive(server, buf, 0).bytes, -1, 'nothing more pending')
  uffd.closeFd(client)
  t.equal(rx.receive(server, buf, 0).bytes, 0, 'EOF after the peer closes')
  for (const f of [...m.fds, server, listener]) uffd.closeFd(f)
  sent.close()
})
