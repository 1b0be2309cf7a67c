// The whole developer loop on one machine: build the CLI's example, start an agent on this
// machine's engine (a "virtual device"), push examples/multi-service to it, and show its logs.
// Ctrl-C stops the log stream and the agent; the example's containers are removed.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'bin/run.js');
const port = process.env.SKIFF_DEMO_PORT ?? '48484';
const enginePort = process.env.SKIFF_DEMO_ENGINE_PORT ?? '2375';
const dataDir = process.env.SKIFF_DEMO_DATA ?? mkdtempSync(path.join(os.tmpdir(), 'skiff-demo-'));
const run = (args, opts = {}) => spawnSync(process.execPath, [bin, ...args], { stdio: 'inherit', ...opts });

spawnSync(process.execPath, [path.join(root, 'scripts/demo-base-images.mjs')], { stdio: 'inherit' });
console.error(`\n== 1. skiff build: the example for a Raspberry Pi 4 is built the same way; here for this machine\n`);
if (run(['build', path.join(root, 'examples/multi-service'), '--deviceType', 'intel-nuc', '--nologs']).status !== 0) process.exit(1);

// Another agent (or anything) on the demo's ports would get the demo's release: stop here instead.
for (const p of [port, enginePort]) {
  const taken = await new Promise((resolve) => {
    const socket = net.connect(Number(p), '127.0.0.1', () => { socket.destroy(); resolve(true); });
    socket.on('error', () => resolve(false));
  });
  if (taken) {
    console.error(`Error: something already answers on 127.0.0.1:${p}. Stop it, or pick free ports with SKIFF_DEMO_PORT and SKIFF_DEMO_ENGINE_PORT.`);
    process.exit(1);
  }
}

console.error(`\n== 2. skiff agent: this machine becomes a device (API on 127.0.0.1:${port}, engine on ${enginePort})\n`);
const agent = spawn(process.execPath, [bin, 'agent', '--data-dir', dataDir, '--listen-address', '127.0.0.1', '--listen-port', port, '--engine-port', enginePort], { stdio: ['ignore', 'inherit', 'inherit'] });
const cleanup = () => {
  agent.kill('SIGTERM');
  try {
    const uuid = JSON.parse(readFileSync(path.join(dataDir, 'config.json'), 'utf8')).uuid;
    const docker = '/usr/bin/docker';
    const list = (kind, ...args) => spawnSync(docker, [...kind, ...args, '--filter', `label=io.skiff.agent=${uuid}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
    const ids = list(['ps', '-aq']);
    if (ids.length) spawnSync(docker, ['rm', '-f', ...ids], { stdio: 'ignore' });
    // The release's network and volume go too: the demo leaves the engine as it found it.
    const networks = list(['network', 'ls', '-q']);
    if (networks.length) spawnSync(docker, ['network', 'rm', ...networks], { stdio: 'ignore' });
    const volumes = list(['volume', 'ls', '-q']);
    if (volumes.length) spawnSync(docker, ['volume', 'rm', '-f', ...volumes], { stdio: 'ignore' });
  } catch {
    // nothing to clean
  }
};
process.on('SIGINT', () => { cleanup(); process.exit(0); });
// The agent's data folder goes too, unless SKIFF_DEMO_DATA named one to keep.
process.on('exit', () => { if (!process.env.SKIFF_DEMO_DATA) rmSync(dataDir, { recursive: true, force: true }); });
let agentExit;
agent.on('exit', (code) => { agentExit = code ?? 1; });
for (let i = 0; ; i++) {
  const ok = await fetch(`http://127.0.0.1:${port}/ping`).then((r) => r.ok).catch(() => false);
  if (ok) break;
  if (agentExit !== undefined || i >= 300) {
    console.error(agentExit !== undefined ? 'Error: the agent did not start (see its message above).' : 'Error: the agent did not answer within 30 s.');
    cleanup();
    process.exit(1);
  }
  await new Promise((r) => setTimeout(r, 100));
}

console.error(`\n== 3. skiff push: build on the device's engine, run the release, then follow its logs (Ctrl-C to end)\n`);
const push = spawn(process.execPath, [bin, 'push', `127.0.0.1:${port}`, '--source', path.join(root, 'examples/multi-service'), '--dockerPort', enginePort, '--env', 'INTERVAL=2'], { stdio: 'inherit' });
push.on('exit', (code) => {
  cleanup();
  process.exit(code ?? 0);
});
