// Waits until an S3 endpoint answers a SigV4-signed ListBuckets with 200 (no SDK needed).
//
// Usage: node scripts/ceph/s3check.mjs ENDPOINT ACCESS_KEY SECRET_KEY [TIMEOUT_MS] [WATCH_PID]
//   Exits 0 once ListBuckets succeeds; exits 1 after TIMEOUT_MS (default 30000) with the last
//   error on stderr; exits 3 as soon as process WATCH_PID (the gateway) is gone or a zombie.
//   A 403 (e.g. InvalidAccessKeyId: the user is not created yet) is retried like a refused
//   connection, so wrong keys show up as a timeout naming the last S3 error code.
import { createHash, createHmac } from 'node:crypto'
import http from 'node:http'
import { readFileSync } from 'node:fs'

const [endpoint, accessKey, secretKey, timeoutArg, watchPid] = process.argv.slice(2)
if (!endpoint || !accessKey || !secretKey) {
  console.error('usage: s3check.mjs ENDPOINT ACCESS_KEY SECRET_KEY [TIMEOUT_MS]')
  process.exit(2)
}
const deadline = Date.now() + Number(timeoutArg ?? 30000)
const url = new URL(endpoint)
const region = 'us-east-1'

const sha256Hex = s => createHash('sha256').update(s).digest('hex')
const hmac = (key, s) => createHmac('sha256', key).update(s).digest()

function signedListBuckets() {
  const amzDate = new Date()
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '')
  const day = amzDate.slice(0, 8)
  const payloadHash = sha256Hex('')
  const headers = { host: url.host, 'x-amz-content-sha256': payloadHash, 'x-amz-date': amzDate }
  const signed = Object.keys(headers).sort()
  const canonical = ['GET', '/', '', ...signed.map(h => `${h}:${headers[h]}`), '', signed.join(';'), payloadHash].join('\n')
  const scope = `${day}/${region}/s3/aws4_request`
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonical)].join('\n')
  let key = hmac(`AWS4${secretKey}`, day)
  for (const part of [region, 's3', 'aws4_request']) key = hmac(key, part)
  const signature = createHmac('sha256', key).update(toSign).digest('hex')
  headers.authorization = `AWS4-HMAC-SHA256 Credential=${accessKey}/${scope}, SignedHeaders=${signed.join(';')}, Signature=${signature}`
  return headers
}

function attempt() {
  return new Promise(resolve => {
    const req = http.request({ host: url.hostname, port: url.port, path: '/', method: 'GET', headers: signedListBuckets(), timeout: 2000 }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', d => {
        body += d
      })
      res.on('end', () => {
        if (res.statusCode === 200) resolve(null)
        else resolve(`HTTP ${res.statusCode} ${(/<Code>([^<]*)<\/Code>/.exec(body) ?? [])[1] ?? ''}`.trim())
      })
    })
    req.on('timeout', () => req.destroy(new Error('request timed out after 2000 ms')))
    req.on('error', e => resolve(e.code ?? e.message))
    req.end()
  })
}

function watchedAlive() {
  if (!watchPid) return true
  try {
    const stat = readFileSync(`/proc/${watchPid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  } catch {
    return false
  }
}

let lastError = 'no attempt'
while (Date.now() < deadline) {
  if (!watchedAlive()) {
    console.error(`process ${watchPid} exited (last S3 answer: ${lastError})`)
    process.exit(3)
  }
  lastError = await attempt()
  if (lastError === null) process.exit(0)
  await new Promise(r => setTimeout(r, 50))
}
console.error(`S3 at ${endpoint} not ready: ${lastError}`)
process.exit(1)
