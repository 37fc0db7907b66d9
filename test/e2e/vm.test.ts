// Real QEMU end to end (the cases: vm-cases.ts). Without QEMU, busybox, cpio or a guest kernel
// it fails with one line naming the packages and the command that installs them.
import t from 'tap'
import { missingTestDeps } from './deps.js'

const missing = missingTestDeps('qemu')
if (missing) t.fail(missing)
else await import('./vm-cases.js')
