/**
 * The server's tunnel routes end to end, every part real: `skiff server` (SQLite; then two
 * replicas on one PostgreSQL database), a `skiff agent` in cloud mode as a subprocess, and a `ws`
 * client in the test as the CLI's side. The agent's host is this machine, so a TCP session to
 * `port N` of the device reaches an echo server the test listens with on 127.0.0.1:N.
 *
 * Covered: a TCP session with half-close both ways; every refusal before the upgrade (unknown
 * device, another user's device, a device key as the bearer, a bad port, nothing listening, a
 * plain GET, an offline device); the client leaving (the device's TCP connection closes); 50
 * parallel sessions with one client that stops reading (the others finish, the server's memory
 * stays flat); the agent killed mid-session (4010, logged); the session log with bytes; and a
 * session through the replica that does not hold the device's socket, logged once.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import { eventually, startAgent, stopAgents, type TestAgent } from '../support/agent.js';
import { ADMIN, api, createUser, dropPostgresDatabase, freePort, freshPostgresDatabase, login, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';
import type { DeviceSession } from '../../src/lib/api/tunnel.js';

const RUN = randomBytes(3).toString('hex');
const EOF = '{"type":"eof"}';

/** An echo server on 127.0.0.1 (half-open: after the client's FIN it finishes echoing, then ends). */
interface Echo {
  port: number;
  /** Connections accepted so far, with bytes received and whether they closed. */
  connections: Array<{ received: number; closed: boolean }>;
  close(): Promise<void>;
}

async function echoServer(): Promise<Echo> {
  const connections: Echo['connections'] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const c = { received: 0, closed: false };
    connections.push(c);
    sockets.add(socket);
    socket.on('data', (d: Buffer) => (c.received += d.length));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      c.closed = true;
      sockets.delete(socket);
    });
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port, connections,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

/** A session socket from the CLI's side, recording what arrives. */
interface Client {
  ws: WebSocket;
  /** Binary bytes received. */
  bytes: () => Buffer;
  received: () => number;
  eof: () => boolean;
  closed: Promise<{ code: number; reason: string }>;
}

type Opened = { ok: true; client: Client } | { ok: false; status: number; body: { message?: string; field?: string } };

function openSession(base: string, route: string, token: string | undefined): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}${route}`, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, perMessageDeflate: false });
    const chunks: Buffer[] = [];
    let count = 0;
    let eof = false;
    const closed = new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: reason.toString() })));
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        count += data.length;
        if (chunks.length < 10_000) chunks.push(data);
      } else if (data.toString() === EOF) eof = true;
    });
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => {
        let body: { message?: string; field?: string } = {};
        try {
          body = JSON.parse(text) as typeof body;
        } catch {
          body = { message: text };
        }
        resolve({ ok: false, status: res.statusCode ?? 0, body });
      });
      res.on('close', () => ws.terminate());
    });
    ws.once('open', () => resolve({ ok: true, client: { ws, bytes: () => Buffer.concat(chunks), received: () => count, eof: () => eof, closed } }));
    ws.on('error', (err) => {
      if (!/closed before the connection/.test(err.message)) reject(err);
    });
  });
}

async function mustOpen(base: string, route: string, token: string): Promise<Client> {
  const r = await openSession(base, route, token);
  if (!r.ok) throw new Error(`session ${route}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.client;
}

async function refused(base: string, route: string, token: string | undefined): Promise<{ status: number; body: { message?: string; field?: string } }> {
  const r = await openSession(base, route, token);
  if (r.ok) {
    r.client.ws.terminate();
    throw new Error(`session ${route} opened; expected a refusal`);
  }
  return r;
}

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

/** Makes a fleet through `server`, and an agent provisioned from its config (so it connects to that server). */
async function provision(server: StartedServer, token: string, fleet: string): Promise<TestAgent> {
  assert.equal((await api(server.url, 'POST', '/fleets', { token, body: { name: fleet, deviceType: 'genericx86-64-ext' } })).status, 201);
  const config = (await api(server.url, 'POST', `/fleets/${fleet}/config`, { token, body: { developmentMode: true } })).body as Record<string, unknown>;
  const dataDir = scratchDir('skiff-tunnel-agent-');
  writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...config, appUpdatePollInterval: 60_000 }));
  const agent = await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json')] });
  await eventually(async () => /event channel connected/.test(agent.output()), 60_000, 'the agent connecting its event channel')
    .catch((err: Error) => { throw new Error(`${err.message}\nagent printed: ${agent.output().slice(-3000)}`); });
  return agent;
}

