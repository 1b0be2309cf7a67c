/**
 * Device public URLs end to end, every part real: `skiff server` (SQLite, with
 * --public-url-domain), a `skiff agent` in cloud mode as a subprocess, the CLI as a user runs it,
 * and the "device's" web service: an HTTP and WebSocket echo server this test runs on
 * 127.0.0.1:80, the agent's host (the agent connects to its host's port 80 for a public URL).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import WebSocket, { WebSocketServer } from 'ws';
import { eventually, startAgent, stopAgents, type TestAgent } from '../support/agent.js';
import { runCli, type CliResult } from '../support/cli.js';
import { ADMIN, api, createUser, dropPostgresDatabase, freshPostgresDatabase, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';

const RUN = randomBytes(3).toString('hex');
const DOMAIN = 'pub.skiff.test';

function json<T>(r: CliResult): T {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { result: T }).result;
}

interface Echoed { method: string; url: string; headers: http.IncomingHttpHeaders }

/** `/big`'s answer (bytes), and how far the device's service got writing it. */
const BIG_BYTES = 64 * 1024 * 1024;
const big = { written: 0, waiting: false, finished: false };

/**
 * The device's web service on 127.0.0.1:80: `/echo` answers the request's body as it streams in,
 * anything else answers what it was asked as JSON; `/ws` echoes WebSocket messages.
 */
async function startDeviceService(): Promise<{ close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.url === '/big') {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG_BYTES });
      const chunk = Buffer.alloc(1024 * 1024, 7);
      big.written = 0;
      big.finished = false;
      const write = (): void => {
        while (big.written < BIG_BYTES) {
          big.written += chunk.length;
          if (!res.write(chunk)) {
            big.waiting = true;
            res.once('drain', () => {
              big.waiting = false;
              write();
            });
            return;
          }
        }
        big.finished = true;
        res.end();
      };
      write();
      return;
    }
    if (req.url?.startsWith('/echo')) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-device': 'yes' });
      req.pipe(res);
      return;
    }
    req.resume();
    const body: Echoed = { method: req.method ?? '', url: req.url ?? '', headers: req.headers };
    res.writeHead(200, { 'content-type': 'application/json', 'x-device': 'yes', connection: 'keep-alive', 'keep-alive': 'timeout=5' }).end(JSON.stringify(body));
  });
  const wss = new WebSocketServer({ server, path: '/ws' });
  wss.on('connection', (socket, req) => {
    socket.send(JSON.stringify({ hello: req.url, prefix: req.headers['x-forwarded-prefix'] ?? null }));
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
  });
  // Another test (or helper) may hold port 80 for a moment: wait for it rather than fail at once.
  await waitFor(() => new Promise<boolean>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve(false) : reject(err));
    server.once('error', onError);
    server.listen(80, '127.0.0.1', () => {
      server.off('error', onError);
      resolve(true);
    });
  }), 'port 80 on 127.0.0.1 to be free for the device\'s web service', 60_000, 500);
  return {
    close: () => new Promise<void>((resolve) => {
      for (const c of wss.clients) c.terminate();
      wss.close();
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** One request on its own connection (closed after the answer): status, headers, body as text. */
function request(url: string, options: { method?: string; headers?: http.OutgoingHttpHeaders; body?: Buffer; agent?: http.Agent } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? 'GET', headers: options.headers ?? {}, agent: options.agent ?? false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Opens a WebSocket; resolves with it and its first message, or rejects with the refusal's status. */
function openSocket(url: string, headers: Record<string, string> = {}): Promise<{ ws: WebSocket; first: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once('message', (data) => resolve({ ws, first: (data as Buffer).toString() }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => reject(new Error(`${res.statusCode}: ${body.trim()}`)));
    });
    ws.once('error', reject);
  });
}

function nextMessage(ws: WebSocket): Promise<{ data: Buffer; binary: boolean }> {
  return new Promise((resolve) => ws.once('message', (data, binary) => resolve({ data: data as Buffer, binary })));
}

/**
 * Logs the admin in on `serverUrl` (CLI home `home`), makes fleet `fleet` and one cloud agent of it
 * (polling every 60 s: only the event channel serves it), once the agent's channel is connected.
 */
async function adminWithDevice(serverUrl: string, home: string, fleet: string, agents: TestAgent[]): Promise<TestAgent> {
  const cli = (args: string[]) => runCli(args, { env: { HOME: home, SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined } });
  const passwordFile = path.join(scratchDir('skiff-pub-pw-'), 'pw');
  writeFileSync(passwordFile, `${ADMIN.password}\n`);
  json(await cli(['login', serverUrl, '--email', ADMIN.email, '--password-file', passwordFile, '--json']));
  json(await cli(['fleet', 'create', fleet, '--type', 'intel-nuc', '--json']));
  const file = path.join(scratchDir('skiff-pub-cfg-'), 'config.json');
  json(await cli(['config', 'generate', '--fleet', fleet, '--output', file, '--json']));
  const dataDir = scratchDir('skiff-pub-agent-');
  writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>, appUpdatePollInterval: 60_000 }));
  const agent = await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json')] });
  agents.push(agent);
  await eventually(async () => /event channel connected/.test(agent.output()), 30_000, 'the agent connecting its event channel').catch((err: Error) => {
    throw new Error(`${err.message}\nagent printed: ${agent.output().slice(-3000)}`);
  });
  return agent;
}

