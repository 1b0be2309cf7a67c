// The cloud's deploy path end to end, and `skiff server`'s start.
//
//   node bench/cloud-deploy.mjs [--runs N] [--agents N] [--poll-ms MS] [--payload-kb KB] [--shared-engine]
//
// 1. Cold start: `skiff server` (SQLite) from spawn to ready, N times (default 5), each on a new
//    empty data dir (first start: migrations, admin user, registry key and config) and then again on
//    that data dir (a restart). "Ready" is GET /ping answering 200 and the registry answering
//    through the server's port (GET /v2/ → 401 asking for a token). Median reported; goal < 2 s.
// 2. Deploy: one server, --agents (default 3) `skiff agent`s in cloud mode, each with its own
//    config.json from `skiff config generate --fleet`, data dir and ports. `skiff deploy FLEET
//    --build --source DIR` of a 3-service project (busybox:1.36 + a --payload-kb random file per
//    service, so each service has one layer of its own); the clock runs from spawning deploy to every
//    device reporting the new release applied (GET /devices?fleet=: runningRelease = the fleet's
//    target, updateStatus done); how many services it then reported Running is printed too. Then a second deploy that changes one service's payload.
//    The fleet's poll interval is set to --poll-ms (default 1000) with `skiff env set
//    SKIFF_AGENT_POLL_INTERVAL`, so a device sees a release within about one interval (the
//    server may hold it to a floor of its own); instant updates are the next issue's.
//    Bytes pulled: iptables counts the bytes the server's port sends (a chain on OUTPUT, --sport),
//    reset before each deploy: the images the devices pull, plus small API answers. Beside it, the
//    sizes the registry's manifests give for the layers the second release does not share with the
//    first: what an engine that pulls only new layers has to fetch.
//    The agents run on an engine of their own (a second dockerd this script starts with its own
//    data root, exec root and containerd, no default bridge, no iptables rules), since on the
//    builder's engine the images would already be there and nothing would be pulled. They share
//    that engine, so each layer is pulled once for all of them, as it would be per device.
//    --shared-engine runs them on this machine's engine instead (the bytes are then near 0).
//
// Needs root (iptables, the second dockerd), docker-registry, and busybox:1.36 on the engine (made
// locally by scripts/demo-base-images.mjs when missing). Cleans up its processes, the second
// engine, the iptables chain, temp dirs and the images it built. Exits 1 when the benchmark cannot
// run; a missed goal still exits 0.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { log, median, parseBenchArgs, printTable, fmtSec } from './lib.mjs';
import { ensureBaseImage, imageIds, imagesTagged, removeImages, runSkiff, sleep, startAgent, withCleanup, cleanupAgentObjects } from './agent-lib.mjs';
import { api, ensureCommandsBuilt, login, startServer, writeServicesProject } from './cloud-lib.mjs';

const GOAL_COLD_START_S = 2;
const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const SERVICES = ['alpha', 'bravo', 'charlie'];
const CHANGED = 'bravo';

const opts = parseBenchArgs({
  runs: { default: 5, help: 'cold starts of skiff server measured (each also restarted once)' },
  options: {
    agents: { default: 3, min: 1, help: 'devices (skiff agent processes) in the fleet' },
    'poll-ms': { default: 1000, min: 100, help: "the fleet's SKIFF_AGENT_POLL_INTERVAL, milliseconds" },
    'payload-kb': { default: 2048, min: 1, help: "size of each service's own random file, KiB" },
    'shared-engine': { type: 'boolean', help: "run the agents on this machine's engine (no second dockerd; bytes pulled then mean little)" },
  },
});

const MiB = (bytes) => (bytes == null ? 'n/a' : `${(bytes / 1048576).toFixed(2)} MiB`);

// ---------------------------------------------------------------- 1. cold start

async function coldStarts() {
  const first = [];
  const again = [];
  for (let run = 1; run <= opts.runs; run++) {
    const server = await startServer({ label: `cold start ${run}/${opts.runs}` });
    try {
      first.push(server.readyMs + (await registryReady(server.url)));
    } finally {
      await server.stop({ keepData: true });
    }
    const restarted = await startServer({ label: `restart ${run}/${opts.runs}`, dataDir: server.dataDir });
    try {
      again.push(restarted.readyMs + (await registryReady(restarted.url)));
    } finally {
      await restarted.stop();
    }
  }
  return { first: median(first) / 1000, again: median(again) / 1000, samples: first.length };
}

