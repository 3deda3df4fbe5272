import express from 'express';
import request from 'supertest';
import { BodyError, jsonBody } from '../../src/http/json-body.ts';

/** An app reading JSON bodies, answering a body error with its status, reason and message. */
function app() {
  const a = express();
  a.use(jsonBody({ limit: '1kb' }));
  a.post('/x', (req, res) => {
    res.json({ got: req.body as unknown });
  });
  a.use((err: unknown, _req: express.Request, res: express.Response, next: express.NextFunction) => {
    if (!(err instanceof BodyError)) return next(err);
    res.status(err.status).json({ reason: err.reason, message: err.message });
  });
  return a;
}

describe('JSON bodies', () => {
  it('valid JSON that is not an object (null, a number) is refused as such, not as invalid JSON', async () => {
    const post = (body: string) => request(app()).post('/x').set('Content-Type', 'application/json').send(body);
    const nul = await post('null');
    expect({ status: nul.status, body: nul.body }).toEqual({
      status: 400,
      body: { reason: 'not_an_object', message: 'the body must be a JSON object, not null' },
    });
    expect((await post('42')).body).toEqual({ reason: 'not_an_object', message: 'the body must be a JSON object, not a number' });
    expect((await post('{"a":')).body).toEqual({ reason: 'invalid_json', message: 'the body is not valid JSON' });
    expect((await post('{"a":1}')).body).toEqual({ got: { a: 1 } });
  });
});
