// The /proc parsers: mapping ranges (maps), missing-mode registrations (smaps VmFlags), and a
// userfaultfd's fdinfo API line.
import t from 'tap'
import { mappedRanges, missingModeRanges, parseUffdFdinfo } from '../../src/uffd/procfs.js'

t.test('uffd fdinfo: initialised or not, and its features', async t => {
  const fdinfo = (api: string) => `pos:\t0\nflags:\t02004000\nmnt_id:\t17\nino:\t1\npending:\t0\ntotal:\t0\nAPI:\t${api}\n`
  t.same(parseUffdFdinfo(fdinfo('aa:0:80000000000001ff')), { initialized: false, features: 0 })
  t.same(parseUffdFdinfo(fdinfo('aa:80000000:80000000000001ff')), { initialized: true, features: 0 })
  t.same(parseUffdFdinfo(fdinfo('aa:8000400a:80000000000001ff')), { initialized: true, features: 0x400a })
  t.equal(parseUffdFdinfo('pos:\t0\nflags:\t02\n'), undefined, 'not a uffd')
})

t.test("maps: every mapping's range, pathnames and trailing blanks ignored", async t => {
  const maps = '7f0000000000-7f0000010000 rw-p 00000000 00:00 0\n7f0000030000-7f0000040000 r--p 00000000 08:01 1234 /usr/lib/libc.so.6\n\n'
  t.same(mappedRanges(maps), [
    [0x7f0000000000, 0x7f0000010000],
    [0x7f0000030000, 0x7f0000040000],
  ])
  t.same(mappedRanges(''), [])
})

t.test('smaps: only the mappings whose VmFlags include um', async t => {
  const entry = (start: number, flags: string) =>
    `${start.toString(16)}-${(start + 0x10000).toString(16)} rw-p 00000000 00:00 0\nSize:  64 kB\nVmFlags: ${flags}\n`
  const smaps = entry(0x10000, 'rd wr um') + entry(0x20000, 'rd wr uw') + entry(0x30000, 'rd wr umx') + entry(0x40000, 'um rd')
  t.same(missingModeRanges(smaps), [
    [0x10000, 0x20000],
    [0x40000, 0x50000],
  ])
})
