// The whole developer loop on one machine: build the CLI's example, start an agent on this
// machine's engine (a "virtual device"), push examples/multi-service to it, and show its logs.
// Ctrl-C stops the log stream and the agent; the example's containers are removed.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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

console.error(`\n== 2. skiff agent: this machine becomes a device (API on 127.0.0.1:${port}, engine on ${enginePort})\n`);
const agent = spawn(process.execPath, [bin, 'agent', '--data-dir', dataDir, '--listen-address', '127.0.0.1', '--listen-port', port, '--engine-port', enginePort], { stdio: ['ignore', 'inherit', 'inherit'] });
const cleanup = () => {
  agent.kill('SIGTERM');
  try {
    const uuid = JSON.parse(readFileSync(path.join(dataDir, 'config.json'), 'utf8')).uuid;
    const docker = '/usr/bin/docker';
    const ids = spawnSync(docker, ['ps', '-aq', '--filter', `label=io.skiff.agent=${uuid}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
    if (ids.length) spawnSync(docker, ['rm', '-f', ...ids], { stdio: 'ignore' });
  } catch {
    // nothing to clean
  }
};
process.on('SIGINT', () => { cleanup(); process.exit(0); });
// The agent's data folder goes too, unless SKIFF_DEMO_DATA named one to keep.
process.on('exit', () => { if (!process.env.SKIFF_DEMO_DATA) rmSync(dataDir, { recursive: true, force: true }); });
for (let i = 0; i < 100; i++) {
  const ok = await fetch(`http://127.0.0.1:${port}/ping`).then((r) => r.ok).catch(() => false);
  if (ok) break;
  await new Promise((r) => setTimeout(r, 100));
}

console.error(`\n== 3. skiff push: build on the device's engine, run the release, then follow its logs (Ctrl-C to end)\n`);
const push = spawn(process.execPath, [bin, 'push', `127.0.0.1:${port}`, '--source', path.join(root, 'examples/multi-service'), '--dockerPort', enginePort, '--env', 'INTERVAL=2'], { stdio: 'inherit' });
push.on('exit', (code) => {
  cleanup();
  process.exit(code ?? 0);
});
