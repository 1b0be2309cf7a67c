// Log throughput through the cloud, and the agent's memory while a service floods its log.
//
//   node bench/cloud-logs.mjs [--rate N] [--seconds S] [--database sqlite|postgres|URL] [--agent-semi-space MB] [--agent-bin PATH]
//
// One `skiff server`, one `skiff agent` in cloud mode (config.json from `skiff config generate`).
// 1. Idle: the agent runs a release whose one service only sleeps; its RSS is sampled every second
//    for 10 s (VmRSS from /proc).
// 2. Flood: a release whose service `writer` prints --rate lines a second (default 1000; bursts of a
//    tenth of it every 100 ms, each line numbered). `skiff logs UUID --tail --json --service writer`
//    follows it through the server; for --seconds (default 30) the bench counts the lines that
//    reach the follower's stdout (lines/s), their latency (arrival minus the engine's timestamp of
//    the line; the engine, agent, server and follower share this clock), and the agent's RSS.
//    Lines the follower missed show as gaps in the numbers (the agent's fair share and caps drop
//    a flood's excess, and says so in a system line). The agent's CPU over the span is shown too
//    (a smaller young generation means more, cheaper, scavenges).
// --agent-bin runs the agent from another checkout (its bin/run.js, built), e.g. the commit before
// issue 10 for a baseline: an agent that ships no logs is measured all the same (the flood counts
// from its release running; the lines/s and latency rows are then empty).
// Goal: the agent's RSS under the flood flat (the last third of the samples no higher than the
// middle third + 10%) and under 60 MB + 10%.
//
// Needs busybox:1.36 on the engine (made by scripts/demo-base-images.mjs when missing). Cleans up
// its processes, containers, temp dirs and the images it built. Exits 1 when it cannot run.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SKIFF_BIN, log, median, parseBenchArgs, printTable } from './lib.mjs';
import { ensureBaseImage, percentile, sleep, withCleanup } from './agent-lib.mjs';
import { api, checkDatabaseOption, procSample, startCloudDevice } from './cloud-lib.mjs';

const GOAL_RSS_MB = 60 * 1.1;

const opts = parseBenchArgs({
  runs: null,
  measuresOnce: 'one flood of --seconds',
  options: {
    rate: { default: 1000, min: 10, help: 'lines a second the writer service prints' },
    seconds: { default: 30, min: 5, help: 'seconds the flood is measured' },
    database: { type: 'string', default: 'sqlite', check: checkDatabaseOption, help: 'sqlite, postgres (a fresh database) or a postgres:// URL' },
    'agent-semi-space': { default: 0, min: 0, help: "the agent's V8 --max-semi-space-size, MB (0: the agent's own setting): the young generation grows to it under a steady allocation rate" },
    'agent-bin': { type: 'string', default: '', check: (v) => (existsSync(v) ? undefined : `${v} does not exist`), help: "the agent's bin/run.js from another checkout (a baseline)" },
  },
});

/** A project of one service: `command` in busybox. */
function writeProject(dir, command) {
  mkdirSync(join(dir, 'svc'), { recursive: true });
  writeFileSync(join(dir, 'docker-compose.yml'), `services:\n  writer:\n    build: ./svc\n    command: ["sh", "-c", ${JSON.stringify(`trap 'exit 0' TERM; ${command}`)}]\n`);
  writeFileSync(join(dir, 'svc', 'Dockerfile'), 'FROM busybox:1.36\nLABEL io.skiff.bench=cloud-logs\n');
}

const rssOf = (pid) => procSample(pid)?.rssMB ?? Number.NaN;

