// Log latency: from a container writing a line to `skiff logs <device> --tail --json` printing it.
//
//   node bench/logs.mjs [--runs N]   (N log lines measured, default 50)
//
// A one-service project prints `tick <n>` every 200 ms. The script follows the device's logs with
// `skiff logs … --tail --json` as a subprocess and, for each line, takes the time it reached our
// stdout pipe (Date.now() on the host) minus the entry's `timestamp` (the engine's timestamp of
// the line, which the agent passes through). Engine and bench share this machine's clock.

import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SKIFF_BIN, ensureSkiffBuilt, log, median, parseBenchArgs, printTable } from './lib.mjs';
import {
  startAgent, ensureBaseImage, copyProject, runSkiff, imageIds, imagesTagged, cleanupAgentObjects,
  removeImages, withCleanup, percentile, sleep,
} from './agent-lib.mjs';

// Each line is one run: its latency is one sample.
const { runs: LINES } = parseBenchArgs({ runs: { default: 50, help: 'log lines measured' } });

await withCleanup(async (onCleanup) => {
  ensureSkiffBuilt();
  ensureBaseImage();
  const before = await imageIds();
  const project = copyProject(null, 'skifflogs');
  onCleanup(() => project.remove());
  mkdirSync(join(project.dir, 'ticker'), { recursive: true });
  writeFileSync(join(project.dir, 'docker-compose.yml'), "version: '2.1'\nservices:\n  ticker:\n    build: ./ticker\n");
  writeFileSync(join(project.dir, 'ticker', 'Dockerfile'),
    'FROM busybox:1.36\nCMD ["sh", "-c", "n=0; while true; do n=$((n + 1)); echo \\"tick $n\\"; sleep 0.2; done"]\n');
  onCleanup(async () => {
    const mine = (await imagesTagged([`${project.name}_`])).map((i) => i.Id);
    log(`removed ${await removeImages(mine, before)} image(s) this run made`);
  });

  const agent = await startAgent();
  onCleanup(() => rmSync(agent.dataDir, { recursive: true, force: true }));
  onCleanup(() => cleanupAgentObjects(agent.uuid));
  onCleanup(() => agent.kill());
  const device = `127.0.0.1:${agent.port}`;
  log(`agent ${agent.uuid.slice(0, 7)} on ${device}; pushing the ticker project`);
  const pushed = await runSkiff(['push', device, '--source', project.dir, '--dockerPort', String(agent.enginePort), '--detached']);
  if (pushed.code !== 0) throw new Error(`skiff push failed:\n${pushed.stdout}${pushed.stderr}`);
  await sleep(1000);

  const startedAt = Date.now();
  const child = spawn(process.execPath, [SKIFF_BIN, 'logs', device, '--tail', '--json', '--service', 'ticker'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  onCleanup(() => { if (child.exitCode === null) child.kill('SIGTERM'); });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));

  const latencies = [];
  let connectedAt = null; // first output of any kind: from here on, lines are live, not replayed
  let partial = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${latencies.length} lines in 60 s; stderr:\n${stderr}`)), 60_000);
    child.on('exit', (code) => reject(new Error(`skiff logs exited with ${code}:\n${stderr}`)));
    child.stdout.on('data', (chunk) => {
      const arrived = Date.now();
      connectedAt ??= arrived;
      partial += chunk.toString('utf8');
      const lines = partial.split('\n');
      partial = lines.pop();
      for (const line of lines) {
        if (!line.trim()) continue;
        let e;
        try { e = JSON.parse(line); } catch { continue; }
        if (e.isSystem || !/^tick \d+/.test(e.message ?? '')) continue;
        // Lines written before the stream was connected come in as replayed history: not live.
        if (e.timestamp < connectedAt) continue;
        latencies.push(arrived - e.timestamp);
        if (latencies.length >= LINES) { clearTimeout(timer); resolve(); return; }
      }
    });
  });

  console.log(`\nLog latency: container line (engine timestamp) → line on \`skiff logs ${device} --tail --json\` stdout,`);
  console.log(`${latencies.length} lines of a service printing every 200 ms (lines written before the stream connected are skipped), agent on this machine's engine.`);
  const med = median(latencies);
  printTable(['measure', 'skiff'], [
    ['latency median', `${med.toFixed(0)} ms`],
    ['latency p95', `${percentile(latencies, 95).toFixed(0)} ms`],
    ['latency min / max', `${Math.min(...latencies)} / ${Math.max(...latencies)} ms`],
    ['`skiff logs` start → connected (first output)', `${connectedAt - startedAt} ms`],
  ]);
  console.log(`target (median under 100 ms): ${med < 100 ? 'met' : 'NOT met'}`);
});
