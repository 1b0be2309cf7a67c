// skiff push vs balena push (local mode) to the same skiff agent: time from starting the push to
// the new release of examples/multi-service running and applied. See bench/README.md.
//
//   node bench/push.mjs [--runs N] [--rollback-grace S]
//
// The agent must listen on 127.0.0.1:48484 with the engine API on 2375, because balena-cli's
// local push cannot be told other ports; the script refuses to start if either is taken.

import { appendFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  ensureSkiffBuilt, ensureBalena, balenaEnv, log, median, parseBenchArgs, printComparison, fmtSec,
} from './lib.mjs';
import {
  startAgent, ensureBaseImage, copyExampleProject, requireBalenaPorts, BALENA_API_PORT, BALENA_ENGINE_PORT, runSkiff, runCmd, engine, deviceStatus,
  imageIds, imagesTagged, cleanupAgentObjects, removeImages, withCleanup, sleep,
} from './agent-lib.mjs';

const { runs: RUNS, rollbackGrace: GRACE } = parseBenchArgs({
  runs: { default: 5, help: 'measured pushes per CLI, after one warm-up push' },
  options: { 'rollback-grace': { default: 2, help: "seconds, the agent's --rollback-grace" } },
});
const API_PORT = BALENA_API_PORT;
const ENGINE_PORT = BALENA_ENGINE_PORT;
const SERVICES = ['web', 'worker', 'cfg'];
const q = (f) => encodeURIComponent(JSON.stringify(f));

/** Engine view of the agent's containers: { web: { id, imageId, running }, ... } or null if not exactly one per service. */
async function serviceContainers(uuid) {
  const { json } = await engine('GET', `/containers/json?all=1&filters=${q({ label: [`io.skiff.agent=${uuid}`] })}`);
  const by = {};
  for (const c of json ?? []) {
    const s = c.Labels?.['io.balena.service-name'];
    if (!s) continue;
    if (by[s]) return null; // old and new container side by side: not settled
    by[s] = { id: c.Id, imageId: c.ImageID, running: c.State === 'running' };
  }
  return SERVICES.every((s) => by[s]) ? by : null;
}

/**
 * One push, timed from spawn. In parallel, polls every 50 ms for
 *   running: exactly one container per service, all running, web on an image other than `prevWebImage`;
 *   applied: that, and GET /v2/state/status says appState 'applied'.
 * Returns { exitMs, runningMs, appliedMs, webImage, recreated }.
 */
async function timedPush(label, spawnPush, agent, prevWebImage, prevIds) {
  const start = process.hrtime.bigint();
  const since = () => Number(process.hrtime.bigint() - start) / 1e6;
  let runningMs = null;
  let appliedMs = null;
  let settled = null;
  let exit = null;
  const pushDone = spawnPush().then((r) => { exit = { ...r, ms: since() }; });
  const deadline = Date.now() + 180_000;
  while (appliedMs === null) {
    if (Date.now() > deadline) throw new Error(`${label}: release not applied after 180 s; push output:\n${exit?.stdout ?? ''}${exit?.stderr ?? ''}`);
    if (exit && exit.code !== 0) throw new Error(`${label} exited with ${exit.code}:\n${exit.stdout}${exit.stderr}`);
    const by = await serviceContainers(agent.uuid).catch(() => null);
    const ok = by && SERVICES.every((s) => by[s].running) && by.web.imageId !== prevWebImage;
    if (ok) {
      runningMs ??= since();
      const st = await deviceStatus(agent.url).catch(() => ({}));
      if (st.appState === 'applied') {
        appliedMs = since();
        settled = by;
      }
    }
    if (appliedMs === null) await sleep(50);
  }
  await pushDone;
  if (exit.code !== 0) throw new Error(`${label} exited with ${exit.code}:\n${exit.stdout}${exit.stderr}`);
  const recreated = SERVICES.filter((s) => !prevIds?.has(settled[s].id)).length;
  log(`${label}: push exited ${(exit.ms / 1000).toFixed(2)} s, running ${(runningMs / 1000).toFixed(2)} s, applied ${(appliedMs / 1000).toFixed(2)} s, ${recreated} container(s) replaced`);
  return { exitMs: exit.ms, runningMs, appliedMs, webImage: settled.web.imageId, ids: new Set(SERVICES.map((s) => settled[s].id)), recreated };
}

