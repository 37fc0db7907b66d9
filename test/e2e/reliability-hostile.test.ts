// Bad input on the wire, as a hostile or broken client sends it: each gets an error reply
// naming what is wrong, nothing it sent stays open in the server, and the server goes on
// serving well-behaved guests (one is served while a silent client holds a connection).
// Then the socket's access rules: mode 0600, and the peer's uid checked with SO_PEERCRED.
import t from 'tap'
import { chmodSync, closeSync, statSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import * as uffd from '../../src/uffd/index.js'
import { makeImage, runGuest, scratchDir } from './harness.js'
import { connect, exchange, fdCount, notAUserfaultfd, readReply, startFastServer, waitFor } from './reliability-helpers.js'

const PAGE = 4096

t.test('malformed handshakes get error replies; the server keeps serving', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 4)
  const socket = join(dir, 's.sock')
  const server = await startFastServer(t, { snapshotPath: img.snap, socketPath: socket, handshakeTimeoutMs: 1500, warmWorkers: 2 })
  const logs: string[] = []
  server.on('log', l => logs.push(l))
  // The clients' memory is this process's: a real mapping, so only the case under test is wrong.
  const mem = uffd.mapAnonymous(1 << 20)
  t.teardown(() => uffd.unmap(mem))
  const region = (o: Partial<Record<string, unknown>> = {}) => ({ base_host_virt_addr: mem.address, size: 1 << 20, offset: 0, page_size: PAGE, ...o })
  const faultline = (regions: unknown[]) => JSON.stringify({ version: 1, register: true, regions })
  const freshUffd = () => uffd.openUserfaultfd()
  const registeredUffd = () => {
    const u = uffd.Userfaultfd.create()
    u.api(0)
    u.register(mem.address, mem.length)
    return u.fd
  }
  // Just above the kernel's lowest mappable address: no process here maps anything there.
  const unmappedAddress = 0x20000

  // [case, body, descriptors to send (created fresh for each), expected error]
  const cases: Array<[string, string | Buffer, Array<() => number>, RegExp]> = [
    ['not JSON', 'hello, server\n', [freshUffd], /^handshake is not JSON \(14 bytes starting "hello, server\\n"\)$/],
    ['binary garbage', Buffer.from([0xff, 0x00, 0x13, 0x37, 0x0a]), [freshUffd], /^handshake is not JSON/],
    ['JSON but neither form', '42', [freshUffd], /^handshake must be a JSON array \(Firecracker\) or object \(faultline\)$/],
    ['no file descriptor', faultline([region()]), [], /^handshake carried no file descriptor \(send the userfaultfd with SCM_RIGHTS\)$/],
    ['a descriptor that is not a uffd', faultline([region()]), [notAUserfaultfd], /^the file descriptor sent is not a userfaultfd$/],
    ['two descriptors', faultline([region()]), [freshUffd, freshUffd], /^handshake carried 2 file descriptors; exactly one \(the userfaultfd\) is expected$/],
    ['wrong version', JSON.stringify({ version: 2, regions: [region()] }), [freshUffd], /^handshake "version" must be 1, got 2$/],
    ['no regions', faultline([]), [freshUffd], /^handshake has no regions$/],
    ['missing field', faultline([{ base_host_virt_addr: mem.address, offset: 0, page_size: PAGE }]), [freshUffd], /^region 0: missing "size"$/],
    ['size as a string', faultline([region({ size: '4096' })]), [freshUffd], /^region 0: "size" must be a non-negative integer, got "4096"$/],
    ['negative offset', faultline([region({ offset: -4096 })]), [freshUffd], /^region 0: "offset" must be a non-negative integer, got -4096$/],
    [
      'fractional address',
      faultline([region({ base_host_virt_addr: mem.address + 0.5 })]),
      [freshUffd],
      /^region 0: "base_host_virt_addr" must be a non-negative integer/,
    ],
    [
      'unaligned address',
      faultline([region({ base_host_virt_addr: mem.address + 512, size: PAGE })]),
      [freshUffd],
      /^region 0: address 0x[0-9a-f]+ and size 4096 must be multiples of its page size 4096$/,
    ],
    ['unaligned offset', faultline([region({ offset: 100 })]), [freshUffd], /^region 0: offset 100 is not a multiple of its page size 4096$/],
    ['wrong page size', faultline([region({ page_size: 1000 })]), [freshUffd], /^region 0: page size 1000 does not fit the snapshot's 4096-byte pages$/],
    [
      'overlapping regions',
      faultline([region({ size: 8 * PAGE }), region({ base_host_virt_addr: mem.address + 4 * PAGE, size: 8 * PAGE, offset: 65536 })]),
      [freshUffd],
      /^regions overlap at address 0x[0-9a-f]+$/,
    ],
    [
      'overlapping snapshot ranges',
      faultline([region({ size: 8 * PAGE }), region({ base_host_virt_addr: mem.address + 8 * PAGE, size: 8 * PAGE, offset: 4 * PAGE })]),
      [freshUffd],
      /^regions overlap in the snapshot at offset 16384$/,
    ],
    [
      "past the snapshot's end",
      faultline([region({ offset: 4 * 2 ** 20 - PAGE, size: 2 * PAGE })]),
      [freshUffd],
      /^region 0: offset 4190208 \+ size 8192 is past the snapshot's end \(4194304 bytes\)$/,
    ],
    [
      'memory the client does not have',
      faultline([region({ base_host_virt_addr: unmappedAddress })]),
      [freshUffd],
      /^region 0: 0x[0-9a-f]+ is not mapped in the guest's address space$/,
    ],
    [
      'Firecracker form, memory not registered',
      JSON.stringify([region()]),
      [freshUffd],
      /^region 0: 0x[0-9a-f]+ is not registered with the userfaultfd \(UFFDIO_REGISTER, missing mode\)/,
    ],
    ['faultline form, uffd already initialised', faultline([region()]), [registeredUffd], /^the userfaultfd sent is already initialised \(UFFDIO_API\)/],
    ['huge message', '[' + ' '.repeat(100_000) + ']', [freshUffd], /^handshake larger than 65536 bytes$/],
  ]

  const fds0 = fdCount()
  for (const [name, body, makeFds, expected] of cases) {
    const fds = makeFds.map(make => make())
    const r = await exchange(socket, body, fds)
    for (const f of fds) closeSync(f)
    t.equal(r.reply?.ok, false, `${name}: refused`)
    t.match(r.reply?.error, expected, `${name}: ${r.reply?.error}`)
  }

  t.test('a client that connects and says nothing is answered at the deadline, while others are served', async t => {
    const silent = connect(socket)
    const started = Date.now()
    const meanwhile = await runGuest(['--socket', socket, '--mib', '4', '--workload', 'random:0.5', '--verify', img.raw])
    t.equal(meanwhile.code, 0, meanwhile.stderr)
    t.equal(meanwhile.report?.mismatches, 0, 'a guest was served while the silent client held its connection')
    const r = await readReply(silent)
    uffd.closeFd(silent)
    t.match(r.reply?.error, /^no complete handshake within 1500 ms$/)
    // The server's clock starts at accept, which can come a moment before `started` is read.
    t.ok(Date.now() - started >= 1450, 'answered at the deadline, not before')
  })

  t.test('a client that sends half a handshake and hangs up is dropped', async t => {
    const before = server.rejected
    const fd = connect(socket)
    uffd.sendWithFds(fd, Buffer.from('{"version":1,"regi'), [])
    uffd.closeFd(fd)
    t.ok(await waitFor(() => server.rejected === before + 1), 'counted as rejected')
  })

  t.test('then a well-behaved guest, both forms', async t => {
    for (const form of ['faultline', 'firecracker']) {
      const r = await runGuest(['--socket', socket, '--mib', '4', '--handshake', form, '--workload', 'random:0.5', '--verify', img.raw])
      t.equal(r.code, 0, r.stderr)
      t.equal(r.report?.mismatches, 0)
    }
  })

  t.test('nothing a client sent stayed open in the server', async t => {
    let fds = 0
    await waitFor(() => (fds = fdCount()) === fds0, 10000)
    t.equal(fds, fds0, `${fds0} descriptors before the hostile clients, ${fds} after`)
    t.equal(server.rejected, cases.length + 2, 'every hostile client counted')
    t.notOk(
      logs.some(l => /worker (crashed|failed)/.test(l)),
      'no worker crashed',
    )
  })
})

