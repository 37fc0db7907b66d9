// `faultline vm` argument handling: what is refused before any QEMU starts, and how.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { vmCommand } from '../../src/cli/vm.js'

const dir = mkdtempSync(join(tmpdir(), 'fl-cli-vm-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

t.test('subcommands', async t => {
  const errors: string[] = []
  const origError = console.error,
    origLog = console.log
  console.error = (s: string) => {
    errors.push(s)
  }
  console.log = () => {}
  t.teardown(() => {
    console.error = origError
    console.log = origLog
  })
  t.equal(await vmCommand([]), 2, 'no subcommand: usage, status 2')
  t.equal(await vmCommand(['--help']), 0)
  t.equal(await vmCommand(['boot']), 2)
  t.match(errors.join('\n'), /unknown subcommand 'boot'/)
})

t.test('refused options, one line each', async t => {
  await t.rejects(vmCommand(['snapshot']), /vm snapshot: --dir VMDIR is required/)
  await t.rejects(vmCommand(['snapshot', '--dir', dir, '--ram', 'big']), /--ram big: expected a size such as 256M or 4G/)
  await t.rejects(vmCommand(['snapshot', '--dir', dir, '--ram', '64M']), /--ram: 64 MiB is too small for the test guest/)
  await t.rejects(vmCommand(['snapshot', '--dir', dir, '--qmp', '/x.sock', '--ram', '1G']), /--ram is for the test guest, not with --qmp/)
  await t.rejects(vmCommand(['snapshot', '--dir', dir, '--quit']), /--ram-id and --quit go with --qmp/)
  await t.rejects(vmCommand(['snapshot', '--dir', dir, '--qmp', join(dir, 'none.sock')]), /--qmp .*none.sock: no such socket/)
  await t.rejects(vmCommand(['resume']), /vm resume: --dir VMDIR is required/)
  await t.rejects(vmCommand(['resume', '--dir', dir, '--mode', 'lazy']), /--mode lazy: expected one of eager, mmap, faultline/)
  await t.rejects(vmCommand(['resume', '--dir', dir]), /not a VM directory \(no vm.json\)/)
  await t.rejects(vmCommand(['resume', '--dir', dir, '--bogus']), /Unknown option '--bogus'/)
})