await withCleanup(async (onCleanup) => {
  ensureSkiffBuilt();
  const balena = ensureBalena();
  ensureBaseImage();
  await requireBalenaPorts();
  const before = await imageIds();
  const project = await copyExampleProject();
  onCleanup(() => project.remove());
  const made = new Set();
  const collectImages = async () => {
    for (const i of await imagesTagged([`${project.name}_`, 'local_'])) if (!before.has(i.Id)) made.add(i.Id);
  };
  onCleanup(async () => {
    await collectImages().catch(() => {});
    const n = await removeImages(made, before);
    log(`removed ${n} image(s) this run made`);
  });

  const agent = await startAgent({ port: API_PORT, enginePort: ENGINE_PORT, rollbackGrace: GRACE });
  onCleanup(() => rmSync(agent.dataDir, { recursive: true, force: true }));
  onCleanup(() => cleanupAgentObjects(agent.uuid));
  onCleanup(() => agent.kill());
  log(`agent ${agent.uuid.slice(0, 7)} pid ${agent.pid} on 127.0.0.1:${API_PORT}, engine on ${ENGINE_PORT}, rollback grace ${GRACE} s`);

  const device = `127.0.0.1:${API_PORT}`;
  const pushers = {
    skiff: () => runSkiff(['push', device, '--source', project.dir, '--dockerPort', String(ENGINE_PORT), '--detached']),
    balena: () => runCmd(balena, ['push', '127.0.0.1', '--source', project.dir, '--nolive', '--detached'],
      { env: { ...balenaEnv(balena), BALENARC_NO_ANALYTICS: '1' } }),
  };
  let prevWeb = null;
  let prevIds = null;
  let edit = 0;
  const results = {};
  for (const tool of ['skiff', 'balena']) {
    results[tool] = [];
    // One warm-up push (not counted): the first release of this CLI's image names.
    for (let i = 0; i <= RUNS; i++) {
      appendFileSync(join(project.dir, 'web', 'index.html'), `<!-- bench edit ${++edit} ${Date.now()} -->\n`);
      const label = `${tool} ${i === 0 ? 'warm-up' : `run ${i}/${RUNS}`}`;
      const r = await timedPush(label, pushers[tool], agent, prevWeb, prevIds);
      prevWeb = r.webImage;
      prevIds = r.ids;
      if (i > 0) results[tool].push(r);
      await collectImages();
      await sleep(500);
    }
  }

  const med = (tool, key) => median(results[tool].map((r) => r[key])) / 1000;
  console.log(`\nPush of examples/multi-service (3 services, busybox:1.36) to a skiff agent on 127.0.0.1:${API_PORT}, engine via the agent on :${ENGINE_PORT}; rollback grace ${GRACE} s.`);
  console.log(`Medians of ${RUNS} pushes per CLI, each after an edit to web/index.html (a new release, warm layer cache), one warm-up push each not counted.`);
  printComparison('', 'balena-cli 22.5.5', [
    { measure: 'start → push command exits', skiff: med('skiff', 'exitMs'), peer: med('balena', 'exitMs'), fmt: fmtSec },
    { measure: 'start → 3 services running (new image)', skiff: med('skiff', 'runningMs'), peer: med('balena', 'runningMs'), fmt: fmtSec },
    { measure: 'start → applied (appState, all 3 running)', skiff: med('skiff', 'appliedMs'), peer: med('balena', 'appliedMs'), fmt: fmtSec },
  ]);
  const recreated = (tool) => median(results[tool].map((r) => r.recreated));
  console.log(`\ncontainers replaced per push (median): skiff ${recreated('skiff')}, balena ${recreated('balena')}`
    + ' (both leave unchanged services running: skiff keeps their image names, balena retags local_<service>:latest).');
  console.log('Most of each figure is the engine stopping the old containers: the agent stops with a 10 s timeout and'
    + ' busybox httpd / sh as PID 1 ignore SIGTERM, so the old release waits out the timeout (same for both CLIs).');
  console.log(`'applied' includes the agent's ${GRACE} s rollback grace for both; balena push --detached exits once the target is set, before the device applies it.`);
  const ratioApplied = med('skiff', 'appliedMs') / med('balena', 'appliedMs');
  console.log(`target (skiff no slower than balena to applied): ${ratioApplied <= 1 ? 'met' : 'NOT met'} (${ratioApplied.toFixed(2)}x)`);
});