const sessions = async (base: string, token: string, uuid: string): Promise<DeviceSession[]> => {
  const r = await api(base, 'GET', `/devices/${uuid}/sessions`, { token });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body as DeviceSession[];
};

describe('tunnel sessions through the server (sqlite)', function () {
  this.timeout(600_000);
  let server: StartedServer | undefined;
  let echo: Echo | undefined;
  let token = '';
  let agent: TestAgent | undefined;
  const agents: TestAgent[] = [];
  const tunnel = (port: number, uuid = agent?.uuid ?? '') => `/devices/${uuid}/tunnel?port=${port}`;

  before(async () => {
    server = await startServer();
    token = await login(server.url, ADMIN.email, ADMIN.password);
    echo = await echoServer();
    agent = await provision(server, token, `tunnel-${RUN}`);
    agents.push(agent);
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed') console.log(`server printed:\n${server?.output().slice(-3000)}\nagent printed:\n${agent?.output().slice(-3000)}`);
  });

  after(async () => {
    await stopAgents(agents);
    await echo?.close();
    await server?.kill('SIGTERM');
  });

  it('relays a TCP session to a port of the device host both ways, with half-close each way, and logs it', async () => {
    assert.ok(server && echo && agent);
    const before = echo.connections.length;
    const c = await mustOpen(server.url, tunnel(echo.port), token);
    const payload = randomBytes(300_000);
    c.ws.send(payload.subarray(0, 100_000));
    c.ws.send(payload.subarray(100_000));
    await waitFor(() => c.received() === payload.length, 'the echo of 300 kB');
    assert.ok(c.bytes().equals(payload), 'the bytes came back unchanged and in order');
    assert.equal(c.eof(), false);
    // Our half-close reaches the echo server as a FIN; it ends its side, which comes back as eof.
    c.ws.send(EOF);
    const closed = await c.closed;
    assert.equal(c.eof(), true, 'the device end\'s FIN arrived as {"type":"eof"}');
    assert.equal(closed.code, 1000, `close ${closed.code} ${closed.reason}`);
    await waitFor(() => echo?.connections[before]?.closed, 'the echo server\'s connection to close');
    const rows = await waitFor(async () => (await sessions(server?.url ?? '', token, agent?.uuid ?? '')).find((s) => s.endedAt !== null && s.target === `port ${echo?.port}`), 'the session\'s row ended');
    assert.equal(rows.kind, 'tunnel');
    assert.equal(rows.actor, ADMIN.email);
    assert.equal(rows.clientAddress, '127.0.0.1');
    assert.equal(rows.bytesIn, payload.length);
    assert.equal(rows.bytesOut, payload.length);
    assert.equal(rows.outcome, 'closed');
  });

  it('the client leaving closes the device\'s TCP connection, and the log says so', async () => {
    assert.ok(server && echo && agent);
    const before = echo.connections.length;
    const c = await mustOpen(server.url, tunnel(echo.port), token);
    c.ws.send(Buffer.from('ping'));
    await waitFor(() => c.received() === 4, 'the echo');
    assert.equal(echo.connections[before]?.closed, false);
    c.ws.terminate();
    await waitFor(() => echo?.connections[before]?.closed, 'the echo server seeing its connection close');
    const list = await sessions(server.url, token, agent.uuid);
    await waitFor(async () => (await sessions(server?.url ?? '', token, agent?.uuid ?? ''))[0]?.outcome === 'client left', 'the row saying the client left');
    assert.ok(list.length >= 2);
  });

  it('refuses before the upgrade: nothing listening 502, unknown device 404, another user\'s device 404, a device key 401, a bad port 400 naming it, a plain GET 400', async () => {
    assert.ok(server && agent);
    const nothing = await refused(server.url, tunnel(await freePort()), token);
    assert.equal(nothing.status, 502);
    assert.match(nothing.body.message ?? '', /^nothing listens on port \d+ of the device$/);

    const unknown = await refused(server.url, tunnel(80, 'f'.repeat(32)), token);
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.message ?? '', /device f{32} not found/);

    const other = await createUser(server.url);
    const theirs = await refused(server.url, tunnel(80), other.token);
    assert.equal(theirs.status, 404, 'another user\'s device is not found, not forbidden');
    assert.equal((await api(server.url, 'GET', `/devices/${agent.uuid}/sessions`, { token: other.token })).status, 404);

    const deviceKey = (JSON.parse(readFileSync(path.join(agent.dataDir, 'config.json'), 'utf8')) as { deviceApiKey: string }).deviceApiKey;
    assert.equal((await refused(server.url, tunnel(80), deviceKey)).status, 401);
    assert.equal((await refused(server.url, tunnel(80), undefined)).status, 401);

    for (const port of ['0', '65536', 'abc', '']) {
      const bad = await refused(server.url, `/devices/${agent.uuid}/tunnel?port=${port}`, token);
      assert.equal(bad.status, 400, `port=${port}`);
      assert.equal(bad.body.field, 'port', `port=${port}: ${JSON.stringify(bad.body)}`);
    }
    const missing = await refused(server.url, `/devices/${agent.uuid}/tunnel`, token);
    assert.equal(missing.status, 400);
    assert.equal(missing.body.field, 'port');
    const extra = await refused(server.url, `/devices/${agent.uuid}/tunnel?port=80&color=red`, token);
    assert.equal(extra.status, 400);
    assert.equal(extra.body.field, 'color');

    const plain = await api(server.url, 'GET', tunnel(80), { token });
    assert.equal(plain.status, 400);
    assert.match((plain.body as { message: string }).message, /WebSocket upgrade/);
    assert.equal((await api(server.url, 'GET', `/devices/${agent.uuid}/sessions?limit=0`, { token })).status, 400);
  });

  it('50 parallel sessions, one of whose clients stops reading: the others finish, the stalled one stops its device stream, the server\'s memory stays flat', async () => {
    assert.ok(server && echo && agent);
    const pid = server.child.pid ?? 0;
    const rssBefore = rssKiB(pid);
    const before = echo.connections.length;
    const stalled = await mustOpen(server.url, tunnel(echo.port), token);
    // Not reading: the kernel's buffers fill, then the server's socket to us, then the chain back.
    stalled.ws.pause();
    let pushed = 0;
    const chunk = randomBytes(256 * 1024);
    const push = (): void => {
      while (pushed < 512 * 1024 * 1024 && stalled.ws.readyState === WebSocket.OPEN && stalled.ws.bufferedAmount < 4 * 1024 * 1024) {
        pushed += chunk.length;
        stalled.ws.send(chunk, push);
      }
    };
    push();
    const others = await Promise.all(Array.from({ length: 49 }, () => mustOpen(server?.url ?? '', tunnel(echo?.port ?? 0), token)));
    const payloads = others.map(() => randomBytes(200_000));
    others.forEach((c, i) => {
      c.ws.send(payloads[i] as Buffer);
      c.ws.send(EOF);
    });
    const closes = await Promise.all(others.map((c) => c.closed));
    closes.forEach((c, i) => assert.equal(c.code, 1000, `session ${i}: ${c.code} ${c.reason}`));
    others.forEach((c, i) => assert.ok(c.bytes().equals(payloads[i] as Buffer), `session ${i} got its bytes back`));
    // The stalled one has stopped: what it pushed no longer grows.
    let last = -1;
    await waitFor(() => {
      const still = pushed === last;
      last = pushed;
      return still;
    }, 'the stalled client\'s sending to stop', 60_000, 2000);
    const echoed = echo.connections[before]?.received ?? 0;
    assert.ok(pushed < 512 * 1024 * 1024, `the stalled session took all ${pushed} bytes`);
    assert.ok(echoed < 64 * 1024 * 1024, `the device end of the stalled session received ${echoed} bytes`);
    const grown = rssKiB(pid) - rssBefore;
    console.log(`      the stalled client pushed ${(pushed / 1024 / 1024).toFixed(1)} MiB, the device end got ${(echoed / 1024 / 1024).toFixed(1)} MiB; server RSS grew ${(grown / 1024).toFixed(1)} MiB`);
    assert.ok(grown < 150 * 1024, `the server's RSS grew ${grown} KiB`);
    stalled.ws.terminate();
    await waitFor(() => echo?.connections[before]?.closed, 'the stalled session\'s device connection to close');
  });

  it('the agent killed mid-session: the socket closes 4010 and the log says the device\'s connection was lost; then the device is offline (409)', async () => {
    assert.ok(server && echo && agent);
    const c = await mustOpen(server.url, tunnel(echo.port), token);
    c.ws.send(Buffer.from('hello'));
    await waitFor(() => c.received() === 5, 'the echo');
    await agent.kill('SIGKILL');
    const closed = await c.closed;
    assert.equal(closed.code, 4010);
    assert.equal(closed.reason, "the device's connection to the server dropped");
    await waitFor(async () => (await sessions(server?.url ?? '', token, agent?.uuid ?? ''))[0]?.outcome === 'device connection lost', 'the row saying the device\'s connection was lost');
    const offline = await refused(server.url, tunnel(echo.port), token);
    assert.equal(offline.status, 409);
    assert.equal(offline.body.message, `device ${agent.uuid.slice(0, 7)} is not connected to the server (offline?)`);
  });

  it('lists the device\'s sessions newest first, with ?limit', async () => {
    assert.ok(server && agent);
    const all = await sessions(server.url, token, agent.uuid);
    assert.ok(all.length >= 53, `${all.length} rows`);
    assert.ok(all.every((s) => s.device === agent?.uuid && /^[0-9a-f]{32}$/.test(s.id) && s.endedAt !== null));
    const two = (await api(server.url, 'GET', `/devices/${agent.uuid.slice(0, 8)}/sessions?limit=2`, { token })).body as DeviceSession[];
    assert.deepEqual(two.map((s) => s.id), all.slice(0, 2).map((s) => s.id));
  });
});

