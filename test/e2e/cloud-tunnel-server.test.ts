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
import { runCli } from '../support/cli.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';
import { EXEC_FRAME, type DeviceSession, type ExecFrame } from '../../src/lib/api/tunnel.js';
import { FrameDecoder, parseControl } from '../../src/lib/tunnel/frames.js';

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

/** Session sockets open now: a failed test's are ended so the next test starts clean. */
const opened = new Set<WebSocket>();
const endOpenSessions = (): void => {
  for (const ws of opened) ws.terminate();
  opened.clear();
};

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
    ws.once('open', () => {
      opened.add(ws);
      ws.once('close', () => opened.delete(ws));
      resolve({ ok: true, client: { ws, bytes: () => Buffer.concat(chunks), received: () => count, eof: () => eof, closed } });
    });
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

/** A session to the echo server that has carried `text` there and back. */
async function echoing(base: string, route: string, token: string, text: string): Promise<Client> {
  const c = await mustOpen(base, route, token);
  c.ws.send(Buffer.from(text));
  await waitFor(() => c.received() === Buffer.byteLength(text), 'the echo');
  return c;
}

async function refused(base: string, route: string, token: string | undefined): Promise<{ status: number; body: { message?: string; field?: string } }> {
  const r = await openSession(base, route, token);
  if (r.ok) {
    r.client.ws.terminate();
    throw new Error(`session ${route} opened; expected a refusal`);
  }
  return r;
}

/** Waits until a session on `route` opens (the agent connected to that server again), and closes it. */
async function sessionOpens(base: string, route: string, token: string, what: string): Promise<void> {
  await eventually(async () => (await openSession(base, route, token).then((r) => {
    if (r.ok) r.client.ws.close();
    return r.ok;
  })), 60_000, what);
}

/**
 * A session whose client stops reading and pushes as fast as its socket takes, up to 512 MiB.
 * `stopped()` resolves with the bytes pushed once that no longer grows (the chain back-pressured).
 */
