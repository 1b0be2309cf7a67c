// Push-to-running: a cloud build against a local build, and against the LAN push.
//
//   node bench/cloud-push.mjs [--runs N] [--agents N] [--poll-ms MS] [--payload-kb KB]
//
// One `skiff server` (SQLite) whose builder is this machine's engine, --agents (default 3)
// `skiff agent`s in cloud mode in one fleet (config.json from `skiff config generate --fleet`), and
// one more agent in local (development) mode for the LAN push. The project has 3 services
// (busybox:1.36 + a --payload-kb random file each); before the measured runs each path runs once
// so every cache is warm. Each run then changes one service's payload and times, from spawning the
// command:
//   - `skiff push FLEET`: upload, build on the server, release, until every device reports it
//     applied (GET /devices?fleet=: runningRelease = the fleet's target, updateStatus done);
//   - `skiff deploy FLEET --build`: the same change built here, pushed, until every device applied;
//   - `skiff push 127.0.0.1:PORT --detached` to the local-mode agent: built on its engine, until
//     the command returns (it waits for every service to run).
// Each path runs its warm-up and its runs in a row (a deploy's images differ from a push's, so
// alternating would change every service). Medians of --runs (default 3) and the ratios to the LAN
// push; the issue's goal: push < 1.5 × LAN. --timeline 1 prints, for each measured cloud push, the
// build's event times and the first device's own log lines against the run's start.
// The agents share this machine's engine with the builder, so the layers are there already and the
// times are the cloud's own (build, registry, poll or event), not the network's. The times include
// up to one poll interval (--poll-ms, default 1000) unless the device event channel tells devices at
// once. Cleans up its processes, temp dirs and the images it made. Exits 1 when it cannot run.

import { randomBytes } from 'node:crypto';
import { loadavg, tmpdir } from 'node:os';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fmtRatio, fmtSec, log, median, parseBenchArgs, printTable, ratio } from './lib.mjs';
import { cleanupAgentObjects, ensureBaseImage, imageIds, imagesTagged, removeImages, runSkiff, sleep, startAgent, waitFor, withCleanup } from './agent-lib.mjs';
import { api, ensureCommandsBuilt, login, startServer, writeServicesProject } from './cloud-lib.mjs';

const GOAL_RATIO = 1.5;
const SERVICES = ['alpha', 'bravo', 'charlie'];
const CHANGED = 'bravo';

const opts = parseBenchArgs({
  runs: { default: 3, help: 'measured runs of each path' },
  options: {
    agents: { default: 3, min: 1, help: 'cloud devices (skiff agent processes) in the fleet' },
    'poll-ms': { default: 1000, min: 100, help: "the fleet's SKIFF_AGENT_POLL_INTERVAL, milliseconds" },
    'payload-kb': { default: 1024, min: 1, help: "size of each service's own random file, KiB" },
    timeline: { default: 0, min: 0, help: '1: after each measured cloud push, print where its seconds went (the build\'s event times, each device applied)' },
  },
});

function writeProject(dir) {
  writeServicesProject(dir, SERVICES, opts.payloadKb * 1024);
}

const change = (project) => writeFileSync(join(project, CHANGED, 'payload'), randomBytes(opts.payloadKb * 1024));

