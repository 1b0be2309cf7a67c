/**
 * `skiff logs` as a user runs it: against the real agent (identical lines, a reconnect after the
 * agent restarts), against a device that sends entries of odd shapes, and with a bad address.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { runCli, startCli } from '../support/cli.js';
import { BASE_AMD64, ensureBaseImages } from '../support/engine.js';
import { cleanupAgent, eventually, startAgent, status, type TestAgent } from '../support/agent.js';

const RUN = randomBytes(3).toString('hex');
const count = (text: string, re: RegExp) => text.split('\n').filter((l) => re.test(l)).length;

describe('skiff logs (the binary)', function () {
  describe('against the real agent', () => {
    let agent: TestAgent;
    const agents: TestAgent[] = [];
    const device = () => `127.0.0.1:${agent.port}`;

    /** The agent's own history of the `echo` service, read from the device API. */
    async function history(): Promise<string[]> {
      const text = await (await fetch(`${agent.url}/v2/local/logs?follow=false`)).text();
      return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { message: string; serviceName?: string }).filter((e) => e.serviceName === 'echo').map((e) => e.message);
    }

    before(async () => {
      await ensureBaseImages();
      agent = await startAgent();
      agents.push(agent);
      // One service that writes `same` three times in a row (usually within a millisecond), then
      // which run of the container this is, and stays up (sh as PID 1 needs the trap to stop).
      const script = "trap 'exit 0' TERM; n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n; echo same; echo same; echo same; echo run $n done; while :; do sleep 1 & wait $!; done";
      const current = ((await (await fetch(`${agent.url}/v2/local/target-state`)).json()) as { state: { local: { apps: object } } }).state;
      current.local.apps = {
        1: {
          name: `logs${RUN}`, commit: `c0ffee${RUN}`, releaseId: '1', volumes: {}, networks: {},
          services: { 1: { serviceName: 'echo', serviceId: 1, imageId: 1, image: BASE_AMD64, command: ['sh', '-c', script], restart: 'always', running: true, environment: {}, labels: {} } },
        },
      };
      const res = await fetch(`${agent.url}/v2/local/target-state`, { method: 'POST', body: JSON.stringify(current) });
      assert.equal(res.status, 200, await res.text());
      await eventually(async () => (await status(agent.url)).appState === 'applied' && (await history()).includes('run 1 done'), 60_000, 'the echo service to have written its lines');
    });
    after(async () => {
      for (const a of agents) {
        await a.kill('SIGKILL');
        await cleanupAgent(a.uuid);
      }
    });

    it('prints identical lines as many times as the service wrote them', async () => {
      assert.deepEqual(await history(), ['same', 'same', 'same', 'run 1 done']);
      const r = await runCli(['logs', device(), '--service', 'echo']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(count(r.stdout, /\[echo\] same$/), 3, r.stdout);
      const json = await runCli(['logs', device(), '--service', 'echo', '--json']);
      assert.equal(json.stdout.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { message: string }).message).filter((m) => m === 'same').length, 3, json.stdout);
    });

    it('--tail across a restart of the agent: the lines it sends again are not printed twice', async () => {
      const { child, done } = startCli(['logs', device(), '--tail']);
      let out = '';
      let err = '';
      child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      try {
        await eventually(async () => /\[echo\] run 1 done/.test(out), 20_000, 'the first lines');
        await agent.kill('SIGTERM');
        agent = await startAgent({ dataDir: agent.dataDir, port: agent.port, enginePort: agent.enginePort });
        agents.push(agent);
        // The new agent knows nothing of what it sent before: it reads the running container's
        // log again, with the engine's timestamps.
        await eventually(async () => (await history()).join('|') === 'same|same|same|run 1 done', 30_000, 'the restarted agent to have read the log again');
        await eventually(async () => /reconnecting/.test(err), 30_000, 'the stream to drop');
        // New lines after the replay: once `run 2 done` is printed, the replay (which comes before it) was too.
        const restart = await runCli(['device', 'restart', device(), '--service', 'echo']);
        assert.equal(restart.code, 0, restart.stderr);
        await eventually(async () => /\[echo\] run 2 done/.test(out), 30_000, 'the lines of the restarted service');
      } finally {
        child.kill('SIGINT');
      }
      assert.equal((await done).code, 0, err);
      assert.equal(count(out, /\[echo\] same$/), 6, out);
      assert.equal(count(out, /\[echo\] run 1 done$/), 1, out);
      assert.equal(count(out, /\[echo\] run 2 done$/), 1, out);
    });
  });

  describe('against a balenaOS device that sends entries of any shape', () => {
    // A balenaOS supervisor cannot run here; this plays its local-mode API, with a log stream whose
    // first line has no timestamp (as the supervisor's does) and lines of unexpected shapes.
    const T = Date.parse('2026-11-30T12:00:00Z');
    const lines = [
      JSON.stringify({ message: 'Streaming logs', isSystem: true }),
      JSON.stringify({ message: 'normal', timestamp: T, serviceName: 'main', serviceId: 1 }),
      JSON.stringify({ message: 'no service name', timestamp: T, serviceId: 7 }),
      JSON.stringify({ message: 'no timestamp', serviceName: 'main' }),
      JSON.stringify({ message: 'a timestamp that is not one', timestamp: 'soon', serviceName: 'main' }),
      JSON.stringify({ message: { not: 'a string' }, timestamp: T, serviceName: 'main' }),
      JSON.stringify({ message: 42, timestamp: T, serviceName: 'main' }),
      JSON.stringify({ timestamp: T, serviceName: 'main' }),
      'not JSON at all',
      '[1,2,3]',
      JSON.stringify({ message: 'last', timestamp: T + 1000, serviceName: 'main' }),
    ];
    let server: Server;
    let address: string;

    before(async () => {
      server = createServer((req, res) => {
        const json = (body: unknown) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
        if (req.url === '/ping') res.writeHead(200).end('OK');
        else if (req.url === '/v2/version') json({ status: 'success', version: '16.7.4' });
        else if (req.url === '/v2/local/device-info') json({ status: 'success', info: { arch: 'aarch64', deviceType: 'raspberrypi4-64' } });
        else if (req.url?.startsWith('/v2/local/logs')) res.writeHead(200, { 'Content-Type': 'application/x-ndjson' }).end(lines.join('\n'));
        else res.writeHead(404).end();
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(() => new Promise<void>((r) => server.close(() => r())));

    it('prints every entry as well as it can, and exits 0', async () => {
      const r = await runCli(['logs', address]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '');
      const blank = ' '.repeat(19);
      assert.deepEqual(r.stdout.split('\n').slice(0, -1), [
        `${blank} [system] Streaming logs`,
        '2026-11-30 12:00:00 [main] normal',
        '2026-11-30 12:00:00 [service 7] no service name',
        `${blank} [main] no timestamp`,
        `${blank} [main] a timestamp that is not one`,
        '2026-11-30 12:00:00 [main] {"not":"a string"}',
        '2026-11-30 12:00:00 [main] 42',
        `2026-11-30 12:00:00 [main] {"timestamp":${T},"serviceName":"main"}`,
        `${blank} not JSON at all`,
        `${blank} [1,2,3]`,
        '2026-11-30 12:00:01 [main] last',
      ]);
    });

    it('--json: one object per entry, in the shape the agent sends', async () => {
      const r = await runCli(['logs', address, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const entries = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { message: string; timestamp?: number });
      assert.equal(entries.length, lines.length);
      assert.deepEqual(entries[0], { message: 'Streaming logs', isSystem: true });
      assert.ok(entries.every((e) => typeof e.message === 'string'));
    });
  });

  it('an invalid device address is a usage error (exit 2) saying it is invalid, not unreachable', async () => {
    const r = await runCli(['logs', '10.0.0.0.1']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /invalid device address '10\.0\.0\.0\.1': an IPv4 address is four numbers from 0 to 255 separated by dots/);
    assert.doesNotMatch(r.stderr, /cannot reach/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });
});