/** Further ms after /ping until GET /v2/ through the server answers 401 (the registry is up behind it). */
async function registryReady(url) {
  const t0 = performance.now();
  for (;;) {
    const status = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) }).then((r) => r.status, () => 0);
    if (status === 401) return performance.now() - t0;
    if (performance.now() - t0 > 30_000) throw new Error(`${url}/v2/ did not answer 401 within 30 s (last ${status})`);
    await sleep(10);
  }
}

// ---------------------------------------------------------------- the agents' own engine

async function startDeviceEngine() {
  const dir = mkdtempSync(join(tmpdir(), 'skiff-bench-engine-'));
  const sock = join(dir, 'docker.sock');
  // A bridge of its own: dockerd with `--bridge none` deletes the host's docker0 at start (libnetwork
  // clears a "stale" default bridge), which cuts every container of this machine's own engine off.
  const bridge = `skb${process.pid % 100000}`;
  const ip = (args) => spawnSync('ip', args, { encoding: 'utf8' });
  ip(['link', 'del', bridge]);
  for (const args of [['link', 'add', bridge, 'type', 'bridge'], ['addr', 'add', '10.213.77.1/24', 'dev', bridge], ['link', 'set', bridge, 'up']]) {
    const r = ip(args);
    if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
  }
  const child = spawn('dockerd', [
    '--data-root', join(dir, 'root'), '--exec-root', join(dir, 'exec'), '--pidfile', join(dir, 'docker.pid'),
    '-H', `unix://${sock}`, '--bridge', bridge, '--iptables=false', '--ip-masq=false',
  ], { stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  let out = '';
  child.stdout.on('data', (d) => (out = (out + d).slice(-20_000)));
  child.stderr.on('data', (d) => (out = (out + d).slice(-20_000)));
  const host = `unix://${sock}`;
  const dockerOn = (args) => spawnSync(DOCKER, ['-H', host, ...args], { encoding: 'utf8' });
  const stop = async () => {
    // Its containers and networks first (the bridges it made would outlive it), then the daemon.
    const ids = dockerOn(['ps', '-aq']).stdout.split('\n').filter(Boolean);
    if (ids.length) dockerOn(['rm', '-f', '-v', ...ids]);
    dockerOn(['network', 'prune', '-f']);
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(killer);
    }
    spawnSync('umount', ['-R', join(dir, 'root')], { stdio: 'ignore' });
    ip(['link', 'del', bridge]);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  while (dockerOn(['info', '--format', '{{.ServerVersion}}']).status !== 0) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`the agents' dockerd did not start:\n${out}`);
    }
    await sleep(200);
  }
  log(`agents' engine: dockerd pid ${child.pid} on ${host}`);
  return { host, stop };
}

// ---------------------------------------------------------------- bytes the server sends

function byteCounter(port) {
  const chain = `SKIFF_BENCH_${process.pid}`;
  const ipt = (args, check = true) => {
    const r = spawnSync('iptables', ['-w', ...args], { encoding: 'utf8' });
    if (check && r.status !== 0) throw new Error(`iptables ${args.join(' ')}: ${r.stderr.trim() || r.error?.message}`);
    return r.stdout;
  };
  const rule = ['OUTPUT', '-p', 'tcp', '-s', '127.0.0.1', '--sport', String(port), '-j', chain];
  ipt(['-N', chain]);
  ipt(['-A', chain, '-j', 'RETURN']);
  ipt(['-I', ...rule]);
  return {
    reset: () => ipt(['-Z', chain]),
    bytes: () => Number(ipt(['-L', chain, '-v', '-x', '-n']).split('\n').find((l) => /\bRETURN\b/.test(l))?.trim().split(/\s+/)[1] ?? Number.NaN),
    remove: () => {
      ipt(['-D', ...rule], false);
      ipt(['-F', chain], false);
      ipt(['-X', chain], false);
    },
  };
}

// ---------------------------------------------------------------- the project

function writeProject(dir) {
  writeServicesProject(dir, SERVICES, opts.payloadKb * 1024);
}

// ---------------------------------------------------------------- registry manifests

/** Layer digests and sizes of each service of a release, from the registry through the server. */
async function releaseLayers(base, token, email, password, commit) {
  const release = await api(base, token, 'GET', `/releases/${commit}`);
  const challenge = (await fetch(`${base}/v2/`)).headers.get('www-authenticate') ?? '';
  const service = /service="([^"]+)"/.exec(challenge)?.[1] ?? '';
  const out = {};
  for (const s of release.services) {
    const [, repository, digest] = /^[^/]+\/(.+)@(sha256:[0-9a-f]{64})$/.exec(s.image ?? '') ?? [];
    if (!repository) continue;
    const tokenAnswer = await fetch(`${base}/auth/v1/token?service=${encodeURIComponent(service)}&scope=${encodeURIComponent(`repository:${repository}:pull`)}`, {
      headers: { authorization: `Basic ${Buffer.from(`${email}:${password}`).toString('base64')}` },
    });
    const pull = (await tokenAnswer.json()).token;
    const manifest = await (await fetch(`${base}/v2/${repository}/manifests/${digest}`, {
      headers: { authorization: `Bearer ${pull}`, accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
    })).json();
    out[s.name] = (manifest.layers ?? []).map((l) => ({ digest: l.digest, size: l.size }));
  }
  return out;
}

