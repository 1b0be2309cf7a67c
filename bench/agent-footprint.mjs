// Memory of the skiff agent process: idle with examples/multi-service running, and peak during an apply.
//
//   node bench/agent-footprint.mjs [--runs N] [--seconds S]
//
// Idle: VmRSS from /proc/<pid>/status, sampled every 500 ms for S seconds (default 10) after the
// release is applied and a 3 s settle; the median is reported. Peak: VmHWM (the kernel's
// high-water mark of RSS since the process started) read after a second push has been applied.
// The pid is the agent's Node process itself (spawned directly, no shell or wrapper).

import { readFileSync, rmSync, appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, ensureSkiffBuilt, log, median, parseBenchArgs, printTable, fmtMB } from './lib.mjs';
import {
  startAgent, ensureBaseImage, copyProject, runSkiff, imageIds, imagesTagged, cleanupAgentObjects,
  removeImages, withCleanup, sleep, freePort, deviceStatus, waitFor,
} from './agent-lib.mjs';

const { runs: RUNS, seconds: SECONDS } = parseBenchArgs({
  runs: { default: 1, help: 'pushes applied after the first before the peak is read' },
  options: { seconds: { default: 10, min: 1, help: 'idle sampling time in seconds' } },
});

function procStatus(pid) {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(text)?.[1] ?? Number.NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

await withCleanup(async (onCleanup) => {
  ensureSkiffBuilt();
  ensureBaseImage();
  const before = await imageIds();
  const project = copyProject(join(REPO_ROOT, 'examples', 'multi-service'), 'skiffmem');
  onCleanup(() => project.remove());
  const composePath = join(project.dir, 'docker-compose.yml');
  writeFileSync(composePath, readFileSync(composePath, 'utf8').replace('"8080:80"', `"${await freePort()}:80"`));
  onCleanup(async () => {
    const mine = (await imagesTagged([`${project.name}_`])).map((i) => i.Id);
    log(`removed ${await removeImages(mine, before)} image(s) this run made`);
  });

  const agent = await startAgent();
  onCleanup(() => rmSync(agent.dataDir, { recursive: true, force: true }));
  onCleanup(() => cleanupAgentObjects(agent.uuid));
  onCleanup(() => agent.kill());
  const device = `127.0.0.1:${agent.port}`;
  const atStart = procStatus(agent.pid);
  log(`agent ${agent.uuid.slice(0, 7)} pid ${agent.pid} on ${device}; RSS at start ${fmtMB(atStart.rss)}`);

  const push = async () => {
    const r = await runSkiff(['push', device, '--source', project.dir, '--dockerPort', String(agent.enginePort), '--detached']);
    if (r.code !== 0) throw new Error(`skiff push failed:\n${r.stdout}${r.stderr}`);
    await waitFor(async () => (await deviceStatus(agent.url)).appState === 'applied', { what: 'applied' });
  };
  await push();
  const afterFirst = procStatus(agent.pid);
  log('release 1 applied; settling 3 s, then sampling VmRSS');
  await sleep(3000);
  const samples = [];
  for (let t = 0; t < SECONDS * 2; t++) {
    samples.push(procStatus(agent.pid).rss);
    await sleep(500);
  }
  const idle = median(samples);

  for (let run = 1; run <= RUNS; run++) {
    appendFileSync(join(project.dir, 'web', 'index.html'), `<!-- footprint edit ${Date.now()} -->\n`);
    log(`pushing release ${run + 1} of ${RUNS + 1} (web/index.html changed)`);
    await push();
  }
  const afterApply = procStatus(agent.pid);

  console.log(`\nskiff agent (Node ${process.version}, pid ${agent.pid}) memory, examples/multi-service (3 services) on this machine's engine.`);
  printTable(['measure', 'skiff agent'], [
    ['VmRSS at start (no release)', fmtMB(atStart.rss)],
    [`VmRSS idle, 3 services running (median of ${samples.length} samples over ${SECONDS} s)`, fmtMB(idle)],
    ['VmRSS idle min / max', `${fmtMB(Math.min(...samples))} / ${fmtMB(Math.max(...samples))}`],
    ['VmHWM after the first push (build + apply)', fmtMB(afterFirst.hwm)],
    [`VmHWM after ${RUNS} more push(es) applied (peak so far)`, fmtMB(afterApply.hwm)],
    ['VmRSS right after the last apply', fmtMB(afterApply.rss)],
  ]);
  console.log('balena supervisor: 128-200 MB resident is the figure reported in the issue, not measured here.');
  console.log(`target (idle under 60 MB): ${idle < 60 ? 'met' : 'NOT met'}`);
});
