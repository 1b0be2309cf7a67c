/**
 * The agent's link to its engine. The agent stays up for months on small devices, so it talks to
 * the engine through engine-lite (node:http) and never loads dockerode, whose transports (ssh2,
 * gRPC) cost a device over 10 MB of resident memory; and it must ride out losing the engine.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { cleanupAgent, eventually, startAgent, status, type TestAgent } from '../support/agent.js';

/** A stand-in socket for the engine that can be cut and restored (the real engine keeps running). */
function engineSocket(file: string): { up(): Promise<void>; down(): Promise<void> } {
  let server: net.Server | undefined;
  const open = new Set<net.Socket>();
  return {
    up: () => new Promise((resolve, reject) => {
      server = net.createServer((client) => {
        const engine = net.connect('/var/run/docker.sock');
        for (const s of [client, engine]) {
          open.add(s);
          s.on('close', () => open.delete(s));
          s.on('error', () => { client.destroy(); engine.destroy(); });
        }
        client.pipe(engine).pipe(client);
      });
      server.once('error', reject);
      server.listen(file, () => resolve());
    }),
    down: () => new Promise((resolve) => {
      for (const s of open) s.destroy();
      if (server) server.close(() => resolve());
      else resolve();
    }),
  };
}

describe('agent: its engine client', () => {
  const agents: TestAgent[] = [];
  after(async () => {
    for (const a of agents) {
      await a.kill('SIGKILL');
      await cleanupAgent(a.uuid);
      rmSync(a.dataDir, { recursive: true, force: true });
    }
  });

  it('runs without dockerode, docker-modem, ssh2, gRPC or oclif (started directly)', async () => {
    // NODE_DEBUG=module traces every CommonJS module Node loads; dockerode and its dependencies are CommonJS.
    const agent = await startAgent({ env: { NODE_DEBUG: 'module' } });
    agents.push(agent);
    // Applied (an empty target on a new device) means it connected and read the engine's state.
    await eventually(async () => (await status(agent.url)).appState === 'applied', 30_000, 'the agent to settle');
    const trace = agent.output();
    assert.match(trace, /node_modules\/better-sqlite3\//, 'the trace lists the CommonJS packages the agent loads');
    for (const name of ['dockerode', 'docker-modem', 'ssh2', '@grpc', '@oclif/core']) {
      assert.doesNotMatch(trace, new RegExp(`node_modules/${name}/`), `the agent loaded ${name}`);
    }
  });

  it('with --json it starts through oclif and prints one JSON document first', async () => {
    const agent = await startAgent({ args: ['--json'] });
    agents.push(agent);
    const first = JSON.parse(agent.output().split('\n')[0] ?? '') as { status: string; result: { uuid: string; developmentMode: boolean } };
    assert.equal(first.status, 'ok');
    assert.equal(first.result.uuid, agent.uuid);
    assert.equal(first.result.developmentMode, true);
  });

  it('loses its engine (event stream cut, socket gone) and carries on once it is back', async () => {
    const file = path.join(os.tmpdir(), `skiff-engine-${randomBytes(3).toString('hex')}.sock`);
    const socket = engineSocket(file);
    await socket.up();
    try {
      const agent = await startAgent({ env: { DOCKER_HOST: `unix://${file}` } });
      agents.push(agent);
      await eventually(async () => (await status(agent.url)).appState === 'applied', 30_000, 'the agent to settle');
      await socket.down();
      await eventually(async () => agent.output().includes('Lost the engine event stream; reconnecting'), 15_000, 'the agent to notice');
      await eventually(async () => (await status(agent.url)).appState === 'failed', 30_000, 'a failed snapshot');
      await socket.up();
      await eventually(async () => (await status(agent.url)).appState === 'applied', 60_000, 'the agent to recover');
    } finally {
      await socket.down();
      rmSync(file, { force: true });
    }
  });
});
