import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CloudHttpError, CloudUnreachableError, createCloudClient } from '../../src/lib/agent/cloud/client.js';

/**
 * The agent's cloud client (node:http, not fetch) against a real HTTP server on loopback: what it
 * sends, what it makes of each kind of answer, and how a call that cannot finish ends.
 */
describe('agent cloud client over node:http', function () {
  this.timeout(20_000);
  let server: http.Server;
  let base: string;
  let handle: (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void;

  before(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => handle(req, body, res));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('sends the device key and the JSON body, and reads a target with its etag (a 304 is no change)', async () => {
    const seen: { method?: string; url?: string; auth?: string; type?: string; length?: string; body: string }[] = [];
    handle = (req, body, res) => {
      seen.push({ method: req.method, url: req.url, auth: req.headers.authorization, type: req.headers['content-type'], length: req.headers['content-length'], body });
      if (req.url?.endsWith('/state')) {
        if (req.headers['if-none-match'] === '"e1"') res.writeHead(304).end();
        else res.writeHead(200, { 'content-type': 'application/json', etag: '"e1"' }).end(JSON.stringify({ dev: { name: 'é' } }));
        return;
      }
      res.writeHead(204).end();
    };
    const client = createCloudClient(`${base}/`, 'uuid1', 'key1');
    assert.deepEqual(await client.target(), { changed: true, etag: '"e1"', body: { dev: { name: 'é' } } });
    assert.deepEqual(await client.target('"e1"'), { changed: false });
    await client.logs({ lines: [{ timestamp: 1, message: 'ü line' }] });
    const post = seen[2];
    assert.equal(post?.method, 'POST');
    assert.equal(post?.url, '/device/v2/uuid1/logs');
    assert.equal(post?.auth, 'Bearer key1');
    assert.equal(post?.type, 'application/json');
    assert.equal(post?.length, String(Buffer.byteLength(post?.body ?? '')), 'content-length in bytes, not characters');
    assert.deepEqual(JSON.parse(post?.body ?? ''), { lines: [{ timestamp: 1, message: 'ü line' }] });
  });

  it("a refusal is a CloudHttpError with the server's message and its Retry-After", async () => {
    handle = (_req, _body, res) => res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '7' }).end(JSON.stringify({ message: 'slow down' }));
    const err = await createCloudClient(base, 'u', 'k').report({}).catch((e: unknown) => e);
    assert.ok(err instanceof CloudHttpError);
    assert.equal(err.status, 429);
    assert.equal(err.message, 'report: the server answered 429 (slow down)');
    assert.equal(err.retryAfterMs, 7000);
  });

  it('a target that is not JSON is a CloudHttpError saying so', async () => {
    handle = (_req, _body, res) => res.writeHead(200).end('<html>');
    await assert.rejects(createCloudClient(base, 'u', 'k').target(), (err: unknown) => err instanceof CloudHttpError && /target state: the answer is not JSON/.test(err.message));
  });

  it('an answer cut short, a refused connection and a stop are CloudUnreachableError, never a hang', async () => {
    handle = (_req, _body, res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('{"partial":');
      setImmediate(() => res.socket?.destroy());
    };
    await assert.rejects(createCloudClient(base, 'u', 'k').target(), (err: unknown) => err instanceof CloudUnreachableError && /cannot reach http:\/\/127\.0\.0\.1:\d+ \(/.test(err.message));

    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(createCloudClient(`http://127.0.0.1:${port}`, 'u', 'k').target(), (err: unknown) => err instanceof CloudUnreachableError && err.message === `cannot reach http://127.0.0.1:${port} (ECONNREFUSED)`);

    handle = () => undefined; // never answers
    const stop = new AbortController();
    const pending = createCloudClient(base, 'u', 'k', stop.signal).target();
    setTimeout(() => stop.abort(), 100);
    await assert.rejects(pending, (err: unknown) => err instanceof CloudUnreachableError && /\(stopped\)$/.test(err.message));
  });
});