describe('tunnel sessions across replicas (postgres)', function () {
  this.timeout(600_000);
  let database: string | undefined;
  let a: StartedServer | undefined;
  let b: StartedServer | undefined;
  let echo: Echo | undefined;
  let token = '';
  const agents: TestAgent[] = [];

  before(async () => {
    database = freshPostgresDatabase();
    a = await startServer({ database });
    b = await startServer({ database });
    token = await login(a.url, ADMIN.email, ADMIN.password);
    echo = await echoServer();
    agents.push(await provision(b, token, `tunnel-replicas-${RUN}`));
  });

  after(async () => {
    await stopAgents(agents);
    await echo?.close();
    await a?.kill('SIGTERM');
    await b?.kill('SIGTERM');
    if (database) dropPostgresDatabase(database);
  });

  it('a session opened on the replica that does not hold the device\'s socket is relayed to the one that does, and logged once', async () => {
    assert.ok(a && b && echo);
    const uuid = agents[0]?.uuid ?? '';
    const c = await mustOpen(a.url, `/devices/${uuid}/tunnel?port=${echo.port}`, token);
    const payload = randomBytes(1_000_000);
    c.ws.send(payload);
    await waitFor(() => c.received() === payload.length, 'the echo through both replicas');
    assert.ok(c.bytes().equals(payload));
    c.ws.send(EOF);
    const closed = await c.closed;
    assert.equal(c.eof(), true);
    assert.equal(closed.code, 1000, `${closed.code} ${closed.reason}`);
    const rows = await waitFor(async () => {
      const list = await sessions(a?.url ?? '', token, uuid);
      return list.length > 0 && list.every((s) => s.endedAt !== null) ? list : undefined;
    }, 'the session\'s row ended');
    assert.equal(rows.length, 1, `one row: ${JSON.stringify(rows)}`);
    assert.equal(rows[0]?.bytesIn, payload.length);
    assert.equal(rows[0]?.outcome, 'closed');

    // A refusal on the holder comes back as our answer, before the upgrade.
    const nothing = await refused(a.url, `/devices/${uuid}/tunnel?port=${await freePort()}`, token);
    assert.equal(nothing.status, 502);
    assert.match(nothing.body.message ?? '', /^nothing listens on port/);
  });

  it('a session closed by the client through the relay closes the device\'s connection', async () => {
    assert.ok(a && b && echo);
    const uuid = agents[0]?.uuid ?? '';
    const before = echo.connections.length;
    const c = await mustOpen(a.url, `/devices/${uuid}/tunnel?port=${echo.port}`, token);
    c.ws.send(Buffer.from('x'));
    await waitFor(() => c.received() === 1, 'the echo');
    c.ws.close(1000);
    await waitFor(() => echo?.connections[before]?.closed, 'the echo server seeing the close');
    await waitFor(async () => (await sessions(a?.url ?? '', token, uuid))[0]?.outcome === 'client left', 'the row saying the client left');
  });
});
