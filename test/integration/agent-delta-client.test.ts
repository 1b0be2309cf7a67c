import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CloudHttpError, createCloudClient } from '../../src/lib/agent/cloud/client.js';
import { Slots, updateByDelta, type DeltaContext } from '../../src/lib/agent/cloud/delta.js';
import { localImageName } from '../../src/lib/agent/cloud/target.js';
import { connectLiteEngine } from '../../src/lib/docker/engine-lite.js';

/**
 * The agent's delta calls against a real HTTP server on loopback: the question and its
 * 504-while-pending, the answers, the delta endpoint when config.json names one, and a layer
 * download resumed with Range. (The real server's side is test/e2e/cloud-delta.test.ts.)
 */
describe('agent cloud client: deltas over node:http', function () {
  this.timeout(20_000);
  let server: http.Server;
  let base: string;
  let handle: (req: http.IncomingMessage, res: http.ServerResponse) => void;
  const SRC = `127.0.0.1:5000/f/web@sha256:${'a'.repeat(64)}`;
  const DEST = `127.0.0.1:5000/f/web@sha256:${'b'.repeat(64)}`;

  before(async () => {
    server = http.createServer((req, res) => handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('asks with the device key and both references; a 504 is pending for its Retry-After (or its body\'s)', async () => {
    const seen: Array<{ url?: string; auth?: string }> = [];
    let answer = 0;
    handle = (req, res) => {
      seen.push({ url: req.url, auth: req.headers.authorization });
      answer++;
      if (answer === 1) res.writeHead(504, { 'retry-after': '7', 'content-type': 'application/json' }).end(JSON.stringify({ status: 'pending', retryAfter: 7 }));
      else if (answer === 2) res.writeHead(504, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'pending', retryAfter: 3 }));
      else if (answer === 3) res.writeHead(504).end('<html>gateway</html>');
      else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'none', reason: 'nothing in common' }));
    };
    const client = createCloudClient(base, 'u1', 'key1');
    assert.deepEqual(await client.delta(SRC, DEST), { status: 'pending', retryAfterMs: 7000 });
    assert.deepEqual(await client.delta(SRC, DEST), { status: 'pending', retryAfterMs: 3000 });
    assert.deepEqual(await client.delta(SRC, DEST), { status: 'pending', retryAfterMs: 10_000 });
    assert.deepEqual(await client.delta(SRC, DEST), { status: 'none', reason: 'nothing in common' });
    const url = new URL(seen[0]?.url ?? '', base);
    assert.equal(url.pathname, '/api/v3/delta');
    assert.deepEqual([url.searchParams.get('src'), url.searchParams.get('dest')], [SRC, DEST]);
    assert.equal(seen[0]?.auth, 'Bearer key1');
  });

  it('goes to config.json\'s deltaEndpoint when it names one', async () => {
    const seen: string[] = [];
    handle = (req, res) => {
      seen.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'none', reason: 'x' }));
    };
    const client = createCloudClient('http://127.0.0.1:1', 'u1', 'key1', undefined, { deltaEndpoint: `${base}/` });
    assert.equal((await client.delta(SRC, DEST)).status, 'none');
    assert.equal(seen.length, 1);
  });

  it('a 404 (an image outside the fleet) or an answer of another shape is an error (the agent pulls)', async () => {
    handle = (_req, res) => res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ message: 'image not found' }));
    const err = await createCloudClient(base, 'u', 'k').delta(SRC, DEST).catch((e: unknown) => e);
    assert.ok(err instanceof CloudHttpError);
    assert.equal(err.message, 'delta: the server answered 404 (image not found)');
    handle = (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'maybe' }));
    await assert.rejects(createCloudClient(base, 'u', 'k').delta(SRC, DEST), /neither ready nor none/);
  });

  it('downloads a layer file whole, or from an offset with Range (206); a server that ignores the range is an error', async () => {
    const file = Buffer.from('0123456789abcdef');
    const seen: Array<{ url?: string; range?: string }> = [];
    let honourRange = true;
    handle = (req, res) => {
      seen.push({ url: req.url, range: req.headers.range });
      const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      if (m && honourRange) res.writeHead(206, { 'content-range': `bytes ${m[1]}-${file.length - 1}/${file.length}` }).end(file.subarray(Number(m[1])));
      else res.writeHead(200).end(file);
    };
    const client = createCloudClient(base, 'u1', 'key1');
    const read = async (offset: number): Promise<string> => {
      const chunks: Buffer[] = [];
      for await (const c of await client.deltaLayer('0123456789abcdef', 2, offset, new AbortController().signal)) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString();
    };
    assert.equal(await read(0), '0123456789abcdef');
    assert.equal(await read(10), 'abcdef');
    assert.deepEqual(seen.map((s) => [s.url, s.range]), [['/api/v3/delta/0123456789abcdef/layers/2', undefined], ['/api/v3/delta/0123456789abcdef/layers/2', 'bytes=10-']]);
    honourRange = false;
    await assert.rejects(read(10), (err: unknown) => err instanceof CloudHttpError && err.status === 200);
  });

  it('a download stops when its signal aborts', async () => {
    handle = (_req, res) => {
      res.writeHead(200);
      res.write('partial');
    };
    const abort = new AbortController();
    const stream = await createCloudClient(base, 'u1', 'key1').deltaLayer('0123456789abcdef', 0, 0, abort.signal);
    abort.abort();
    await assert.rejects((async () => {
      for await (const _ of stream) void _;
    })());
  });

  describe('asking until the delta is made (updateByDelta)', () => {
    const image = { remote: DEST, local: localImageName(DEST), host: '127.0.0.1:5000', repository: 'f/web', digest: `sha256:${'b'.repeat(64)}`, services: ['f/web'] };
    const source = { local: localImageName(SRC), remote: SRC };
    const context = async (signal: AbortSignal, maxWaitMs?: number): Promise<DeltaContext> => ({
      client: createCloudClient(base, 'u1', 'key1'), docker: (await connectLiteEngine({})).docker, proxyHost: '127.0.0.1:1',
      tmpDir: '/nonexistent', slots: new Slots(3), random: () => 0, signal, maxWaitMs,
    });

    it('waits out the 504s for their Retry-After, then pulls when the server says none', async () => {
      let asked = 0;
      handle = (_req, res) => {
        asked++;
        if (asked <= 2) res.writeHead(504, { 'retry-after': '1' }).end();
        else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'none', reason: 'not smaller than the layer' }));
      };
      const started = Date.now();
      const outcome = await updateByDelta(await context(new AbortController().signal), image, source, () => {});
      assert.deepEqual(outcome, { kind: 'none', reason: 'no delta: not smaller than the layer', downloadedBytes: 0 });
      assert.equal(asked, 3);
      assert.ok(Date.now() - started >= 2000, 'waited 1 s twice');
    });

    it('gives up once the next wait would pass the bound: a fallback, not an error', async () => {
      let asked = 0;
      handle = (_req, res) => {
        asked++;
        res.writeHead(504, { 'retry-after': '1' }).end();
      };
      const outcome = await updateByDelta(await context(new AbortController().signal, 1500), image, source, () => {});
      assert.equal(outcome.kind, 'fallback');
      assert.match(outcome.kind === 'fallback' ? outcome.reason : '', /did not make the delta within/);
      assert.equal(asked, 2);
    });

    it('a failure to ask (the server refuses) is a fallback with its reason', async () => {
      handle = (_req, res) => res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ message: 'image not found' }));
      assert.deepEqual(await updateByDelta(await context(new AbortController().signal), image, source, () => {}), { kind: 'fallback', reason: 'delta: the server answered 404 (image not found)', downloadedBytes: 0 });
    });

    it('a newer target (its signal) ends the wait at once, and the attempt rejects rather than pulls', async () => {
      handle = (_req, res) => res.writeHead(504, { 'retry-after': '30' }).end();
      const abort = new AbortController();
      const attempt = updateByDelta(await context(abort.signal), image, source, () => {});
      setTimeout(() => abort.abort(new Error('superseded')), 200);
      const started = Date.now();
      await assert.rejects(attempt, /superseded/);
      assert.ok(Date.now() - started < 5000);
    });
  });
});
