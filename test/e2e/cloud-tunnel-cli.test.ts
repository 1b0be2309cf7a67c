/**
 * `skiff device ssh`, `device tunnel` and `device sessions` through the server, every part real:
 * `skiff server`, a `skiff agent` in cloud mode (development mode, so the host shell is allowed)
 * running a release with a `web` service, the CLI as a subprocess (and on a terminal through
 * script(1)). The "device host" is this machine: the agent runs here, so an HTTP server and an
 * echo server the test starts on 127.0.0.1 are ports of the device host.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { eventually, freePort, startAgent, stopAgents, type TestAgent } from '../support/agent.js';
import { runCli, startCli, type CliResult } from '../support/cli.js';
import { BASE_AMD64, cleanupImages, docker, ensureBaseImages, makeProject, TEST_LABEL } from '../support/engine.js';
import { ADMIN, api, login, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';
import { startTty } from '../support/tty.js';
import type { DeviceSession } from '../../src/lib/api/tunnel.js';

const RUN = randomBytes(3).toString('hex');
const LABEL_VALUE = `cloud-tunnel-cli-${RUN}`;

/** `web`: busybox httpd on port 8000 of its container, serving `hello-from-web`. */
function project(): string {
  const cmd = "mkdir -p /www && echo hello-from-web > /www/index.html && httpd -p 8000 -h /www && trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done";
  return makeProject({
    'docker-compose.yml': `services:\n  web:\n    build: .\n    labels:\n      ${TEST_LABEL}: ${LABEL_VALUE}\n    command: ["sh", "-c", ${JSON.stringify(cmd)}]\n`,
    Dockerfile: `FROM ${BASE_AMD64}\nLABEL ${TEST_LABEL}=${LABEL_VALUE}\nRUN echo ${RUN} > /run-id\n`,
  }, 'tunnelcli');
}

/** stderr has exactly one non-empty line (a user error, no stack). */
function oneLine(r: CliResult): string {
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
  return lines[0] ?? '';
}

/** Everything `port` sends back after we sent `data` and half-closed. */
function echoRoundTrip(port: number, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const got: Buffer[] = [];
    socket.on('data', (d: Buffer) => got.push(d));
    socket.on('end', () => {
      socket.end();
      resolve(Buffer.concat(got));
    });
    socket.on('error', reject);
    socket.on('connect', () => socket.end(data));
  });
}

/** Resolves once `socket` ended, was reset or closed; rejects after `ms` with `what()`. */
function endedWithin(socket: net.Socket, ms: number, what: () => string): Promise<void> {
  if (socket.destroyed || socket.readableEnded) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what()}`)), ms);
    const done = (): void => {
      clearTimeout(timer);
      resolve();
    };
    socket.once('end', done);
    socket.once('error', done);
    socket.once('close', done);
  });
}

/** Resolves once `socket` closed; rejects after `ms` with `what()`. */
function closedWithin(socket: net.Socket, ms: number, what: () => string): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what()}`)), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

