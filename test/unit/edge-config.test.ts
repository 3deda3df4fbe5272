import { adminAllowList, ConfigError, loadConfig } from '../../src/config/config.ts';

const minimal = { DATABASE_URL: 'postgresql://app:pw@db:5432/sav3', MEDIA_PRIMARY_ENDPOINT: 'http://minio:9000' };

function problemsOf(env: NodeJS.ProcessEnv): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('edge configuration: METRICS_PORT and ADMIN_ALLOWED_CIDRS', () => {
  it('serves metrics on PORT and admits only loopback to /admin when neither is set (or the list is empty)', () => {
    for (const env of [minimal, { ...minimal, ADMIN_ALLOWED_CIDRS: '' }]) {
      const config = loadConfig(env);
      expect(config.metricsPort).toBeUndefined();
      expect(config.adminAllowList.ranges).toEqual(['loopback']);
      expect(['127.0.0.1', '127.9.8.7', '::1', '::ffff:127.0.0.1'].map((a) => config.adminAllowList.allows(a))).toEqual([true, true, true, true]);
      expect(['10.0.0.1', '172.17.0.1', '192.168.1.1', '::ffff:10.0.0.1', 'fd00::1', '', undefined, 'not-an-ip'].map((a) => config.adminAllowList.allows(a))).toEqual(Array(8).fill(false));
    }
  });

  it('admits exactly the configured ranges, IPv4 and IPv6, and then no longer loopback', () => {
    const config = loadConfig({ ...minimal, METRICS_PORT: '9100', ADMIN_ALLOWED_CIDRS: ' 10.1.2.0/24, 192.0.2.7 ,fd00:1::/32' });
    expect(config.metricsPort).toBe(9100);
    expect(config.adminAllowList.ranges).toEqual(['10.1.2.0/24', '192.0.2.7/32', 'fd00:1::/32']);
    const allows = (a: string) => config.adminAllowList.allows(a);
    expect(['10.1.2.0', '10.1.2.255', '::ffff:10.1.2.9', '192.0.2.7', 'fd00:1:ffff::1'].map(allows)).toEqual([true, true, true, true, true]);
    expect(['10.1.3.0', '10.1.1.255', '192.0.2.8', 'fd00:2::1', '127.0.0.1', '::1'].map(allows)).toEqual([false, false, false, false, false, false]);
  });

  it('refuses malformed values with one line each, never quoting them', () => {
    for (const bad of ['10.0.0.0/33', 'example.com', '10.0.0.0/8/1', '10.0.0.0/x', '::1/129', '300.1.1.1']) {
      expect(problemsOf({ ...minimal, ADMIN_ALLOWED_CIDRS: bad })).toEqual(['ADMIN_ALLOWED_CIDRS: must be comma-separated IP addresses or CIDR ranges such as 10.1.2.0/24']);
    }
    expect(problemsOf({ ...minimal, METRICS_PORT: '0' })).toEqual(['METRICS_PORT: must be a whole number from 1 to 65535']);
    expect(problemsOf({ ...minimal, METRICS_PORT: 'abc' })).toEqual(['METRICS_PORT: must be a whole number from 1 to 65535']);
  });

  it('adminAllowList(undefined) is loopback only', () => {
    expect(adminAllowList(undefined).allows('127.0.0.1')).toBe(true);
    expect(adminAllowList(undefined).allows('192.0.2.1')).toBe(false);
  });
});
