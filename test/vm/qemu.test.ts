// buildQemuArgs and parseRamMiB: the QEMU command line for each RAM backend, and RAM sizes.
import t from 'tap'
import { buildQemuArgs, defaultWorkloadMiB, faultlineEnv, parseRamMiB, type QemuLaunchOptions } from '../../src/vm/qemu.js'

const image = { kernel: '/k/vmlinuz', initrd: '/k/initrd.cpio', cmdline: 'console=ttyS0 quiet' }
const base: QemuLaunchOptions = { name: 'g', image, ramMiB: 256, ram: { kind: 'ram' } }

/** The value following `flag` (the first occurrence). */
function after(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag)
  return i < 0 ? undefined : args[i + 1]
}

t.test('anonymous RAM (eager, faultline): memory-backend-ram named pc.ram of the RAM size', async t => {
  const args = buildQemuArgs(base, '/tmp/q.sock')
  t.equal(after(args, '-object'), 'memory-backend-ram,id=pc.ram,size=256M')
  t.equal(after(args, '-machine'), 'pc,memory-backend=pc.ram')
  t.equal(after(args, '-m'), '256M')
  t.equal(after(args, '-accel'), 'tcg')
  t.equal(after(args, '-qmp'), 'unix:/tmp/q.sock,server=on,wait=off')
  t.equal(after(args, '-append'), `console=ttyS0 quiet fl.mib=${defaultWorkloadMiB(256)}`)
  t.equal(defaultWorkloadMiB(256), 160)
  t.notOk(args.includes('-incoming'), 'no -incoming for a fresh boot')
})

t.test('a shared RAM file (snapshot source) and a private one (mmap resume)', async t => {
  const shared = buildQemuArgs({ ...base, ram: { kind: 'file', path: '/vm/ram.img', share: true } }, '/q')
  t.equal(after(shared, '-object'), 'memory-backend-file,id=pc.ram,size=256M,mem-path=/vm/ram.img,share=on')
  const priv = buildQemuArgs({ ...base, ram: { kind: 'file', path: '/vm/a,b.img', share: false } }, '/q')
  t.equal(after(priv, '-object'), 'memory-backend-file,id=pc.ram,size=256M,mem-path=/vm/a,,b.img,share=off', 'commas in paths are doubled')
})

t.test('incoming: wait for migrate-incoming and stay paused; extra args go last', async t => {
  const args = buildQemuArgs({ ...base, incoming: true, workloadMiB: 32, accel: 'kvm', extraArgs: ['-d', 'guest_errors'] }, '/q')
  t.equal(after(args, '-incoming'), 'defer')
  t.ok(args.includes('-S'))
  t.same(args.slice(-2), ['-d', 'guest_errors'])
  t.equal(after(args, '-append'), 'console=ttyS0 quiet fl.mib=32')
  t.equal(after(args, '-accel'), 'kvm')
})

t.test('the shim environment', async t => {
  t.same(faultlineEnv({ shimPath: '/s.so', socketPath: '/p.sock', ramBytes: 256 << 20 }), {
    LD_PRELOAD: '/s.so',
    FAULTLINE_SOCKET: '/p.sock',
    FAULTLINE_RAM_SIZE: String(256 << 20),
    FAULTLINE_OFFSET: '0',
  })
  t.equal(faultlineEnv({ shimPath: '/s.so', socketPath: '/p', ramBytes: 4096, offsetBytes: 8192 }).FAULTLINE_OFFSET, '8192')
})

t.test('RAM sizes as QEMU reads -m', async t => {
  t.equal(parseRamMiB('256'), 256)
  t.equal(parseRamMiB('256M'), 256)
  t.equal(parseRamMiB('512MiB'), 512)
  t.equal(parseRamMiB('4G'), 4096)
  t.equal(parseRamMiB('1.5g'), 1536)
  t.throws(() => parseRamMiB('lots'), /--ram lots: expected a size such as 256M or 4G/)
  t.throws(() => parseRamMiB('0'), /--ram 0: must be a positive whole number of MiB/)
  t.throws(() => parseRamMiB('0.5M', '--sizes'), /--sizes 0.5M: must be a positive whole number of MiB/)
  t.throws(() => parseRamMiB('4T'), /expected a size/)
})
