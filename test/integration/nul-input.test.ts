// PostgreSQL cannot store the NUL character in text or jsonb. Inputs refuse it with 400 (not a 503
// that blames the database), and an audit event that carries one anyway is still written, so it
// can never block the events spooled after it.
import request from 'supertest';
import { startS3Server, type S3ServerHandle } from '../../support/s3-server.ts';
import { mediaEnv, OPERATOR_TOKEN, startInstance, type TestInstance } from '../support/instance.ts';

const auth = { Authorization: `Bearer ${OPERATOR_TOKEN}` };

describe('the NUL character', () => {
  let s3: S3ServerHandle;
  let api: TestInstance;
  beforeAll(async () => {
    s3 = await startS3Server({ bucket: 'nul-media' });
    api = await startInstance({ ...mediaEnv('PRIMARY', s3) });
  });
  afterAll(async () => {
    await api.stop();
    await s3.destroy();
  });

  it('is refused with 400 in admin bodies, in values and in keys, and changes nothing', async () => {
    const before = (await request(api.url).get('/admin/dr/state').set(auth)).body.version;
    const readOnly = await request(api.url).put('/admin/read-only').set(auth).send({ enabled: true, reason: 'why\u0000', ttlSeconds: 60 });
    expect(readOnly.status).toBe(400);
    expect((await request(api.url).get('/admin/dr/state').set(auth)).body.version).toBe(before);
    const incident = await request(api.url)
      .post('/admin/incidents')
      .set(auth)
      .send({ severity: 'P3', title: 'bad\u0000title', components: ['api'], summary: 'x' });
    expect(incident.status).toBe(400);
    const key = await request(api.url)
      .post('/admin/incidents')
      .set(auth)
      .set('Content-Type', 'application/json')
      .send('{"severity":"P3","title":"t","components":["api"],"summary":"x","a\\u0000":1}');
    expect(key.status).toBe(400);
  });

  it('in an audit event from inside the service, is written as U+FFFD instead of failing the write', async () => {
    const action = `test.nul.${Date.now()}`;
    await api.service.audit.record({
      actor: 'test',
      role: null,
      action,
      result: 'failed',
      before: null,
      after: null,
      detail: { error: 'pg_ctl: \u0000 weird output' },
      requestId: null,
    });
    expect(await api.service.audit.pending()).toBe(0);
    const events = (await request(api.url).get('/admin/audit?limit=50').set(auth)).body.events as {
      action: string;
      detail: { error: string };
    }[];
    expect(events.find((e) => e.action === action)?.detail.error).toBe('pg_ctl: \uFFFD weird output');
  });
});