// ---------------------------------------------------------------- 2. deploy

async function deploys(onCleanup) {
  ensureBaseImage();
  const before = await imageIds();
  const engine = opts.sharedEngine ? null : await startDeviceEngine();
  if (engine) onCleanup(() => engine.stop());

  const server = await startServer({ label: 'deploy server' });
  onCleanup(() => server.stop());
  const counter = byteCounter(new URL(server.url).port);
  onCleanup(() => counter.remove());
  const token = await login(server.url, server.email, server.password);
  const home = mkdtempSync(join(tmpdir(), 'skiff-bench-home-'));
  onCleanup(() => rmSync(home, { recursive: true, force: true }));
  const cliEnv = { ...process.env, HOME: home, SKIFF_API_URL: server.url, SKIFF_API_TOKEN: token };
  const skiff = async (args, what) => {
    const r = await runSkiff(args, { env: cliEnv, timeoutMs: 600_000 });
    if (r.code !== 0) throw new Error(`skiff ${args.join(' ')} (${what}) exited ${r.code}:\n${r.stdout}${r.stderr}`);
    return r;
  };

  const fleet = `deploy-bench-${randomBytes(3).toString('hex')}`;
  await skiff(['fleet', 'create', fleet, '--type', 'generic-amd64'], 'fleet create');
  await skiff(['env', 'set', 'SKIFF_AGENT_POLL_INTERVAL', String(opts.pollMs), '--fleet', fleet], 'poll interval');

  const project = mkdtempSync(join(tmpdir(), 'skiffdeploybench'));
  onCleanup(() => rmSync(project, { recursive: true, force: true }));
  writeProject(project);
  // The images each deploy builds (skiff tags them <folder, lower case>_<service>), noted after
  // each so that the first build of a service the second one re-tagged goes too.
  const built = new Set();
  const noteBuilt = async () => {
    for (const i of await imagesTagged([`${project.split('/').pop().toLowerCase()}_`, `${new URL(server.url).host}/`])) built.add(i.Id);
  };
  onCleanup(async () => {
    await noteBuilt();
    log(`removed ${await removeImages([...built], before)} image(s) this run made`);
  });

  const agents = [];
  for (let i = 0; i < opts.agents; i++) {
    const configFile = join(home, `config-${i}.json`);
    await skiff(['config', 'generate', '--fleet', fleet, '--output', configFile], 'config generate');
    const agent = await startAgent({ args: ['--config', configFile], env: engine ? { DOCKER_HOST: engine.host } : {}, configFile });
    agents.push(agent);
    onCleanup(async () => {
      await agent.kill();
      if (!engine && agent.uuid) await cleanupAgentObjects(agent.uuid);
      rmSync(agent.dataDir, { recursive: true, force: true });
    });
  }
  const devices = async () => api(server.url, token, 'GET', `/devices?fleet=${encodeURIComponent(fleet)}`);
  await waitUntil(async () => (await devices()).length === opts.agents, `${opts.agents} devices registered`, 60_000);
  log(`${opts.agents} agents registered in fleet ${fleet}`);

  const deploy = async (label) => {
    counter.reset();
    const t0 = performance.now();
    await skiff(['deploy', fleet, '--build', '--source', project], label);
    const deployExit = (performance.now() - t0) / 1000;
    const commit = (await api(server.url, token, 'GET', `/fleets/${encodeURIComponent(fleet)}`)).targetRelease;
    if (!commit) throw new Error(`${label}: the fleet has no target release after deploy`);
    await noteBuilt();
    // Applied: the device reports the release as the one it runs, its update done (balena's
    // update_status), as `skiff device list` shows it.
    let list = [];
    await waitUntil(async () => {
      list = await devices();
      return list.length === opts.agents && list.every((d) => d.runningRelease === commit && d.updateStatus === 'done');
    }, `every device reporting ${commit.slice(0, 7)} applied`, 600_000);
    const applied = (performance.now() - t0) / 1000;
    const services = list.flatMap((d) => d.services);
    const running = services.filter((s) => /^running$/i.test(s.status)).length;
    await sleep(500); // the last answers' bytes (a report's reply) are counted before reading
    return { commit, deployExit, applied, bytes: counter.bytes(), running: `${running} of ${services.length} (${[...new Set(services.map((s) => s.status))].join(', ')})` };
  };

  const first = await deploy('deploy 1 (3 services)');
  log(`deploy 1: ${first.applied.toFixed(1)} s to applied, ${MiB(first.bytes)} sent by the server`);
  writeFileSync(join(project, CHANGED, 'payload'), randomBytes(opts.payloadKb * 1024));
  const second = await deploy(`deploy 2 (${CHANGED} changed)`);
  log(`deploy 2: ${second.applied.toFixed(1)} s to applied, ${MiB(second.bytes)} sent by the server`);

  const l1 = await releaseLayers(server.url, token, server.email, server.password, first.commit);
  const l2 = await releaseLayers(server.url, token, server.email, server.password, second.commit);
  const known = new Set(Object.values(l1).flat().map((l) => l.digest));
  const fresh = Object.entries(l2).flatMap(([service, layers]) => layers.filter((l) => !known.has(l.digest)).map((l) => ({ service, ...l })));
  const firstTotal = new Map(Object.values(l1).flat().map((l) => [l.digest, l.size]));
  return { first, second, fresh, firstLayersBytes: [...firstTotal.values()].reduce((a, b) => a + b, 0), engine: engine ? 'own dockerd' : 'shared' };
}

