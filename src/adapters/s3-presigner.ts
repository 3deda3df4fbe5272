import { createHash, createHmac } from 'node:crypto';

/** Percent-encoding as AWS Signature V4 (and the MinIO client) expects: RFC 3986 unreserved characters kept. */
function uriEscape(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Presigned S3 URLs (AWS Signature V4, query string, UNSIGNED-PAYLOAD, only `host` signed), path
 * style, byte for byte what the MinIO client's presignedUrl makes for the same instant (a test
 * compares them). The client derives the signing key (four HMACs) and rebuilds its request options
 * on every call; here the key is derived once a day (it depends only on the date, region and
 * secret), which matters on the upload path, where every upload presigns its own version name.
 */
export class S3Presigner {
  private readonly host: string;
  private readonly origin: string;
  private keyDate = '';
  private key: Buffer | undefined;

  constructor(
    endpoint: string,
    private readonly bucket: string,
    private readonly region: string,
    private readonly accessKey: string,
    private readonly secretKey: string,
  ) {
    const url = new URL(endpoint);
    this.host = url.host;
    this.origin = `${url.protocol}//${url.host}`;
  }

  /** The request path (with the signed query) to send to the endpoint, for `method` on `key`. */
  path(method: 'GET' | 'PUT', key: string, expiresSeconds: number, now = new Date()): string {
    const iso = now.toISOString();
    const amzDate = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
    const day = amzDate.slice(0, 8);
    const scope = `${day}/${this.region}/s3/aws4_request`;
    const resource = `/${this.bucket}/${uriEscape(key).replace(/%2F/g, '/')}`;
    // Anonymous access (no credentials configured): a plain URL, as an anonymous client sends it.
    if (this.accessKey === '') return resource;
    const query =
      `X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${uriEscape(`${this.accessKey}/${scope}`)}` +
      `&X-Amz-Date=${amzDate}&X-Amz-Expires=${expiresSeconds}&X-Amz-SignedHeaders=host`;
    const canonical = `${method}\n${resource}\n${query}\nhost:${this.host}\n\nhost\nUNSIGNED-PAYLOAD`;
    const toSign = `AWS4-HMAC-SHA256\n${amzDate}\n${scope}\n${createHash('sha256').update(canonical).digest('hex')}`;
    const signature = createHmac('sha256', this.signingKey(day)).update(toSign).digest('hex');
    return `${resource}?${query}&X-Amz-Signature=${signature}`;
  }

  /** The whole URL (for comparison with other presigners). */
  url(method: 'GET' | 'PUT', key: string, expiresSeconds: number, now = new Date()): string {
    return `${this.origin}${this.path(method, key, expiresSeconds, now)}`;
  }

  private signingKey(day: string): Buffer {
    if (this.key === undefined || this.keyDate !== day) {
      const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();
      this.key = hmac(hmac(hmac(hmac(`AWS4${this.secretKey}`, day), this.region), 's3'), 'aws4_request');
      this.keyDate = day;
    }
    return this.key;
  }
}