async function stalledSession(base: string, route: string, token: string): Promise<{ client: Client; stopped: () => Promise<number> }> {
  const client = await mustOpen(base, route, token);
  // Not reading: the kernel's buffers fill, then the server's socket to us, then the chain back.
  client.ws.pause();
  let pushed = 0;
  const chunk = randomBytes(256 * 1024);
  const push = (): void => {
    while (pushed < 512 * 1024 * 1024 && client.ws.readyState === WebSocket.OPEN && client.ws.bufferedAmount < 4 * 1024 * 1024) {
      pushed += chunk.length;
      client.ws.send(chunk, push);
    }
  };
  push();
  const stopped = async (): Promise<number> => {
    let last = -1;
    await waitFor(() => {
      const still = pushed === last;
      last = pushed;
      return still;
    }, 'the stalled client\'s sending to stop', 60_000, 2000);
    return pushed;
  };
  return { client, stopped };
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
    endOpenSessions();
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
    const c = await echoing(server.url, tunnel(echo.port), token, 'ping');
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
  });

  it('50 parallel sessions, one of whose clients stops reading: the others finish, the stalled one stops its device stream, the server\'s memory stays flat', async () => {
    assert.ok(server && echo && agent);
    const pid = server.child.pid ?? 0;
    const rssBefore = rssKiB(pid);
    const before = echo.connections.length;
    const stalled = await stalledSession(server.url, tunnel(echo.port), token);
    const others = await Promise.all(Array.from({ length: 49 }, () => mustOpen(server?.url ?? '', tunnel(echo?.port ?? 0), token)));
    // 2 MB each, both ways at once on many streams while one stalls. Sent as 64 KiB messages, the
    // socket reads `skiff tunnel` relays (src/lib/cloud/tunnel.ts): one 2 MiB message would be
    // assembled whole by the server (49 of them ≈ 100 MiB in flight at once, whatever the flow
    // control), which measures the test's message size rather than what the server holds.
    const payloads = others.map(() => randomBytes(2 * 1024 * 1024));
    others.forEach((c, i) => {
      const payload = payloads[i] as Buffer;
      for (let at = 0; at < payload.length; at += 64 * 1024) c.ws.send(payload.subarray(at, at + 64 * 1024));
      c.ws.send(EOF);
    });
    const closes = await Promise.all(others.map((c) => c.closed));
    closes.forEach((c, i) => assert.equal(c.code, 1000, `session ${i}: ${c.code} ${c.reason}`));
    others.forEach((c, i) => assert.ok(c.bytes().equals(payloads[i] as Buffer), `session ${i} got its bytes back`));
    const pushed = await stalled.stopped();
    const echoed = echo.connections[before]?.received ?? 0;
    assert.ok(pushed < 512 * 1024 * 1024, `the stalled session took all ${pushed} bytes`);
    assert.ok(echoed < 64 * 1024 * 1024, `the device end of the stalled session received ${echoed} bytes`);
    const grown = rssKiB(pid) - rssBefore;
    console.log(`      the stalled client pushed ${(pushed / 1024 / 1024).toFixed(1)} MiB, the device end got ${(echoed / 1024 / 1024).toFixed(1)} MiB; server RSS grew ${(grown / 1024).toFixed(1)} MiB`);
    assert.ok(grown < 150 * 1024, `the server's RSS grew ${grown} KiB`);
    stalled.client.ws.terminate();
    await waitFor(() => echo?.connections[before]?.closed, 'the stalled session\'s device connection to close');
  });

  it('the device end half-closes first: its eof arrives while the client still sends; a text message other than eof is a protocol error (4012)', async () => {
    assert.ok(server && agent);
    let got = '';
    let gotEnd = false;
    const greeter = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.end('hello from the device');
      socket.on('data', (d: Buffer) => (got += d.toString()));
      socket.on('end', () => {
        gotEnd = true;
        socket.destroy();
      });
    });
    await new Promise<void>((resolve) => greeter.listen(0, '127.0.0.1', resolve));
    try {
      const port = (greeter.address() as net.AddressInfo).port;
      const c = await mustOpen(server.url, tunnel(port), token);
      await waitFor(() => c.eof(), 'the device end\'s eof');
      assert.equal(c.bytes().toString(), 'hello from the device');
      c.ws.send(Buffer.from('still talking'));
      c.ws.send(EOF);
      const closed = await c.closed;
      assert.equal(closed.code, 1000);
      await waitFor(() => gotEnd, 'the device end to see the client\'s eof');
      assert.equal(got, 'still talking');

      const bad = await mustOpen(server.url, tunnel(port), token);
      bad.ws.send('{"type":"resize"}');
      const refusedText = await bad.closed;
      assert.equal(refusedText.code, 4012);
      assert.match(refusedText.reason, /eof/);
      await waitFor(async () => (await sessions(server?.url ?? '', token, agent?.uuid ?? ''))[0]?.outcome === 'protocol error', 'the row saying protocol error');
    } finally {
      greeter.close();
    }
  });

  it('exec: a command on the device host (development mode) runs, its output comes in frames, and its exit status ends the session and its row; an unknown service is a 404 before the upgrade', async () => {
    assert.ok(server && agent);
    const c = await mustOpen(server.url, `/devices/${agent.uuid}/exec?command=${encodeURIComponent('echo hi-from-host; exit 3')}`, token);
    const closed = await c.closed;
    assert.equal(closed.code, 1000, `${closed.code} ${closed.reason}`);
    const frames: ExecFrame[] = [];
    const decoder = new FrameDecoder();
    decoder.on('data', (f: ExecFrame) => frames.push(f));
    decoder.end(c.bytes());
    await new Promise((resolve) => decoder.once('end', resolve));
    const stdout = Buffer.concat(frames.filter((f) => f.type === EXEC_FRAME.stdout).map((f) => f.payload)).toString();
    assert.equal(stdout, 'hi-from-host\n');
    const controls = frames.filter((f) => f.type === EXEC_FRAME.control).map((f) => parseControl(f.payload));
    assert.deepEqual(controls.at(-1), { type: 'exit', code: 3 });
    const row = await waitFor(async () => (await sessions(server?.url ?? '', token, agent?.uuid ?? '')).find((s) => s.kind === 'ssh-host' && s.endedAt !== null), 'the exec session\'s row ended');
    assert.equal(row.target, 'host: echo hi-from-host; exit 3');
    assert.equal(row.outcome, 'exit 3');
    assert.ok(row.bytesOut > 0);

    const nosuch = await refused(server.url, `/devices/${agent.uuid}/exec?service=nosuch`, token);
    assert.equal(nosuch.status, 404);
    assert.match(nosuch.body.message ?? '', /no service 'nosuch'/);
  });

  it('exec refuses bad inputs before the upgrade, naming the field', async () => {
    assert.ok(server && agent);
    for (const [query, field] of [['cols=0', 'cols'], ['rows=abc', 'rows'], ['tty=2', 'tty'], ['term=a%20b', 'term'], ['service=-x', 'service'], ['command=', 'command'], ['shell=1', 'shell']] as const) {
      const bad = await refused(server.url, `/devices/${agent.uuid}/exec?${query}`, token);
      assert.equal(bad.status, 400, query);
      assert.equal(bad.body.field, field, `${query}: ${JSON.stringify(bad.body)}`);
    }
  });

  it('a device takes at most 256 sessions at once: the next is refused 429 in one line', async () => {
    assert.ok(server && echo && agent);
    const open = await Promise.all(Array.from({ length: 256 }, () => mustOpen(server?.url ?? '', tunnel(echo?.port ?? 0), token)));
    const over = await refused(server.url, tunnel(echo.port), token);
    assert.equal(over.status, 429);
    assert.equal(over.body.message, `device ${agent.uuid.slice(0, 7)} has 256 sessions open, the most it takes at once; end some and try again`);
    for (const c of open) c.ws.close();
    await Promise.all(open.map((c) => c.closed));
    // Freed: a new one opens.
    const again = await waitFor(async () => {
      const r = await openSession(server?.url ?? '', tunnel(echo?.port ?? 0), token);
      return r.ok ? r.client : undefined;
    }, 'a session to open again');
    again.ws.close();
  });

  it('a server killed mid-session leaves the row open; its next start closes it as "server stopped"', async () => {
    assert.ok(server && echo && agent);
    const c = await echoing(server.url, tunnel(echo.port), token, 'abc');
    await server.kill('SIGKILL');
    await c.closed;
    server = await startServer({ dataDir: server.dataDir, port: server.port });
    assert.match(server.output(), /closed 1 session\(s\) a stopped server left open/);
    const row = (await sessions(server.url, token, agent.uuid))[0];
    assert.equal(row?.outcome, 'server stopped');
    assert.ok(row?.endedAt);
    await sessionOpens(server?.url ?? '', tunnel(echo?.port ?? 0), token, 'the agent back on the restarted server');
  });

  it('a stopping server closes its sessions with 1001 and ends their rows itself', async () => {
    assert.ok(server && echo && agent);
    const c = await mustOpen(server.url, tunnel(echo.port), token);
    const stopping = server.kill('SIGTERM');
    const closed = await c.closed;
    assert.equal(closed.code, 1001, `${closed.code} ${closed.reason}`);
    assert.equal(await stopping, 0);
    server = await startServer({ dataDir: server.dataDir, port: server.port });
    assert.doesNotMatch(server.output(), /a stopped server left open/, 'nothing was left open');
    assert.equal((await sessions(server.url, token, agent.uuid))[0]?.outcome, 'server stopped');
    await sessionOpens(server?.url ?? '', tunnel(echo?.port ?? 0), token, 'the agent back on the restarted server');
  });

  it('--replica-url must be an http or https URL: one line, exit 2', async () => {
    const r = await runCli(['server', '--data-dir', scratchDir('skiff-tunnel-bad-'), '--port', String(await freePort()), '--replica-url', 'ftp://10.0.0.5']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--replica-url 'ftp:\/\/10\.0\.0\.5' is not an http or https URL/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });

  it('the agent killed mid-session: the socket closes 4010 and the log says the device\'s connection was lost; then the device is offline (409)', async () => {
    assert.ok(server && echo && agent);
    const c = await echoing(server.url, tunnel(echo.port), token, 'hello');
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
    const all = (await api(server.url, 'GET', `/devices/${agent.uuid}/sessions?limit=1000`, { token })).body as DeviceSession[];
    assert.ok(all.length >= 300, `${all.length} rows`);
    assert.equal((await sessions(server.url, token, agent.uuid)).length, 100, 'the newest 100 by default');
    assert.ok(all.every((s) => s.device === agent?.uuid && /^[0-9a-f]{32}$/.test(s.id) && s.endedAt !== null));
    const two = (await api(server.url, 'GET', `/devices/${agent.uuid.slice(0, 8)}/sessions?limit=2`, { token })).body as DeviceSession[];
    assert.deepEqual(two.map((s) => s.id), all.slice(0, 2).map((s) => s.id));
    for (const limit of ['0', '1001', 'x']) {
      const bad = await api(server.url, 'GET', `/devices/${agent.uuid}/sessions?limit=${limit}`, { token });
      assert.equal(bad.status, 400, `limit=${limit}`);
      assert.equal((bad.body as { field?: string }).field, 'limit');
    }
    const doc = (await api(server.url, 'GET', '/openapi.json')).body as { paths: Record<string, unknown> };
    for (const p of ['/devices/{uuid}/tunnel', '/devices/{uuid}/exec', '/devices/{uuid}/sessions']) assert.ok(doc.paths[p], `openapi lacks ${p}`);
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

  afterEach(endOpenSessions);

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
    assert.equal(rows[0]?.clientAddress, '127.0.0.1 via 127.0.0.1', 'the client\'s address as the relaying replica saw it, and the relay\'s');

    // A refusal on the holder comes back as our answer, before the upgrade.
    const nothing = await refused(a.url, `/devices/${uuid}/tunnel?port=${await freePort()}`, token);
    assert.equal(nothing.status, 502);
    assert.match(nothing.body.message ?? '', /^nothing listens on port/);
  });

  it('a relayed client that stops reading stops the device end, and neither replica\'s memory grows', async () => {
    assert.ok(a && b && echo);
    const uuid = agents[0]?.uuid ?? '';
    const rssBefore = [rssKiB(a.child.pid ?? 0), rssKiB(b.child.pid ?? 0)];
    const before = echo.connections.length;
    const stalled = await stalledSession(a.url, `/devices/${uuid}/tunnel?port=${echo.port}`, token);
    const pushed = await stalled.stopped();
    const echoed = echo.connections[before]?.received ?? 0;
    const grown = [rssKiB(a.child.pid ?? 0) - (rssBefore[0] ?? 0), rssKiB(b.child.pid ?? 0) - (rssBefore[1] ?? 0)];
    console.log(`      pushed ${(pushed / 1024 / 1024).toFixed(1)} MiB, the device end got ${(echoed / 1024 / 1024).toFixed(1)} MiB; RSS grew ${grown.map((g) => (g / 1024).toFixed(1)).join(' and ')} MiB`);
    assert.ok(pushed < 512 * 1024 * 1024);
    assert.ok(echoed < 64 * 1024 * 1024, `${echoed}`);
    assert.ok(grown.every((g) => g < 150 * 1024), `RSS grew ${grown.join(', ')} KiB`);
    stalled.client.ws.terminate();
    await waitFor(() => echo?.connections[before]?.closed, 'the stalled session\'s device connection to close');
  });

  it('a relayed request is never relayed again: the replica without the device answers 409', async () => {
    assert.ok(a && echo);
    const uuid = agents[0]?.uuid ?? '';
    const r = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`${a?.url.replace(/^http/, 'ws')}/devices/${uuid}/tunnel?port=${echo?.port}`, { headers: { authorization: `Bearer ${token}`, 'x-skiff-relayed': '1' } });
      ws.once('unexpected-response', (_req, res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
        res.on('close', () => ws.terminate());
      });
      ws.once('open', () => {
        ws.terminate();
        resolve(101);
      });
      ws.on('error', (err) => !/closed before/.test(err.message) && reject(err));
    });
    assert.equal(r, 409);
  });

  it('a session closed by the client through the relay closes the device\'s connection', async () => {
    assert.ok(a && b && echo);
    const uuid = agents[0]?.uuid ?? '';
    const before = echo.connections.length;
    const c = await echoing(a.url, `/devices/${uuid}/tunnel?port=${echo.port}`, token, 'x');
    c.ws.close(1000);
    await waitFor(() => echo?.connections[before]?.closed, 'the echo server seeing the close');
    await waitFor(async () => (await sessions(a?.url ?? '', token, uuid))[0]?.outcome === 'client left', 'the row saying the client left');
  });

  it('a replica killed mid-session: its rows are closed as "server stopped" by the next replica to start, not while it lives', async () => {
    assert.ok(a && b && echo);
    const uuid = agents[0]?.uuid ?? '';
    const c = await echoing(b.url, `/devices/${uuid}/tunnel?port=${echo.port}`, token, 'abc');
    // A replica starting while B lives leaves B's open row alone.
    const c2 = await startServer({ database });
    await c2.kill('SIGTERM');
    assert.equal((await sessions(a.url, token, uuid))[0]?.endedAt, null);
    await b.kill('SIGKILL');
    await c.closed;
    b = await startServer({ database, dataDir: b.dataDir, port: b.port });
    const row = (await sessions(a.url, token, uuid))[0];
    assert.equal(row?.outcome, 'server stopped', b.output());
  });

  it('the agent killed mid-session through the relay: the client sees 4010; then the device is offline on both replicas (409)', async () => {
    assert.ok(a && b && echo);
    const agent = agents[0] as TestAgent;
    await sessionOpens(a?.url ?? '', `/devices/${agent.uuid}/tunnel?port=${echo?.port}`, token, 'the agent back on the restarted replica');
    const c = await echoing(a.url, `/devices/${agent.uuid}/tunnel?port=${echo.port}`, token, 'hello');
    await agent.kill('SIGKILL');
    const closed = await c.closed;
    assert.equal(closed.code, 4010, closed.reason);
    for (const server of [a, b]) {
      const offline = await refused(server.url, `/devices/${agent.uuid}/tunnel?port=${echo.port}`, token);
      assert.equal(offline.status, 409);
      assert.equal(offline.body.message, `device ${agent.uuid.slice(0, 7)} is not connected to the server (offline?)`);
    }
  });
});