await withCleanup(async (onCleanup) => {
  ensureBaseImage();
  const { server, token, env, skiff, fleet, project, agent } = await startCloudDevice(onCleanup, {
    name: 'logs', database: opts.database,
    agent: { ...(opts.agentBin ? { bin: opts.agentBin } : {}), env: opts.agentSemiSpace > 0 ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --max-semi-space-size=${opts.agentSemiSpace}`.trim() } : {} },
  });

  // 1. idle
  writeProject(project, 'while :; do sleep 1 & wait $!; done');
  await skiff(['deploy', fleet, '--build', '--source', project], 'deploy (idle)');
  // The server's view: the device's API needs its key outside development mode.
  const running = async () => {
    const d = await api(server.url, token, 'GET', `/devices/${agent.uuid}`).catch(() => undefined);
    return d?.runningRelease && d.updateStatus === 'done' && d.services?.some((s) => s.name === 'writer' && s.status === 'Running');
  };
  for (let t = 0; !(await running()); t++) {
    if (t > 1200) throw new Error('the idle release did not run within 120 s');
    await sleep(100);
  }
  const idle = [];
  for (let i = 0; i < 10; i++) {
    await sleep(1000);
    idle.push(rssOf(agent.pid));
  }
  log(`idle agent RSS: ${idle.map((v) => v.toFixed(0)).join(' ')} MB`);
  const idleRelease = (await api(server.url, token, 'GET', `/devices/${agent.uuid}`)).runningRelease;
  const floodRuns = async () => {
    const d = await api(server.url, token, 'GET', `/devices/${agent.uuid}`).catch(() => undefined);
    return d?.runningRelease && d.runningRelease !== idleRelease && d.updateStatus === 'done';
  };

  // 2. flood, followed through the server
  const burst = Math.max(1, Math.round(opts.rate / 10));
  writeProject(project, `n=0; while :; do i=0; while [ $$i -lt ${burst} ]; do n=$$((n+1)); i=$$((i+1)); echo "line $$n"; done; sleep 0.1; done`);
  const uuid = agent.uuid;
  const follower = spawn(process.execPath, [SKIFF_BIN, 'logs', uuid, '--tail', '--json', '--service', 'writer', '--max-lines', '0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  onCleanup(() => { if (follower.exitCode === null) follower.kill('SIGTERM'); });
  let measuring = false;
  let firstAt = 0;
  const numbers = [];
  const latencies = [];
  let partial = '';
  follower.stdout.on('data', (chunk) => {
    const now = Date.now();
    partial += chunk;
    const lines = partial.split('\n');
    partial = lines.pop();
    for (const text of lines) {
      if (!text.startsWith('{')) continue;
      const line = JSON.parse(text);
      const n = Number(/^line (\d+)$/.exec(line.message)?.[1]);
      if (!Number.isInteger(n)) continue;
      if (!firstAt) firstAt = now;
      if (!measuring) continue;
      numbers.push(n);
      latencies.push(now - line.timestamp);
    }
  });
  await skiff(['deploy', fleet, '--build', '--source', project], 'deploy (flood)');
  // An agent that ships nothing (--agent-bin of a baseline) floods all the same once its release runs.
  for (let t = 0; !firstAt && !(opts.agentBin && (await floodRuns())); t++) {
    if (t > 1200) throw new Error('no flood line reached the follower within 120 s');
    await sleep(100);
  }
  await sleep(2000); // past the release change
  measuring = true;
  const rss = [];
  const cpu0 = procSample(agent.pid)?.cpuSeconds ?? Number.NaN;
  const t0 = Date.now();
  while (Date.now() - t0 < opts.seconds * 1000) {
    await sleep(1000);
    rss.push(rssOf(agent.pid));
  }
  measuring = false;
  const span = (Date.now() - t0) / 1000;
  const cpuPercent = (((procSample(agent.pid)?.cpuSeconds ?? Number.NaN) - cpu0) / span) * 100;
  const missed = numbers.length > 1 ? numbers[numbers.length - 1] - numbers[0] + 1 - numbers.length : 0;
  const third = Math.floor(rss.length / 3);
  const middle = Math.max(...rss.slice(third, 2 * third));
  const late = Math.max(...rss.slice(2 * third));
  const flat = late <= middle * 1.1;
  log(`flood agent RSS: ${rss.map((v) => v.toFixed(0)).join(' ')} MB`);
  printTable(['measure', 'value', 'goal'], [
    ['lines/s written (target)', String(opts.rate), ''],
    ['lines/s at the follower', (numbers.length / span).toFixed(0), ''],
    ['lines the follower missed (dropped by the caps)', String(missed), ''],
    ['latency median / p99', latencies.length > 0 ? `${median(latencies).toFixed(0)} / ${percentile(latencies, 99).toFixed(0)} ms` : '-', ''],
    ['agent CPU under the flood (of one core)', `${cpuPercent.toFixed(0)} %`, ''],
    ['agent RSS idle (median)', `${median(idle).toFixed(1)} MB`, ''],
    ['agent RSS under the flood (max)', `${Math.max(...rss).toFixed(1)} MB`, `< ${GOAL_RSS_MB.toFixed(0)} MB ${Math.max(...rss) < GOAL_RSS_MB ? 'met' : 'MISSED'}`],
    ['agent RSS: last third vs middle third', `${late.toFixed(1)} vs ${middle.toFixed(1)} MB`, `flat (+10%) ${flat ? 'met' : 'MISSED'}`],
  ], `Cloud logs (${server.database === 'sqlite' ? 'SQLite' : 'PostgreSQL'}): a service writing ${opts.rate} lines/s, followed through the server`);
  follower.kill('SIGTERM');
});