await withCleanup(async (onCleanup) => {
  ensureCommandsBuilt(['server.js', 'agent.js', 'push.js', 'deploy.js', 'fleet/create.js', 'env/set.js', 'config/generate.js']);
  ensureBaseImage();
  const before = await imageIds();

  const server = await startServer({ label: 'push server' });
  onCleanup(() => server.stop());
  const token = await login(server.url, server.email, server.password);
  const home = mkdtempSync(join(tmpdir(), 'skiff-bench-home-'));
  onCleanup(() => rmSync(home, { recursive: true, force: true }));
  const env = { ...process.env, HOME: home, SKIFF_API_URL: server.url, SKIFF_API_TOKEN: token };
  const skiff = async (args, what) => {
    const r = await runSkiff(args, { env, timeoutMs: 600_000 });
    if (r.code !== 0) throw new Error(`skiff ${args.join(' ')} (${what}) exited ${r.code}:\n${r.stdout}${r.stderr}`);
    return r;
  };

  const fleet = `push-bench-${randomBytes(3).toString('hex')}`;
  await skiff(['fleet', 'create', fleet, '--type', 'generic-amd64'], 'fleet create');
  await skiff(['env', 'set', 'SKIFF_AGENT_POLL_INTERVAL', String(opts.pollMs), '--fleet', fleet], 'poll interval');
  const fleetUuid = (await api(server.url, token, 'GET', `/fleets/${encodeURIComponent(fleet)}`)).uuid;

  const project = mkdtempSync(join(tmpdir(), 'skiffpushbench'));
  onCleanup(() => rmSync(project, { recursive: true, force: true }));
  writeProject(project);
  const built = new Set();
  const noteBuilt = async () => {
    for (const i of await imagesTagged([`${project.split('/').pop().toLowerCase()}_`, `${new URL(server.url).host}/`, `skiff-build-${fleetUuid}`])) built.add(i.Id);
  };
  onCleanup(async () => {
    await noteBuilt();
    log(`removed ${await removeImages([...built], before)} image(s) this run made`);
  });

  const agents = [];
  for (let i = 0; i < opts.agents; i++) {
    const configFile = join(home, `config-${i}.json`);
    await skiff(['config', 'generate', '--fleet', fleet, '--output', configFile], 'config generate');
    const agent = await startAgent({ args: ['--config', configFile], configFile });
    agents.push(agent);
    onCleanup(async () => {
      await agent.kill();
      if (agent.uuid) await cleanupAgentObjects(agent.uuid);
      rmSync(agent.dataDir, { recursive: true, force: true });
    });
  }
  const lan = await startAgent();
  onCleanup(async () => {
    await lan.kill();
    await cleanupAgentObjects(lan.uuid);
    rmSync(lan.dataDir, { recursive: true, force: true });
  });
  const devices = () => api(server.url, token, 'GET', `/devices?fleet=${encodeURIComponent(fleet)}`);
  await waitFor(async () => (await devices()).length === opts.agents, { timeoutMs: 60_000, what: `${opts.agents} devices registered` });
  log(`${opts.agents} cloud agents in fleet ${fleet}; LAN agent on ${lan.url}`);

  /** Seconds from spawning `args` to every cloud device running the fleet's new target. */
  const toFleet = async (args, label) => {
    const previous = (await api(server.url, token, 'GET', `/fleets/${encodeURIComponent(fleet)}`)).targetRelease;
    const t0 = performance.now();
    // The timeline compares with the server's event times: wall clock on both sides.
    const wall0 = Date.now();
    await skiff(args, label);
    const returned = Date.now();
    let commit;
    const applied = new Map();
    await waitFor(async () => {
      commit = (await api(server.url, token, 'GET', `/fleets/${encodeURIComponent(fleet)}`)).targetRelease;
      if (!commit || commit === previous) return false;
      const list = await devices();
      for (const d of list) if (d.runningRelease === commit && d.updateStatus === 'done' && !applied.has(d.uuid)) applied.set(d.uuid, Date.now());
      return list.length === opts.agents && list.every((d) => d.runningRelease === commit && d.updateStatus === 'done');
    }, { timeoutMs: 600_000, intervalMs: 50, what: `${label}: every device applied` });
    const seconds = (performance.now() - t0) / 1000;
    await noteBuilt();
    if (opts.timeline && args[0] === 'push' && !label.startsWith('warm-up')) await printTimeline(label, wall0, returned, [...applied.values()]);
    return seconds;
  };

  /** The build's own event times (server clock = this clock: one machine) against the run's start. */
  const printTimeline = async (label, wall0, returned, applied) => {
    const at = (iso) => ((Date.parse(iso) - wall0) / 1000).toFixed(2);
    const [build] = await api(server.url, token, 'GET', `/fleets/${encodeURIComponent(fleet)}/builds`);
    const r = await fetch(`${server.url}/builds/${build.id}/events`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(30_000) });
    const envelopes = (await r.text()).split('\n').filter((l) => l.startsWith('data:')).map((l) => JSON.parse(l.slice(5)));
    const first = (pred) => envelopes.find((e) => pred(e.event));
    const last = (pred) => envelopes.filter((e) => pred(e.event)).pop();
    const rows = [
      ['build created (upload stored)', build.createdAt],
      ['build claimed (startedAt)', build.startedAt],
      ['engine connected', first((e) => e.kind === 'started')?.time],
      ['first push-start (images built)', first((e) => e.kind === 'push-start')?.time],
      ['last push-done', last((e) => e.kind === 'push-done')?.time],
      ['release event (release success)', first((e) => e.kind === 'release')?.time],
      ['done event', first((e) => e.kind === 'done')?.time],
      ['build finishedAt', build.finishedAt],
    ];
    log(`${label} timeline (s from spawn): ${rows.map(([k, v]) => `${k} ${v ? at(v) : '-'}`).join('; ')}; skiff push returned ${((returned - wall0) / 1000).toFixed(2)}; devices seen applied ${applied.map((t) => ((t - wall0) / 1000).toFixed(2)).join(', ')}`);
    // The first device's own lines (its cloud logs, stamped on the device; shipped within a few seconds).
    const uuid = agents[0].uuid ?? JSON.parse(readFileSync(join(home, 'config-0.json'), 'utf8')).uuid;
    await sleep(3000);
    const lines = await api(server.url, token, 'GET', `/devices/${uuid}/logs?count=300`);
    for (const l of lines.filter((x) => x.isSystem && x.timestamp >= wall0)) log(`  device 0 at ${((l.timestamp - wall0) / 1000).toFixed(2)}: ${l.message.slice(0, 160)}`);
  };
  const paths = {
    push: (label) => toFleet(['push', fleet, '--source', project], label),
    deploy: (label) => toFleet(['deploy', fleet, '--build', '--source', project], label),
    lan: async (label) => {
      const t0 = performance.now();
      await skiff(['push', `127.0.0.1:${lan.port}`, '--source', project, '--dockerPort', String(lan.enginePort), '--detached'], label);
      await noteBuilt();
      return (performance.now() - t0) / 1000;
    },
  };

  // Each path's runs one after the other, after a warm-up of its own (the server's builder, the
  // local engine, the LAN agent's engine): push and deploy build different images (their project
  // names differ, so do the labels), so a deploy between two pushes would change every service on
  // the devices, not the one the issue's case changes.
  const times = { push: [], deploy: [], lan: [] };
  for (const [name, run] of Object.entries(paths)) {
    change(project);
    log(`warm-up ${name}: ${(await run(`warm-up ${name}`)).toFixed(1)} s`);
    for (let i = 1; i <= opts.runs; i++) {
      change(project);
      const s = await run(`${name} ${i}/${opts.runs}`);
      times[name].push(s);
      log(`${name} ${i}/${opts.runs}: ${s.toFixed(2)} s`);
      await sleep(200);
    }
  }
  const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
  console.log(`\nskiff server (SQLite, Node ${process.version}), ${opts.agents} cloud agents + 1 LAN agent on this machine's engine; ${SERVICES.length} services, ${CHANGED} changed each run (${opts.payloadKb} KiB); poll interval ${opts.pollMs} ms; load average ${loadavg().map((l) => l.toFixed(1)).join(' / ')} at the end`);
  printTable(['path (median of ' + opts.runs + ')', 'seconds', 'vs LAN push'], [
    [`skiff push ${'<fleet>'}: to all ${opts.agents} devices applied`, fmtSec(m.push), fmtRatio(ratio(m.push, m.lan))],
    [`skiff deploy --build: to all ${opts.agents} devices applied`, fmtSec(m.deploy), fmtRatio(ratio(m.deploy, m.lan))],
    ['skiff push <device> (LAN, one agent): to running', fmtSec(m.lan), '1.00x'],
  ]);
  const r = ratio(m.push, m.lan);
  console.log(`goal: cloud push < ${GOAL_RATIO} × LAN push: ${r !== null && r < GOAL_RATIO ? 'met' : 'NOT met'} (${fmtRatio(r)})`);
});