t.test('access: the socket is 0600 and peers of another uid are refused unless allowed', async t => {
  const dir = scratchDir(t)
  const img = await makeImage(dir, 1)
  chmodSync(dir, 0o711) // let uid 65534 reach the socket's directory: only the socket's own mode protects it
  const strict = join(dir, 'strict.sock'),
    open = join(dir, 'open.sock'),
    allowing = join(dir, 'allowing.sock')
  await startFastServer(t, { snapshotPath: img.snap, socketPath: strict })
  await startFastServer(t, { snapshotPath: img.snap, socketPath: open })
  await startFastServer(t, { snapshotPath: img.snap, socketPath: allowing, allowUids: [65534] })
  t.equal(statSync(strict).mode & 0o777, 0o600, 'created with mode 0600')
  t.equal(statSync(strict).uid, process.getuid!(), "owned by the server's uid")

  /** What a client of uid/gid 65534 (nobody) gets from `socket`: a connect error or the reply
   * to `body` (sent unless empty: the uid is checked before anything is read). */
  const asNobody = (socket: string, body = '') =>
    new Promise<string>((resolve, reject) => {
      const script = `
      const c = require('net').createConnection(process.argv[1])
      let text = ''
      c.on('connect', () => { if (process.argv[2]) c.write(process.argv[2]) })
      c.on('data', d => { text += d })
      c.on('end', () => { process.stdout.write(text); process.exit(0) })
      c.on('error', e => { process.stdout.write('error ' + e.code); process.exit(0) })`
      const child = spawn(process.execPath, ['-e', script, socket, body], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      child.stdout.on('data', d => {
        out += d
      })
      child.on('error', reject)
      child.on('exit', () => resolve(out.trim()))
    })

  t.equal(await asNobody(strict), 'error EACCES', 'mode 0600: another uid cannot even connect')
  // Were the socket's mode widened (by mistake or a bind mount), SO_PEERCRED still refuses.
  chmodSync(open, 0o666)
  const refused = JSON.parse(await asNobody(open))
  t.same(refused, { ok: false, error: `peer uid 65534 is not allowed (allowed: ${process.getuid!()}; see --allow-uid)` })
  // --allow-uid 65534: the socket lets others connect (SO_PEERCRED does the refusing), and
  // uid 65534 gets past the uid check, refused for what it sent (no uffd) instead.
  t.equal(statSync(allowing).mode & 0o777, 0o666, 'with --allow-uid, created connectable by others')
  const allowed = JSON.parse(await asNobody(allowing, '{"version":1,"regions":[]}'))
  t.same(allowed, { ok: false, error: 'handshake carried no file descriptor (send the userfaultfd with SCM_RIGHTS)' })
})
