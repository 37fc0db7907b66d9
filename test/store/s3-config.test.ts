// s3:// URLs, where endpoint/region/keys come from, sizes, and how each S3 failure is
// classified (retried or not) and backed off.
import t from 'tap'
import { StoreArgumentError } from '../../src/store/errors.js'
import { backoffMs, classifyS3Error, DEFAULT_RETRY } from '../../src/store/retry.js'
import { parseS3Url, parseSize, resolveS3Settings } from '../../src/store/s3-config.js'

t.test('parseS3Url', async t => {
  t.same(parseS3Url('s3://snapshots/web-1.snap'), { bucket: 'snapshots', key: 'web-1.snap', url: 's3://snapshots/web-1.snap' })
  t.same(parseS3Url('s3://my.bucket-2/a/b/c.snap').key, 'a/b/c.snap')
  t.throws(() => parseS3Url('/tmp/mem.snap', '--snapshot'), /--snapshot \/tmp\/mem.snap: expected s3:\/\/BUCKET\/KEY/)
  t.throws(() => parseS3Url('s3://snapshots'), /no object key after the bucket/)
  t.throws(() => parseS3Url('s3://snapshots/'), /no object key/)
  t.throws(() => parseS3Url('s3://Bad_Bucket/k'), /bucket 'Bad_Bucket' is not a valid bucket name/)
  t.throws(() => parseS3Url('s3://ab/k'), StoreArgumentError)
})

t.test('endpoint: --endpoint beats AWS_ENDPOINT_URL_S3 beats AWS_ENDPOINT_URL; path style with an endpoint', async t => {
  const env = { AWS_ENDPOINT_URL: 'http://a:1', AWS_ENDPOINT_URL_S3: 'http://b:2/', AWS_ACCESS_KEY_ID: 'K', AWS_SECRET_ACCESS_KEY: 'S' }
  const s = resolveS3Settings({ endpoint: 'http://c:3' }, env)
  t.equal(s.endpoint, 'http://c:3')
  t.equal(s.endpointFrom, '--endpoint')
  t.equal(s.forcePathStyle, true)
  t.equal(resolveS3Settings({}, env).endpoint, 'http://b:2', 'trailing slash dropped')
  t.equal(resolveS3Settings({}, { ...env, AWS_ENDPOINT_URL_S3: '' }).endpoint, 'http://a:1')
  const aws = resolveS3Settings({}, {})
  t.equal(aws.endpoint, undefined)
  t.equal(aws.forcePathStyle, false, 'AWS itself: virtual-hosted style')
  t.equal(aws.region, 'us-east-1')
  t.equal(aws.credentials, undefined, 'no keys in the environment: the SDK chain decides')
  t.equal(resolveS3Settings({}, { AWS_DEFAULT_REGION: 'eu-west-3' }).region, 'eu-west-3')
  t.equal(resolveS3Settings({}, { AWS_REGION: 'ap-south-1', AWS_DEFAULT_REGION: 'eu-west-3' }).region, 'ap-south-1')
  t.same(resolveS3Settings({}, env).credentials, { accessKeyId: 'K', secretAccessKey: 'S', sessionToken: undefined })
  t.throws(() => resolveS3Settings({}, { AWS_ACCESS_KEY_ID: 'K' }), /AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not/)
  t.throws(() => resolveS3Settings({ endpoint: 'ftp://x' }, {}), /--endpoint ftp:\/\/x: expected an http:\/\/ or https:\/\/ URL/)
  t.throws(() => resolveS3Settings({}, { AWS_ENDPOINT_URL_S3: 'not a url' }), /AWS_ENDPOINT_URL_S3 not a url: not a URL/)
})

t.test('parseSize', async t => {
  t.equal(parseSize('4G', '--cache-size'), 4 * 2 ** 30)
  t.equal(parseSize('512M', 'x'), 512 * 2 ** 20)
  t.equal(parseSize('1.5GiB', 'x'), 1.5 * 2 ** 30)
  t.equal(parseSize('65536', 'x'), 65536)
  t.equal(parseSize('64k', 'x'), 65536)
  t.throws(() => parseSize('lots', '--cache-size'), /--cache-size lots: expected a size/)
  t.throws(() => parseSize('0', '--cache-size'), /must be a positive size/)
  t.throws(() => parseSize('99999999999999G', '--cache-size'), { message: '--cache-size 99999999999999G: too large (at most 1024T)' })
  t.throws(() => parseSize('2000T', '--cache-size'), { message: '--cache-size 2000T: too large (at most 1024T)' })
})

const s3err = (name: string, status?: number, code?: string) =>
  Object.assign(new Error('UnknownError'), { name, code, $metadata: status === undefined ? undefined : { httpStatusCode: status } })

t.test('classifyS3Error: what is retried and what fails at once', async t => {
  const cases: Array<[unknown, string, boolean, RegExp]> = [
    [s3err('NoSuchKey', 404), 'missing', false, /no such object \(NoSuchKey, HTTP 404\)/],
    [s3err('NoSuchBucket', 404), 'missing', false, /no such bucket/],
    [s3err('InvalidAccessKeyId', 403), 'denied', false, /wrong credentials: check AWS_ACCESS_KEY_ID/],
    [s3err('SignatureDoesNotMatch', 403), 'denied', false, /wrong credentials/],
    [s3err('AccessDenied', 403), 'denied', false, /access denied \(AccessDenied, HTTP 403\)/],
    [s3err('SlowDown', 503), 'throttled', true, /throttled \(SlowDown, HTTP 503\)/],
    [s3err('TooManyRequests', 429), 'throttled', true, /throttled/],
    [s3err('InternalError', 500), 'server', true, /server error \(InternalError, HTTP 500\)/],
    [s3err('ServiceUnavailable', 503), 'server', true, /server error/],
    [s3err('BadGateway', 502), 'server', true, /server error/],
    [s3err('RequestTimeout', 400), 'timeout', true, /timed the request out/],
    [s3err('PreconditionFailed', 412), 'invalid', false, /object changed while being served/],
    [s3err('InvalidRange', 416), 'invalid', false, /range past the end/],
    [s3err('PermanentRedirect', 301), 'invalid', false, /request refused/],
    [s3err('Error', undefined, 'ECONNREFUSED'), 'network', true, /network error \(ECONNREFUSED\)/],
    [s3err('Error', undefined, 'ECONNRESET'), 'network', true, /ECONNRESET/],
    [s3err('TimeoutError'), 'timeout', true, /no answer in time/],
    [s3err('CredentialsProviderError'), 'credentials', false, /no S3 credentials found/],
    [new Error('Unexpected end of XML'), 'network', true, /Unexpected end of XML/],
  ]
  for (const [err, kind, retry, detail] of cases) {
    const c = classifyS3Error(err)
    t.equal(c.kind, kind, `${(err as Error).name}: kind`)
    t.equal(c.retry, retry, `${(err as Error).name}: retry`)
    t.match(c.detail, detail)
  }
})

t.test('backoff: full jitter, doubling, capped', async t => {
  const o = { ...DEFAULT_RETRY, baseDelayMs: 100, maxDelayMs: 1000 }
  t.equal(backoffMs(1, o, 0), 0)
  t.equal(backoffMs(1, o, 0.999), 99)
  t.equal(backoffMs(2, o, 0.999), 199)
  t.equal(backoffMs(3, o, 0.5), 200)
  t.equal(backoffMs(10, o, 0.999), 999, 'capped at maxDelayMs')
})