interface SessionRow { kind: string; actor: string; target: string; client_address: string; ended_at: string | null; bytes_in: number; bytes_out: number; outcome: string | null }

describe('device public URLs: settings, the proxy (HTTP, WebSocket, subdomains), the session log (sqlite)', function () {
  this.timeout(300_000);
  let server: StartedServer | undefined;
  let service: { close(): Promise<void> } | undefined;
  let home = '';
  let device: TestAgent | undefined;
  const agents: TestAgent[] = [];
  const fleet = `pub-${RUN}`;
  const cli = (args: string[]) => runCli(args, { env: { HOME: home, SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined } });
  const base = () => `${server?.url ?? ''}/d/${device?.uuid ?? ''}`;
  const sessions = (): SessionRow[] => {
    const db = new Database(path.join(server?.dataDir ?? '', 'skiff.db'), { readonly: true, fileMustExist: true });
    try {
      return db.prepare("SELECT kind, actor, target, client_address, ended_at, bytes_in, bytes_out, outcome FROM device_sessions WHERE kind = 'public-url' ORDER BY id").all() as SessionRow[];
    } finally {
      db.close();
    }
  };

  before(async () => {
    service = await startDeviceService();
    server = await startServer({ args: ['--public-url-domain', DOMAIN] });
    home = scratchDir('skiff-pub-home-');
    device = await adminWithDevice(server.url, home, fleet, agents);
  });

  after(async () => {
    await stopAgents(agents);
    await server?.kill('SIGTERM');
    await service?.close();
  });

  it('settings: a device follows its fleet (off by default); the device overrides either way and --follow-fleet goes back; the proxy honours each at once', async () => {
    assert.ok(device && server);
    const uuid = device.uuid;
    type State = { device: string; enabled: boolean; deviceSetting: boolean | null; fleetSetting: boolean; url: string };
    const fresh = json<State>(await cli(['device', 'public-url', uuid, '--status', '--json']));
    assert.deepEqual(fresh, { device: uuid, enabled: false, deviceSetting: null, fleetSetting: false, url: `http://${uuid}.${DOMAIN}:${server.port}/` });
    assert.equal((await request(`${base()}/`)).status, 404);
    const plain = await cli(['device', 'public-url', uuid.slice(0, 7), '--status']);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, 'disabled\n');
    // Without a flag the URL is the answer: a disabled one is an error, one line with the way out.
    const refused = await cli(['device', 'public-url', uuid]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /the public URL of device [0-9a-f]{7} is disabled/);
    assert.match(refused.stderr, /--enable/);
    assert.doesNotMatch(refused.stderr, /\n\s+at /, 'no stack trace');

    // Enabled through the fleet's default.
    assert.deepEqual(json(await cli(['fleet', 'public-url', fleet, '--enable', '--json'])), { fleet, enabled: true });
    assert.equal((await cli(['fleet', 'public-url', fleet])).stdout, 'enabled\n');
    assert.equal((await cli(['device', 'public-url', uuid])).stdout, `http://${uuid}.${DOMAIN}:${server.port}/\n`);
    assert.equal((await request(`${base()}/`)).status, 200);

    // The device's own false wins over the fleet's true; the answer is the unknown device's.
    const off = json<State>(await cli(['device', 'public-url', uuid, '--disable', '--json']));
    assert.deepEqual({ enabled: off.enabled, deviceSetting: off.deviceSetting, fleetSetting: off.fleetSetting }, { enabled: false, deviceSetting: false, fleetSetting: true });
    const disabled = await request(`${base()}/`);
    const unknown = await request(`${server.url}/d/${randomBytes(16).toString('hex')}/`);
    assert.deepEqual([disabled.status, disabled.body], [404, 'no public URL for this device\n']);
    assert.deepEqual([unknown.status, unknown.body], [disabled.status, disabled.body], 'an unknown device and a disabled one answer alike');

    // Back to the fleet's default (true), then the device's own true with the fleet off.
    assert.equal(json<State>(await cli(['device', 'public-url', uuid, '--follow-fleet', '--json'])).deviceSetting, null);
    assert.equal((await request(`${base()}/`)).status, 200);
    json(await cli(['fleet', 'public-url', fleet, '--disable', '--json']));
    assert.equal((await request(`${base()}/`)).status, 404);
    const on = await cli(['device', 'public-url', uuid, '--enable']);
    assert.equal(on.code, 0, on.stderr);
    assert.equal(on.stdout, `http://${uuid}.${DOMAIN}:${server.port}/\n`);
    assert.match(on.stderr, /enabled, set on the device \(the fleet's default is disabled\)/);
    assert.equal((await request(`${base()}/`)).status, 200);
  });

  it('the CLI refuses conflicting flags (usage, exit 2) and names an unknown device or fleet (exit 12)', async () => {
    assert.ok(device);
    const both = await cli(['device', 'public-url', device.uuid, '--enable', '--disable']);
    assert.equal(both.code, 2, both.stderr);
    const noDevice = await cli(['device', 'public-url', 'abcdef0123456']);
    assert.equal(noDevice.code, 12, noDevice.stderr);
    assert.match(noDevice.stderr, /device abcdef0123456 not found/);
    const noFleet = await cli(['fleet', 'public-url', `nope-${RUN}`, '--enable']);
    assert.equal(noFleet.code, 12, noFleet.stderr);
  });

  it("another user can neither read nor change the device's or the fleet's setting (404); a bad body is a 400", async () => {
    assert.ok(device && server);
    const other = await createUser(server.url);
    for (const [method, route, body] of [
      ['GET', `/devices/${device.uuid}/public-url`, undefined], ['PUT', `/devices/${device.uuid}/public-url`, { enabled: false }],
      ['GET', `/fleets/${fleet}/public-url`, undefined], ['PUT', `/fleets/${fleet}/public-url`, { enabled: false }],
    ] as const) {
      const res = await api(server.url, method, route, { token: other.token, ...(body ? { body } : {}) });
      assert.equal(res.status, 404, `${method} ${route}: ${JSON.stringify(res.body)}`);
    }
    assert.equal((await request(`${base()}/`)).status, 200, 'still enabled');
    const admin = (JSON.parse(readFileSync(path.join(home, '.skiff', 'credentials.json'), 'utf8')) as { token: string }).token;
    assert.equal((await api(server.url, 'PUT', `/devices/${device.uuid}/public-url`, { token: admin, body: { enabled: 'yes' } })).status, 400);
    assert.equal((await api(server.url, 'PUT', `/fleets/${fleet}/public-url`, { token: admin, body: { enabled: null } })).status, 400, 'a fleet has no "follow"');
    assert.equal((await api(server.url, 'PUT', `/devices/${device.uuid}/public-url`, { body: { enabled: true } })).status, 401);
  });

  it('HTTP through /d/<uuid>/: the path without the prefix, the query, method and headers reach the device, with X-Forwarded-*; hop-by-hop headers do not', async () => {
    const res = await request(`${base()}/info/some/path?q=1&r=two`, { method: 'PATCH', headers: { 'x-test': 'yes', connection: 'close, x-drop', 'x-drop': 'secret', 'proxy-authorization': 'Basic eA==' } });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.headers['x-device'], 'yes');
    assert.equal(res.headers['keep-alive'], undefined, "the device's hop-by-hop headers stay on its hop");
    const echoed = JSON.parse(res.body) as Echoed;
    assert.equal(echoed.method, 'PATCH');
    assert.equal(echoed.url, '/info/some/path?q=1&r=two');
    assert.equal(echoed.headers['x-test'], 'yes');
    assert.equal(echoed.headers['x-drop'], undefined);
    assert.equal(echoed.headers['proxy-authorization'], undefined);
    assert.equal(echoed.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(echoed.headers['x-forwarded-proto'], 'http');
    assert.equal(echoed.headers['x-forwarded-host'], `127.0.0.1:${server?.port}`);
    assert.equal(echoed.headers['x-forwarded-prefix'], `/d/${device?.uuid}`);
    // A real HTTP client (fetch) too, and /d/<uuid> sends it to /d/<uuid>/.
    const viaFetch = await fetch(`${base()}/info/x?y=1`, { headers: { 'x-forwarded-for': '10.9.8.7' } });
    assert.equal(viaFetch.status, 200);
    assert.equal(((await viaFetch.json()) as Echoed).headers['x-forwarded-for'], '10.9.8.7, 127.0.0.1');
    const redirect = await fetch(`${base()}?a=1`, { redirect: 'manual' });
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.get('location'), `/d/${device?.uuid}/?a=1`);
  });

  it('a 5 MB POST body streams to the device and back unchanged (the API\'s 1 MiB body limit does not apply)', async () => {
    const body = randomBytes(5 * 1024 * 1024);
    const started = Date.now();
    const res = await fetch(`${base()}/echo`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(res.status, 200);
    const back = Buffer.from(await res.arrayBuffer());
    assert.equal(back.length, body.length);
    assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(body).digest('hex'));
    console.log(`      5 MB echoed through the public URL in ${Date.now() - started} ms`);
    // Chunked (no Content-Length) too.
    const chunked = await request(`${base()}/echo`, { method: 'PUT', headers: { 'transfer-encoding': 'chunked' }, body: Buffer.from('chunked body') });
    assert.deepEqual([chunked.status, chunked.body], [200, 'chunked body']);
  });

  it("back-pressure: a client that stops reading stops the device's service writing (64 MB answer), and gets every byte once it reads again", async () => {
    await new Promise<void>((resolve, reject) => {
      http.get(`${base()}/big`, { agent: false }, (res) => {
        let received = 0;
        res.once('data', (first: Buffer) => {
          received += first.length;
          res.pause();
          let last = -1;
          void waitFor(() => {
            const stalled = big.finished || (big.waiting && big.written === last);
            last = big.written;
            return stalled;
          }, "the device's service to stall or finish", 30_000, 250).then(() => {
            assert.ok(!big.finished, 'the device wrote all 64 MB to a client that read nothing: nothing held it back');
            console.log(`      the device's service stalled after ${(big.written / 1024 / 1024).toFixed(0)} MB of 64 MB`);
            assert.ok(big.written <= 32 * 1024 * 1024, `${big.written} bytes written before it stalled`);
            res.on('data', (d: Buffer) => (received += d.length));
            res.on('end', () => {
              try {
                assert.equal(received, BIG_BYTES);
                resolve();
              } catch (err) {
                reject(err as Error);
              }
            });
            res.resume();
          }, reject);
        });
        res.on('error', reject);
      }).on('error', reject);
    });
  });

  it("a WebSocket through /d/<uuid>/ echoes text and a 1 MB binary message; the device's event socket and the API's upgrades still work", async () => {
    assert.ok(server && device);
    const { ws, first } = await openSocket(`${base().replace(/^http/, 'ws')}/ws?x=1`);
    assert.deepEqual(JSON.parse(first), { hello: '/ws?x=1', prefix: `/d/${device.uuid}` });
    ws.send('hello device');
    const text = await nextMessage(ws);
    assert.deepEqual([text.data.toString(), text.binary], ['hello device', false]);
    const big = randomBytes(1024 * 1024);
    ws.send(big);
    const echoed = await nextMessage(ws);
    assert.ok(echoed.binary && echoed.data.equals(big), 'the binary message came back unchanged');
    ws.close();
    // @fastify/websocket still answers the upgrades that are not public URLs.
    await assert.rejects(openSocket(`${server.url.replace(/^http/, 'ws')}/device/v3/${device.uuid}/events`, { authorization: 'Bearer not-a-key' }), /^Error: 401/);
    await assert.rejects(openSocket(`${base().replace(/^http/, 'ws')}/ws`.replace(device.uuid, randomBytes(16).toString('hex'))), /^Error: 404: no public URL for this device/);
    assert.doesNotMatch(device.output(), /event channel (not connected|lost|closed)/i, 'the agent kept its event channel');
    // Requests still reach the API.
    assert.equal((await fetch(`${server.url}/ping`)).status, 200);
  });

  it('subdomain mode: a Host <uuid>.<domain> is the same as /d/<uuid>/, for HTTP and WebSocket, with no prefix', async () => {
    assert.ok(server && device);
    const host = `${device.uuid}.${DOMAIN}:${server.port}`;
    const res = await request(`${server.url}/info/sub?z=9`, { headers: { host } });
    assert.equal(res.status, 200, res.body);
    const echoed = JSON.parse(res.body) as Echoed;
    assert.equal(echoed.url, '/info/sub?z=9');
    assert.equal(echoed.headers.host, host);
    assert.equal(echoed.headers['x-forwarded-host'], host);
    assert.equal(echoed.headers['x-forwarded-prefix'], undefined);
    // The device's own /d/… path is its own there, not a second prefix.
    assert.equal((JSON.parse((await request(`${server.url}/d/x`, { headers: { host } })).body) as Echoed).url, '/d/x');
    const { ws, first } = await openSocket(`${server.url.replace(/^http/, 'ws')}/ws`, { host });
    assert.deepEqual(JSON.parse(first), { hello: '/ws', prefix: null });
    ws.close();
    // Another host under the domain is the API's.
    assert.equal((await request(`${server.url}/ping`, { headers: { host: `api.${DOMAIN}` } })).body, 'OK');
    assert.equal((await request(`${server.url}/`, { headers: { host: `${randomBytes(16).toString('hex')}.${DOMAIN}` } })).status, 404);
  });

  it('the session log: one public-url row per client connection and device (its first request), bytes both ways, ended when the connection closes', async () => {
    assert.ok(device);
    const before = sessions().length;
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
    assert.equal((await request(`${base()}/info/first?secret=1`, { agent: keepAlive })).status, 200);
    assert.equal((await request(`${base()}/echo`, { method: 'POST', body: randomBytes(100_000), agent: keepAlive })).status, 200);
    assert.equal(sessions().length, before + 1, 'two requests on one connection are one session');
    const open = sessions().at(-1);
    assert.equal(open?.ended_at, null);
    keepAlive.destroy();
    const row = await eventually(async () => {
      const last = sessions().at(-1);
      return last?.ended_at ? last : undefined;
    }, 10_000, 'the session ended once the connection closed');
    assert.equal(row.kind, 'public-url');
    assert.equal(row.actor, 'public 127.0.0.1');
    assert.equal(row.client_address, '127.0.0.1');
    assert.equal(row.target, 'GET /info/first');
    assert.equal(row.outcome, 'closed');
    assert.ok(row.bytes_in > 100_000, `bytes in ${row.bytes_in}`);
    assert.ok(row.bytes_out > 100_000, `bytes out ${row.bytes_out}`);
  });

  it("nothing listening on the device's port 80 is a 502 within seconds; back once it listens again", async () => {
    await service?.close();
    service = undefined;
    const started = Date.now();
    const res = await request(`${base()}/info/`);
    const ms = Date.now() - started;
    assert.deepEqual([res.status, res.body], [502, 'nothing listens on port 80 of the device\n']);
    assert.ok(ms < 5000, `answered in ${ms} ms`);
    await assert.rejects(openSocket(`${base().replace(/^http/, 'ws')}/ws`), /^Error: 502: nothing listens on port 80 of the device/);
    service = await startDeviceService();
    assert.equal((await request(`${base()}/info/`)).status, 200);
  });

  it('an offline device (its agent stopped) is a 503 with one line, for HTTP and WebSocket alike', async () => {
    assert.ok(device);
    await device.kill();
    const res = await eventually(async () => {
      const r = await request(`${base()}/info/`);
      return r.status === 503 ? r : undefined;
    }, 15_000, 'the proxy calling the stopped device offline');
    assert.equal(res.body, 'the device is offline\n');
    await assert.rejects(openSocket(`${base().replace(/^http/, 'ws')}/ws`), /^Error: 503: the device is offline/);
  });

  it('skiff server refuses a --public-url-domain that is not a DNS name: one line, exit 2', async () => {
    const bad = await startServer({ args: ['--public-url-domain', 'not a domain!'], waitReady: false });
    const code = await waitFor(() => (bad.child.exitCode !== null ? bad.child.exitCode : undefined), 'the server to exit', 30_000);
    assert.equal(code, 2, bad.output());
    assert.match(bad.output(), /--public-url-domain 'not a domain!' is not a DNS name/);
    assert.doesNotMatch(bad.output(), /\n\s+at /);
  });
});

