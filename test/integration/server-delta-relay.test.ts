/**
 * The delta relay's request to the maker replica (deltas/relay.ts) against a real HTTP server on
 * loopback standing for the maker: what is sent on (the device's Authorization and Range, the
 * relay mark, nothing else), which answers are passed on, and which mean "the maker cannot serve
 * it" (the relaying replica then makes the delta itself). The whole relay between two real
 * replicas is test/e2e/server-delta-replicas.test.ts.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { askMaker, DELTA_RELAYED_HEADER } from '../../src/lib/server/deltas/relay.js';
import { freePort } from '../support/server.js';
import { stubHttpServer } from '../support/stub-http.js';

describe('server delta relay: asking the maker replica', function () {
  this.timeout(20_000);
  const stub = stubHttpServer();
  const PATH = `/api/v3/delta/${'ab'.repeat(16)}/layers/1`;

  const body = async (res: http.IncomingMessage): Promise<Buffer> => {
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  };

  it('sends the device\'s Authorization and Range with the relay mark, and passes 200, 206 and 416 on with their headers', async () => {
    const seen: http.IncomingHttpHeaders[] = [];
    const file = Buffer.from('0123456789');
    stub.handle = (req, res) => {
      seen.push(req.headers);
      const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      if (!m) res.writeHead(200, { 'content-length': file.length }).end(file);
      else if (Number(m[1]) >= file.length) res.writeHead(416, { 'content-range': `bytes */${file.length}` }).end();
      else res.writeHead(206, { 'content-range': `bytes ${m[1]}-9/10` }).end(file.subarray(Number(m[1])));
    };
    const whole = await askMaker(stub.base, PATH, { authorization: 'Bearer devkey' }, new AbortController().signal);
    assert.ok(whole.ok);
    assert.equal(whole.response.statusCode, 200);
    assert.deepEqual(await body(whole.response), file);
    const part = await askMaker(stub.base, PATH, { authorization: 'Bearer devkey', range: 'bytes=4-' }, new AbortController().signal);
    assert.ok(part.ok);
    assert.equal(part.response.statusCode, 206);
    assert.equal(part.response.headers['content-range'], 'bytes 4-9/10');
    assert.equal((await body(part.response)).toString(), '456789');
    const past = await askMaker(stub.base, PATH, { authorization: 'Bearer devkey', range: 'bytes=10-' }, new AbortController().signal);
    assert.ok(past.ok);
    assert.equal(past.response.statusCode, 416);
    await body(past.response);
    assert.equal(seen[0]?.authorization, 'Bearer devkey');
    assert.equal(seen[0]?.[DELTA_RELAYED_HEADER], '1');
    assert.equal(seen[0]?.range, undefined, 'no Range when the device sent none');
    assert.equal(seen[1]?.range, 'bytes=4-');
  });

  it('any other answer, or no answer, is a reason (the relaying replica makes the delta itself)', async () => {
    for (const status of [404, 401, 500, 503]) {
      stub.handle = (_req, res) => res.writeHead(status, { 'content-type': 'application/json' }).end('{"message":"no"}');
      const answer = await askMaker(stub.base, PATH, {}, new AbortController().signal);
      assert.deepEqual(answer, { ok: false, reason: `${stub.base} answered ${status}` });
    }
    const closed = `http://127.0.0.1:${await freePort()}`;
    const refused = await askMaker(closed, PATH, {}, new AbortController().signal);
    assert.deepEqual(refused, { ok: false, reason: `cannot reach ${closed} (ECONNREFUSED)` });
  });

  it('the device going away (the signal) ends the request to the maker', async () => {
    let closedOnMaker: () => void = () => undefined;
    const gone = new Promise<void>((resolve) => (closedOnMaker = resolve));
    stub.handle = (req, res) => {
      res.writeHead(200, { 'content-length': 1_000_000 });
      res.write(Buffer.alloc(1000));
      req.socket.once('close', () => closedOnMaker());
    };
    const abort = new AbortController();
    const answer = await askMaker(stub.base, PATH, {}, abort.signal);
    assert.ok(answer.ok);
    answer.response.on('error', () => undefined);
    abort.abort();
    await gone;
  });
});
