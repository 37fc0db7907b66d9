// A throwaway single-node Ceph cluster (scripts/ceph/start.sh: mon, memstore osd, radosgw on
// 127.0.0.1) for the object-store tests and benchmarks, with the S3 environment it prints.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { FaultlineError } from '../errors.js'
import { repoPath } from '../util/repo.js'

const SCRIPTS = repoPath('scripts/ceph')

export interface CephCluster {
  /** AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, FAULTLINE_CEPH_DIR. */
  env: Record<string, string>
  endpoint: string
  dir: string
  stop(): void
}

/** Starts a cluster (a few seconds); `stop()` kills it and removes its directory. */
export function startCephCluster(opts: { memMb?: number } = {}): Promise<CephCluster> {
  const script = join(SCRIPTS, 'start.sh')
  if (!existsSync(script)) return Promise.reject(new FaultlineError(`${script} is missing`))
  return new Promise((resolvePromise, reject) => {
    const child = spawn(script, [], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FAULTLINE_CEPH_MEM_MB: String(opts.memMb ?? 1024) },
    })
    let out = '',
      err = ''
    child.stdout.on('data', d => {
      out += d
    })
    child.stderr.on('data', d => {
      err += d
    })
    child.on('error', reject)
    child.on('close', code => {
      const line = out.trim().split('\n').pop() ?? ''
      if (code !== 0 || !line.startsWith('export ')) {
        const why =
          err
            .trim()
            .split('\n')
            .filter(l => l.startsWith('start.sh:'))
            .pop() ?? `exit ${code}`
        reject(new FaultlineError(`scripts/ceph/start.sh failed: ${why.replace(/^start.sh: /, '')} (install the packages with scripts/ceph/install.sh)`))
        return
      }
      const env: Record<string, string> = {}
      for (const kv of line.slice('export '.length).split(' ')) {
        const i = kv.indexOf('=')
        if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1)
      }
      const dir = env.FAULTLINE_CEPH_DIR
      resolvePromise({
        env,
        endpoint: env.AWS_ENDPOINT_URL_S3,
        dir,
        stop: () => {
          spawnSync(join(SCRIPTS, 'stop.sh'), [dir], { stdio: 'ignore' })
        },
      })
    })
  })
}