describe('device ssh, tunnel and sessions through the server (CLI)', function () {
  this.timeout(600_000);
  let server: StartedServer | undefined;
  let token = '';
  const agents: TestAgent[] = [];
  let agent: TestAgent | undefined;
  let uuid = '';
  const fleet = `tunnel-${RUN}`;
  const env = () => ({ HOME: scratchDir('skiff-tunnel-home-'), SKIFF_API_URL: server?.url, SKIFF_API_TOKEN: token });
  const cli = (args: string[], options: { stdin?: 'pipe' } = {}) => startCli(args, { env: env(), ...options });
  const run = (args: string[]) => runCli(args, { env: env() });
  // Servers of "the device host".
  const httpHost = http.createServer((req, res) => res.end(`hello from the host ${req.url ?? ''}`));
  const echoHost = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  // A service that speaks first, as sshd, SMTP or a database does: its greeting must not be lost.
  const bannerHost = net.createServer((s) => {
    s.on('error', () => undefined);
    s.end('SSH-2.0-skiff-test-banner\r\n');
  });
  let bannerPort = 0;
  let httpPort = 0;
  let echoPort = 0;
  // A source that writes as fast as it may, counting what its socket accepted, until `source.finish`.
  const source = { sent: 0, lastProgress: 0, finish: false, port: 0 };
  const sourceHost = net.createServer((s) => {
    const chunk = Buffer.alloc(64 * 1024, 120);
    s.on('error', () => undefined);
    const pump = (): void => {
      for (;;) {
        if (source.finish) {
          s.end();
          return;
        }
        const more = s.write(chunk);
        source.sent += chunk.length;
        source.lastProgress = Date.now();
        if (!more) break;
      }
      s.once('drain', pump);
    };
    pump();
  });

  const webContainer = async () => (await docker.listContainers({ filters: { label: [`io.skiff.agent=${uuid}`, 'io.balena.service-name=web'], status: ['running'] } }))[0];
  /** The command lines of the processes in `web`'s container. */
  const webProcesses = async (): Promise<string[]> => {
    const c = await webContainer();
    if (!c) return [];
    const top = await docker.getContainer(c.Id).top({ ps_args: '-o pid,args' }) as { Processes?: string[][] };
    return (top.Processes ?? []).map((p) => p.join(' '));
  };

  before(async () => {
    await ensureBaseImages();
    httpHost.listen(0, '127.0.0.1');
    echoHost.listen(0, '127.0.0.1');
    sourceHost.listen(0, '127.0.0.1');
    await Promise.all([once(httpHost, 'listening'), once(echoHost, 'listening'), once(sourceHost, 'listening')]);
    source.port = (sourceHost.address() as net.AddressInfo).port;
    httpPort = (httpHost.address() as net.AddressInfo).port;
    echoPort = (echoHost.address() as net.AddressInfo).port;
    server = await startServer();
    token = await login(server.url, ADMIN.email, ADMIN.password);
    assert.equal((await api(server.url, 'POST', '/fleets', { token, body: { name: fleet, deviceType: 'genericx86-64-ext' } })).status, 201);
    const config = (await api(server.url, 'POST', `/fleets/${fleet}/config`, { token, body: { developmentMode: true } })).body as Record<string, unknown>;
    const dataDir = scratchDir('skiff-tunnel-agent-');
    writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...config, appUpdatePollInterval: 2000 }));
    agent = await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json')] });
    agents.push(agent);
    uuid = agent.uuid;
    const deployed = await run(['deploy', fleet, '--source', project(), '--build', '--json']);
    assert.equal(deployed.code, 0, deployed.stderr);
    await eventually(async () => (await webContainer()) !== undefined && /event channel connected/.test(agent?.output() ?? ''), 180_000, 'web running and the event channel connected')
      .catch((err: Error) => { throw new Error(`${err.message}\nagent printed: ${agent?.output().slice(-3000)}`); });
    await eventually(async () => ((await api(server?.url ?? '', 'GET', `/devices/${uuid}`, { token })).body as { status?: string }).status === 'online', 60_000, 'the device online');
  });

  after(async () => {
    await stopAgents(agents);
    await server?.kill('SIGTERM');
    httpHost.close();
    echoHost.close();
    bannerHost.close();
    sourceHost.close();
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  describe('device tunnel', () => {
    let tunnel: ReturnType<typeof cli> | undefined;
    let out = '';
    const local = { http: 0, echo: 0, dead: 0, web: 0, source: 0, banner: 0 };
    let deadPort = 0;

    before(async () => {
      [local.http, local.echo, local.dead, local.web, local.source, local.banner, deadPort] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
      await new Promise<void>((resolve) => bannerHost.listen(0, '127.0.0.1', resolve));
      bannerPort = (bannerHost.address() as net.AddressInfo).port;
      tunnel = cli(['device', 'tunnel', uuid, '-p', `${local.http}:${httpPort}`, '-p', `${local.echo}:${echoPort}`, '-p', `${local.dead}:${deadPort}`, '-p', `${local.web}:web:8000`, '-p', `${local.source}:${source.port}`, '-p', `${local.banner}:${bannerPort}`]);
      tunnel.child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      tunnel.child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
      await eventually(async () => (out.match(/Tunnelling /g) ?? []).length === 6 || tunnel?.child.exitCode !== null, 30_000, 'the tunnel listening');
      assert.equal(tunnel.child.exitCode, null, out);
    });

    after(async () => {
      if (tunnel && tunnel.child.exitCode === null) tunnel.child.kill('SIGKILL');
    });

    it('prints one line per port: local address → device:port', () => {
      assert.match(out, new RegExp(`Tunnelling 127\\.0\\.0\\.1:${local.http} → ${uuid.slice(0, 7)}:${httpPort}`));
      assert.match(out, new RegExp(`Tunnelling 127\\.0\\.0\\.1:${local.web} → ${uuid.slice(0, 7)}:web:8000`));
    });

    it('forwards HTTP to a server on the device host', async () => {
      const res = await fetch(`http://127.0.0.1:${local.http}/some/path`);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'hello from the host /some/path');
    });

    it('forwards to a port of a service container (localPort:service:remotePort)', async () => {
      const res = await fetch(`http://127.0.0.1:${local.web}/`);
      assert.equal((await res.text()).trim(), 'hello-from-web');
    });

    it('a service that speaks first: its greeting arrives whole every time (20 connections)', async () => {
      const greetings = await Promise.all(Array.from({ length: 20 }, () => new Promise<string>((resolve, reject) => {
        const socket = net.connect({ host: '127.0.0.1', port: local.banner });
        let got = '';
        socket.on('data', (d: Buffer) => (got += d.toString()));
        socket.on('end', () => resolve(got));
        socket.on('error', reject);
      })));
      for (const g of greetings) assert.equal(g, 'SSH-2.0-skiff-test-banner\r\n');
    });

    it('carries 20 parallel connections to an echo server, each byte back and half-close kept', async () => {
      const payloads = Array.from({ length: 20 }, (_, i) => randomBytes(64 * 1024 + i * 4099));
      const answers = await Promise.all(payloads.map((p) => echoRoundTrip(local.echo, p)));
      answers.forEach((a, i) => assert.ok(a.equals(payloads[i] as Buffer), `connection ${i}: ${a.length} bytes back of ${payloads[i]?.length}`));
    });

    it('a port nothing listens on closes that connection with one line; the tunnel stays up', async () => {
      const socket = net.connect({ host: '127.0.0.1', port: local.dead });
      socket.on('error', () => undefined);
      const got: Buffer[] = [];
      socket.on('data', (d: Buffer) => got.push(d));
      await closedWithin(socket, 15_000, () => `the refused connection to close; the tunnel printed: ${out}`);
      assert.equal(Buffer.concat(got).length, 0);
      await eventually(async () => new RegExp(`port ${deadPort}: .*nothing listens`, 'i').test(out), 15_000, 'the refused line').catch((err: Error) => {
        throw new Error(`${err.message}\nthe tunnel printed: ${out}`);
      });
      assert.equal(tunnel?.child.exitCode, null);
      const res = await fetch(`http://127.0.0.1:${local.http}/after`);
      assert.equal(await res.text(), 'hello from the host /after');
    });

    it("a local reader that stalls stalls the device's writer: the CLI's memory does not grow, and every byte arrives once it reads again", async () => {
      const pid = tunnel?.child.pid ?? 0;
      const before = rssKiB(pid);
      const socket = net.connect({ host: '127.0.0.1', port: local.source });
      socket.pause();
      await eventually(async () => source.sent > 0 && Date.now() - source.lastProgress > 3000, 120_000, 'the source stalled');
      const grown = rssKiB(pid) - before;
      assert.ok(source.sent < 128 * 1024 * 1024, `the source wrote ${source.sent} bytes with nobody reading`);
      assert.ok(grown < 64 * 1024, `the CLI grew by ${grown} KiB while its reader stalled (${source.sent} bytes sent)`);
      let received = 0;
      socket.on('data', (d: Buffer) => (received += d.length));
      source.finish = true;
      socket.resume();
      await once(socket, 'end');
      assert.equal(received, source.sent);
      socket.destroy();
    });

    it('Ctrl-C stops it with exit 0, and the sessions are in device sessions', async () => {
      assert.ok(tunnel);
      tunnel.child.kill('SIGINT');
      const r = await tunnel.done;
      assert.equal(r.code, 0, out);
      // The server closes its log entries as the sessions end, a moment after ours.
      let echoes: DeviceSession[] = [];
      await eventually(async () => {
        const listed = await run(['device', 'sessions', uuid, '--json']);
        assert.equal(listed.code, 0, listed.stderr);
        const sessions = (JSON.parse(listed.stdout) as { result: DeviceSession[] }).result;
        echoes = sessions.filter((s) => s.kind === 'tunnel' && s.target.endsWith(` ${echoPort}`));
        return echoes.length === 20 && echoes.every((s) => s.endedAt !== null);
      }, 30_000, 'the 20 echo sessions logged and closed').catch((err: Error) => {
        throw new Error(`${err.message}: ${JSON.stringify(echoes.slice(0, 2))}`);
      });
      assert.ok(echoes.every((s) => s.bytesIn >= 64 * 1024 && s.bytesOut >= 64 * 1024 && s.actor === ADMIN.email), JSON.stringify(echoes[0]));
      const table = await run(['device', 'sessions', uuid, '--limit', '3']);
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /STARTED\s+KIND\s+WHO\s+TARGET\s+DURATION\s+IN\s+OUT\s+OUTCOME/);
      assert.equal(table.stdout.trim().split('\n').length, 4, table.stdout);
    });
  });

  describe('device tunnel: bad input, one line each', () => {
    for (const [spec, pattern] of [['70000', /outside 1-65535/], ['0', /outside 1-65535/], ['abc', /not a number/], ['1.2.3.4:80', /ambiguous/], ['', /empty/]] as const) {
      it(`-p '${spec}' exits 2`, async () => {
        const r = await run(['device', 'tunnel', uuid, '-p', spec]);
        assert.equal(r.code, 2, r.stderr);
        assert.match(oneLine(r), pattern);
      });
    }

    it('a local port in use: one line naming it, exit 14', async () => {
      const busy = net.createServer().listen(0, '127.0.0.1');
      await once(busy, 'listening');
      const port = (busy.address() as net.AddressInfo).port;
      try {
        const r = await run(['device', 'tunnel', uuid, '-p', `${port}:${httpPort}`]);
        assert.equal(r.code, 14, r.stderr);
        assert.match(oneLine(r), new RegExp(`127\\.0\\.0\\.1:${port} is already in use`));
      } finally {
        busy.close();
      }
    });

    it('an offline device: one line, exit 14 (tunnel and ssh); an unknown one: exit 12', async () => {
      const config = (await api(server?.url ?? '', 'POST', `/fleets/${fleet}/config`, { token, body: {} })).body as Record<string, unknown>;
      const offline = randomBytes(16).toString('hex');
      const registered = await api(server?.url ?? '', 'POST', '/device/register', {
        token: String(config.apiKey),
        body: { uuid: offline, device_type: 'genericx86-64-ext', api_key: randomBytes(16).toString('hex'), ...(typeof config.applicationId === 'number' ? { application: config.applicationId } : {}) },
      });
      assert.equal(registered.status, 201, JSON.stringify(registered.body));
      const t = await run(['device', 'tunnel', offline, '-p', `${await freePort()}:80`]);
      assert.equal(t.code, 14, t.stderr);
      assert.match(oneLine(t), new RegExp(`device ${offline.slice(0, 7)} is not connected to the server`));
      const s = await run(['device', 'ssh', offline, 'web', '-c', 'true']);
      assert.equal(s.code, 14, s.stderr);
      assert.match(oneLine(s), /not connected|offline/);
      const unknown = randomBytes(16).toString('hex');
      const u = await run(['device', 'tunnel', unknown, '-p', `${await freePort()}:80`]);
      assert.equal(u.code, 12, u.stderr);
      oneLine(u);
      const us = await run(['device', 'ssh', unknown, '-c', 'true']);
      assert.equal(us.code, 12, us.stderr);
      oneLine(us);
    });
  });

  describe('device tunnel on the LAN (an address)', () => {
    it('forwards straight to address:port; a refused port is one line, the tunnel stays up; a service form is refused', async () => {
      const [port, dead] = [await freePort(), await freePort()];
      const t = cli(['device', 'tunnel', '127.0.0.1', '-p', `${port}:${echoPort}`, '-p', `${await freePort()}:${dead}`]);
      let out = '';
      t.child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
      await eventually(async () => (out.match(/Tunnelling /g) ?? []).length === 2, 30_000, 'the LAN tunnel listening');
      const data = randomBytes(3 * 1024 * 1024);
      assert.ok((await echoRoundTrip(port, data)).equals(data));
      const deadLocal = Number(new RegExp(`127\\.0\\.0\\.1:(\\d+) → 127\\.0\\.0\\.1:${dead}`).exec(out)?.[1]);
      const refused = net.connect({ host: '127.0.0.1', port: deadLocal });
      refused.on('error', () => undefined);
      await closedWithin(refused, 15_000, () => `the refused connection to close; the tunnel printed: ${out}`);
      await eventually(async () => new RegExp(`port ${dead}: nothing listens on port ${dead} of 127\\.0\\.0\\.1`).test(out), 15_000, 'the refused line');
      assert.ok((await echoRoundTrip(port, data)).equals(data));
      t.child.kill('SIGINT');
      assert.equal((await t.done).code, 0, out);
      const service = await run(['device', 'tunnel', '127.0.0.1', '-p', '8080:web:80']);
      assert.equal(service.code, 2, service.stderr);
      assert.match(oneLine(service), /through the server only/);
    });
  });

  describe('breaking it (H5)', () => {
    it('Ctrl-C with a connection whose local reader stalls ends at once, and reports no dropped session', async () => {
      // A host service that writes until its socket pushes back, so the tunnel's WebSocket is paused.
      const writer = net.createServer((s) => {
        s.on('error', () => undefined);
        const chunk = Buffer.alloc(64 * 1024, 121);
        const pump = (): void => {
          while (s.writable && s.write(chunk));
          if (s.writable) s.once('drain', pump);
        };
        pump();
      });
      await new Promise<void>((resolve) => writer.listen(0, '127.0.0.1', resolve));
      try {
        const port = await freePort();
        const t = cli(['device', 'tunnel', uuid, '-p', `${port}:${(writer.address() as net.AddressInfo).port}`]);
        let out = '';
        t.child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
        t.child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
        await eventually(async () => /Tunnelling /.test(out), 30_000, 'the tunnel listening');
        const stalled = net.connect({ host: '127.0.0.1', port });
        stalled.on('error', () => undefined);
        let got = 0;
        stalled.once('data', (d: Buffer) => {
          got += d.length;
          stalled.pause();
        });
        await eventually(async () => got > 0, 30_000, 'the first bytes through the tunnel');
        // Long enough for every buffer on the way to fill and the CLI to pause its WebSocket.
        await eventually(async () => (await run(['device', 'sessions', uuid, '--json'])).stdout.includes('"bytesOut":'), 10_000, 'the session logged');
        const started = Date.now();
        t.child.kill('SIGINT');
        const r = await t.done;
        const took = Date.now() - started;
        stalled.destroy();
        assert.equal(r.code, 0, out);
        assert.ok(took < 1500, `Ctrl-C took ${took} ms: ${out}`);
        assert.doesNotMatch(out, /dropped/, out);
      } finally {
        writer.close();
      }
    });

    it('SIGTERM to device ssh -c whose stdout stalls: 143 at once, no error, the session not a protocol error', async () => {
      const c = cli(['device', 'ssh', uuid, 'web', '-c', 'yes']);
      const out = c.child.stdout;
      assert.ok(out);
      out.pause();
      // Every buffer on the way full: our pipe, the CLI's stdout, its WebSocket and the stream's window.
      await eventually(async () => out.readableLength >= out.readableHighWaterMark, 30_000, 'our end of the pipe to fill');
      const started = Date.now();
      const exited = once(c.child, 'exit');
      c.child.kill('SIGTERM');
      const [code] = await exited as [number | null];
      const took = Date.now() - started;
      out.resume();
      const r = await c.done;
      assert.equal(code, 143, r.stderr);
      assert.ok(took < 1500, `took ${took} ms`);
      assert.equal(r.stderr, '');
      let yes: DeviceSession | undefined;
      await eventually(async () => {
        yes = (JSON.parse((await run(['device', 'sessions', uuid, '--json'])).stdout) as { result: DeviceSession[] }).result.find((s) => s.target === 'web: yes');
        return yes?.endedAt !== null && yes?.endedAt !== undefined;
      }, 15_000, 'the session closed in the log');
      assert.notEqual(yes?.outcome, 'protocol error', JSON.stringify(yes));
    });

    it('device ssh -c with 10 MiB of fast output: every byte, the exit status, nothing else on stderr', async () => {
      for (let i = 0; i < 4; i++) {
        const r = await run(['device', 'ssh', uuid, 'web', '-c', 'head -c 10485760 /dev/zero; exit 7']);
        assert.equal(r.code, 7, r.stderr);
        assert.equal(Buffer.byteLength(r.stdout), 10 * 1024 * 1024);
        assert.equal(r.stderr, '', `run ${i}`);
      }
    });
  });

  describe('device ssh', () => {
    it("--command: stdout and stderr apart, the command's exit status becomes ours", async () => {
      const r = await run(['device', 'ssh', uuid, 'web', '--command', 'echo out; echo err >&2; exit 3']);
      assert.equal(r.code, 3, r.stderr);
      assert.equal(r.stdout, 'out\n');
      assert.equal(r.stderr, 'err\n');
    });

    it('--tty gives --command a terminal', async () => {
      const r = await run(['device', 'ssh', uuid, 'web', '-c', 'tty; test -t 0 && echo terminal', '-t']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^\/dev\/pts\/\d+\r?\nterminal\r?\n$/);
      const plain = await run(['device', 'ssh', uuid, 'web', '-c', 'test -t 0 || echo no-terminal']);
      assert.equal(plain.stdout, 'no-terminal\n');
    });

    it('device sessions: a LAN address is refused (exit 2); --limit out of range too', async () => {
      const lan = await run(['device', 'sessions', '192.168.1.23']);
      assert.equal(lan.code, 2, lan.stderr);
      assert.match(oneLine(lan), /not a device uuid/);
      const limit = await run(['device', 'sessions', uuid, '--limit', '0']);
      assert.equal(limit.code, 2, limit.stderr);
    });

    it('-c on the device host (development mode allows the host shell)', async () => {
      const r = await run(['device', 'ssh', uuid, '-c', 'echo host-$((6*7)); test -e /run-id && echo in-a-container || echo not-in-a-container']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'host-42\nnot-in-a-container\n');
    });

    it('a device that does not allow the host shell (--no-host-shell): one line, exit 9', async () => {
      const config = (await api(server?.url ?? '', 'POST', `/fleets/${fleet}/config`, { token, body: { developmentMode: true } })).body as Record<string, unknown>;
      const dataDir = scratchDir('skiff-tunnel-agent-');
      writeFileSync(path.join(dataDir, 'config.json'), JSON.stringify({ ...config, appUpdatePollInterval: 2000 }));
      const strict = await startAgent({ dataDir, args: ['--config', path.join(dataDir, 'config.json'), '--no-host-shell'] });
      agents.push(strict);
      await eventually(async () => /event channel connected/.test(strict.output()), 30_000, 'the second agent connected');
      const r = await run(['device', 'ssh', strict.uuid, '-c', 'echo should-not-run']);
      assert.equal(r.code, 9, r.stderr);
      assert.equal(r.stdout, '');
      assert.match(oneLine(r), /host/i);
    });

    it('an unknown service: one line, exit 12', async () => {
      const r = await run(['device', 'ssh', uuid, 'nosuch', '-c', 'true']);
      assert.equal(r.code, 12, r.stderr);
      oneLine(r);
    });

    it('piped stdin reaches the command whole (in a service, and on the host with no service argument), its end is the command\'s EOF', async () => {
      const data = randomBytes(2 * 1024 * 1024);
      for (const target of [['web'], []]) {
        const s = cli(['device', 'ssh', uuid, ...target, '-c', 'wc -c; echo done'], { stdin: 'pipe' });
        s.child.stdin?.end(data);
        const r = await s.done;
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.replace(/\s+/g, ' ').trim(), `${data.length} done`, `target ${target.join(' ') || 'the host'}`);
      }
    });

    it('stdin is read no faster than the device takes it (a command that does not read it)', async () => {
      const s = cli(['device', 'ssh', uuid, 'web', '-c', 'sleep 321'], { stdin: 'pipe' });
      await eventually(async () => (await webProcesses()).some((p) => p.includes('sleep 321')), 30_000, 'sleep 321 running in web');
      const stdin = s.child.stdin;
      assert.ok(stdin);
      stdin.on('error', () => undefined);
      const chunk = Buffer.alloc(1024 * 1024, 121);
      let accepted = 0;
      let lastProgress = Date.now();
      const pump = (): void => {
        while (accepted < 1024 * 1024 * 1024) {
          const more = stdin.write(chunk);
          accepted += chunk.length;
          lastProgress = Date.now();
          if (!more) {
            stdin.once('drain', pump);
            return;
          }
        }
      };
      pump();
      await eventually(async () => Date.now() - lastProgress > 3000, 120_000, "the CLI's stdin stalled");
      assert.ok(accepted < 128 * 1024 * 1024, `the CLI took ${accepted} bytes of stdin that nobody reads`);
      s.child.kill('SIGTERM');
      assert.equal((await s.done).code, 143);
    });

    it('on a terminal: a shell that runs what is typed, has our size and follows its changes, and whose exit 7 is ours', async () => {
      const tty = startTty(['device', 'ssh', uuid, 'web'], { env: env() });
      tty.send('echo typed-$((6*7))\r');
      await tty.waitFor(/typed-42/, 30_000);
      tty.send('stty size\r');
      await tty.waitFor(/40 120/, 15_000);
      // Resize our terminal as a window manager would: its new size, and SIGWINCH to the CLI.
      const pts = await eventually(async () => {
        const pids = execFileSync('pgrep', ['-f', `device ssh ${uuid} web`]).toString().trim().split('\n');
        for (const pid of pids) {
          const fd0 = (() => { try { return readlinkSync(`/proc/${pid}/fd/0`); } catch { return ''; } })();
          if (fd0.startsWith('/dev/pts/')) return fd0;
        }
        return undefined;
      }, 10_000, "the CLI's terminal");
      execFileSync('stty', ['-F', pts, 'cols', '100', 'rows', '30']);
      await eventually(async () => {
        tty.send('stty size\r');
        return tty.waitFor(/30 100/, 1000).then(() => true, () => false);
      }, 15_000, 'the remote terminal resized to 30 rows, 100 columns');
      tty.send('exit 7\r');
      assert.equal(await tty.done, 7, tty.output());
    });

    it('a CLI stopped mid-command (SIGTERM) ends the remote command; killed (SIGKILL), the server ends it', async () => {
      for (const [signal, marker] of [['SIGTERM', 'sleep 313'], ['SIGKILL', 'sleep 317']] as const) {
        const s = cli(['device', 'ssh', uuid, 'web', '-c', marker]);
        await eventually(async () => (await webProcesses()).some((p) => p.includes(marker)), 30_000, `${marker} running in web`);
        s.child.kill(signal);
        const r = await s.done;
        if (signal === 'SIGTERM') assert.equal(r.code, 143, r.stderr);
        await eventually(async () => !(await webProcesses()).some((p) => p.includes(marker)), 30_000, `${marker} gone after the CLI got ${signal}`);
      }
    });

    it("the device's connection dropping mid-session: ssh exits 13 with one line; the tunnel reports its open connection, refuses new ones and stays up", async () => {
      assert.ok(agent);
      const localPort = await freePort();
      const t = cli(['device', 'tunnel', uuid, '-p', `${localPort}:${echoPort}`]);
      let out = '';
      t.child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
      await eventually(async () => /Tunnelling /.test(out), 30_000, 'the tunnel listening');
      const open = net.connect({ host: '127.0.0.1', port: localPort, allowHalfOpen: true });
      open.on('error', () => undefined);
      const echoed: Buffer[] = [];
      open.on('data', (d: Buffer) => echoed.push(d));
      open.write('ping');
      await eventually(async () => Buffer.concat(echoed).toString() === 'ping', 15_000, 'the echo through the open connection');
      const s = cli(['device', 'ssh', uuid, 'web', '-c', 'sleep 319']);
      await eventually(async () => (await webProcesses()).some((p) => p.includes('sleep 319')), 30_000, 'sleep 319 running in web');
      await agent.kill('SIGKILL');
      const r = await s.done;
      assert.equal(r.code, 13, r.stderr);
      assert.match(oneLine(r), new RegExp(`device ${uuid.slice(0, 7)}'s connection to the server dropped`));
      // The server passes the device stream's end on as an EOF before its 4010, so this client sees
      // a FIN (then our reset, which a client that no longer reads does not notice).
      await endedWithin(open, 15_000, () => `the open connection to end; the tunnel printed: ${out}`);
      await eventually(async () => new RegExp(`port ${echoPort}: the device's connection to the server dropped`).test(out), 15_000, 'the dropped line').catch((err: Error) => {
        throw new Error(`${err.message}\nthe tunnel printed: ${out}`);
      });
      const late = net.connect({ host: '127.0.0.1', port: localPort });
      late.on('error', () => undefined);
      await closedWithin(late, 45_000, () => `a new connection to close; the tunnel printed: ${out}`);
      await eventually(async () => new RegExp(`port ${echoPort}: .*not connected`).test(out), 15_000, 'the refused line').catch((err: Error) => {
        throw new Error(`${err.message}\nthe tunnel printed: ${out}`);
      });
      assert.equal(t.child.exitCode, null, out);
      t.child.kill('SIGINT');
      assert.equal((await t.done).code, 0, out);
    });
  });
});
