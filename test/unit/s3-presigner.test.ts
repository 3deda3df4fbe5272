import { Client } from 'minio';
import { S3Presigner } from '../../src/adapters/s3-presigner.ts';

describe('S3Presigner', () => {
  const cases = [
    { endpoint: 'http://127.0.0.1:9000', useSSL: false, port: 9000, region: 'us-east-1' },
    { endpoint: 'https://minio.internal', useSSL: true, port: undefined, region: 'eu-west-1' },
    { endpoint: 'https://s3.eu-central-1.amazonaws.com', useSSL: true, port: undefined, region: 'eu-central-1' },
  ];
  const keys = ['v/0f8e7c2a-1b2c-4d3e-8f90-123456789abc', "legacy/a b+c(1)!*~'x.png", 'é/ü/%41', 'a//b/'];
  const dates = [new Date('2026-11-26T23:59:59.999Z'), new Date('2026-11-27T00:00:00.000Z'), new Date('2027-02-03T04:05:06.000Z')];

  it.each(cases)('makes the MinIO client’s presigned GET and PUT URLs byte for byte ($endpoint)', async (c) => {
    const url = new URL(c.endpoint);
    const client = new Client({
      endPoint: url.hostname,
      port: c.port,
      useSSL: c.useSSL,
      accessKey: 'AKIA/EXAMPLE+key',
      secretKey: 'secret/with+chars=',
      region: c.region,
      pathStyle: true,
    });
    const presigner = new S3Presigner(c.endpoint, 'media-bucket', c.region, 'AKIA/EXAMPLE+key', 'secret/with+chars=');
    // Across a day boundary too: the cached signing key follows the date.
    for (const date of dates) {
      for (const key of keys) {
        for (const method of ['GET', 'PUT'] as const) {
          const expected = await client.presignedUrl(method, 'media-bucket', key, 900, {}, date);
          expect(presigner.url(method, key, 900, date)).toBe(expected);
        }
      }
    }
  });

  it('with no credentials (an anonymous backend) gives the plain path-style URL, which an anonymous client sends unsigned', () => {
    const presigner = new S3Presigner('http://127.0.0.1:9000', 'public-bucket', 'us-east-1', '', '');
    expect(presigner.url('PUT', 'a b/c(1)', 900)).toBe('http://127.0.0.1:9000/public-bucket/a%20b/c%281%29');
    expect(presigner.url('GET', 'v/x', 900)).not.toContain('X-Amz');
  });
});