describe('device public URLs across two replicas on PostgreSQL', function () {
  this.timeout(300_000);
  let database = '';
  let one: StartedServer | undefined;
  let two: StartedServer | undefined;
  let service: { close(): Promise<void> } | undefined;
  const agents: TestAgent[] = [];
  let device: TestAgent | undefined;
  const fleet = `pubrep-${RUN}`;
  let home = '';
  const cli = (args: string[]) => runCli(args, { env: { HOME: home, SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined } });
  const sessions = async (): Promise<SessionRow[]> => {
    const client = new pg.Client({ connectionString: database });
    await client.connect();
    try {
      const { rows } = await client.query<SessionRow>("SELECT kind, actor, target, client_address, ended_at, bytes_in::int AS bytes_in, bytes_out::int AS bytes_out, outcome FROM device_sessions WHERE kind = 'public-url' ORDER BY id");
      return rows;
    } finally {
      await client.end();
    }
  };

  before(async () => {
    service = await startDeviceService();
    database = freshPostgresDatabase();
    one = await startServer({ database });
    two = await startServer({ database });
    home = scratchDir('skiff-pubrep-home-');
    device = await adminWithDevice(one.url, home, fleet, agents);
    json(await cli(['fleet', 'public-url', fleet, '--enable', '--json']));
  });

  after(async () => {
    await stopAgents(agents);
    await one?.kill('SIGTERM');
    await two?.kill('SIGTERM');
    if (database) dropPostgresDatabase(database);
    await service?.close();
  });

  it("a request and a WebSocket reaching replica 2 are relayed once to replica 1, which holds the device's socket; one session row, X-Forwarded-* from the replica the client reached", async () => {
    assert.ok(one && two && device);
    const before = (await sessions()).length;
    const res = await request(`${two.url}/d/${device.uuid}/info/relayed?q=1`);
    assert.equal(res.status, 200, res.body);
    const echoed = JSON.parse(res.body) as Echoed;
    assert.equal(echoed.url, '/info/relayed?q=1');
    assert.equal(echoed.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(echoed.headers['x-forwarded-host'], `127.0.0.1:${two.port}`);
    assert.equal(echoed.headers.host, `127.0.0.1:${two.port}`, 'the device sees the host the client asked for');
    assert.equal(echoed.headers['x-forwarded-prefix'], `/d/${device.uuid}`);
    assert.equal(echoed.headers['x-skiff-relayed'], undefined);
    const body = randomBytes(2 * 1024 * 1024);
    // On a connection of its own (fetch would keep it open, and with it the session).
    const posted = await new Promise<Buffer>((resolve, reject) => {
      const req = http.request(`${two?.url ?? ''}/d/${device?.uuid ?? ''}/echo`, { method: 'POST', agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => resolve(Buffer.concat(chunks)));
      });
      req.on('error', reject);
      req.end(body);
    });
    assert.ok(posted.equals(body), 'a 2 MB body relayed both ways unchanged');
    const { ws, first } = await openSocket(`${two.url.replace(/^http/, 'ws')}/d/${device.uuid}/ws`);
    assert.deepEqual(JSON.parse(first), { hello: '/ws', prefix: `/d/${device.uuid}` });
    ws.send('across replicas');
    assert.equal((await nextMessage(ws)).data.toString(), 'across replicas');
    ws.close();
    const rows = await eventually(async () => {
      const all = (await sessions()).slice(before);
      return all.length >= 3 && all.every((r) => r.ended_at !== null) ? all : undefined;
    }, 10_000, 'the three sessions ended').catch(async (err: Error) => {
      throw new Error(`${err.message}: ${JSON.stringify((await sessions()).slice(before))}`);
    });
    assert.equal(rows.length, 3, `one row per client connection, none from the replica relayed to: ${JSON.stringify(rows)}`);
    assert.deepEqual(rows.map((r) => r.target), ['GET /info/relayed', 'POST /echo', 'GET /ws']);
    assert.ok(rows.every((r) => r.actor === 'public 127.0.0.1' && r.bytes_in > 0 && r.bytes_out > 0), JSON.stringify(rows));
  });

  it('a client claiming to be a replica (x-skiff-relayed with a made-up session) is still logged and told who it is', async () => {
    assert.ok(one && device);
    const before = (await sessions()).length;
    const res = await request(`${one.url}/d/${device.uuid}/info/claim`, { headers: { 'x-skiff-relayed': randomBytes(16).toString('hex'), 'x-forwarded-for': '6.6.6.6', 'x-forwarded-host': 'spoofed.example' } });
    assert.equal(res.status, 200, res.body);
    const echoed = JSON.parse(res.body) as Echoed;
    assert.equal(echoed.headers['x-forwarded-for'], '6.6.6.6, 127.0.0.1');
    assert.equal(echoed.headers['x-forwarded-host'], `127.0.0.1:${one.port}`);
    await eventually(async () => (await sessions()).length === before + 1, 10_000, 'the session logged');
  });

  it('a replica stops promptly with proxied connections open (a WebSocket relayed through the other, an answer its client does not read); they close', async () => {
    assert.ok(one && two && device);
    const { ws } = await openSocket(`${two.url.replace(/^http/, 'ws')}/d/${device.uuid}/ws`);
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    const stalled = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get(`${one?.url ?? ''}/d/${device?.uuid ?? ''}/big`, { agent: false }, (res) => {
        res.pause();
        resolve(res);
      }).on('error', reject);
    });
    const started = Date.now();
    const code = await one.kill('SIGTERM');
    const ms = Date.now() - started;
    assert.equal(code, 0, one.output().slice(-2000));
    assert.ok(ms < 10_000, `replica 1 took ${ms} ms to stop`);
    await closed;
    // The answer was cut short: read on, it ends before its 64 MB (a paused reader sees the close only by reading).
    let received = 0;
    stalled.on('data', (d: Buffer) => (received += d.length));
    stalled.on('error', () => undefined);
    await new Promise<void>((resolve) => stalled.once('close', () => resolve()).resume());
    assert.ok(received < BIG_BYTES, `${received} bytes arrived`);
  });
});
