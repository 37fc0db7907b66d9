// Snapshots in a real object store (a single-node Ceph cluster) end to end (the cases:
// remote-cases.ts). Without Ceph it fails with one line naming the packages to install.
import t from 'tap'
import { missingTestDeps } from './deps.js'

const missing = missingTestDeps('ceph')
if (missing) t.fail(missing)
else await import('./remote-cases.js')