async function waitUntil(check, what, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await sleep(100);
  }
}

await withCleanup(async (onCleanup) => {
  if (process.getuid?.() !== 0 && !opts.sharedEngine) throw new Error('needs root (a second dockerd and iptables counters); --shared-engine still needs iptables');
  ensureCommandsBuilt(['server.js', 'agent.js', 'deploy.js', 'fleet/create.js', 'env/set.js', 'config/generate.js']);
  const cold = await coldStarts();
  const d = await deploys(onCleanup);
  const freshBytes = d.fresh.reduce((a, l) => a + l.size, 0);
  const freshServices = [...new Set(d.fresh.map((l) => l.service))];

  console.log(`\nskiff server (SQLite, Node ${process.version}) and ${opts.agents} skiff agents (cloud mode, engine: ${d.engine}) on this machine; poll interval ${opts.pollMs} ms; load average ${loadavg().map((l) => l.toFixed(1)).join(' / ')} (1/5/15 min) at the end`);
  printTable(['measure', 'skiff', 'goal'], [
    [`server cold start to ready, empty data dir (median of ${cold.samples})`, fmtSec(cold.first), `< ${GOAL_COLD_START_S} s`],
    [`server restart to ready, same data dir (median of ${cold.samples})`, fmtSec(cold.again), `< ${GOAL_COLD_START_S} s`],
    ['deploy 1 (3 services): skiff deploy exits', fmtSec(d.first.deployExit), ''],
    [`deploy 1: every device runs it`, fmtSec(d.first.applied), ''],
    ['deploy 1: bytes the server sent (pulls + API)', MiB(d.first.bytes), `≈ ${MiB(d.firstLayersBytes)} (its layers)`],
    ['deploy 1: services reported Running when applied', d.first.running, `${opts.agents * SERVICES.length}`],
    [`deploy 2 (${CHANGED} changed): skiff deploy exits`, fmtSec(d.second.deployExit), ''],
    ['deploy 2: every device runs it', fmtSec(d.second.applied), ''],
    ['deploy 2: bytes the server sent (pulls + API)', MiB(d.second.bytes), `≈ ${MiB(freshBytes)} (its new layers)`],
    ['deploy 2: services reported Running when applied', d.second.running, `${opts.agents * SERVICES.length}`],
    ['deploy 2: layers not in release 1 (registry manifests)', `${d.fresh.length} in ${freshServices.join(', ') || 'none'}`, `1 in ${CHANGED}`],
  ]);
  const onlyChanged = freshServices.length === 1 && freshServices[0] === CHANGED;
  const pulledOnlyNew = d.engine !== 'shared' && d.second.bytes < freshBytes + 512 * 1024 + d.firstLayersBytes * 0.1;
  console.log(`cold start goal (< ${GOAL_COLD_START_S} s): ${cold.first < GOAL_COLD_START_S ? 'met' : 'NOT met'}; second deploy pulled only ${CHANGED}'s new layer: ${onlyChanged && pulledOnlyNew ? 'yes' : d.engine === 'shared' ? 'not measured (--shared-engine)' : 'NO'}`);
  console.log(`the agents share one engine: each layer is pulled once for all ${opts.agents}; the times include up to one poll interval (${opts.pollMs} ms) before a device asks.`);
});
