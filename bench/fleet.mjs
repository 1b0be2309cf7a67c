// Fleet simulator: N devices against one `skiff server`, as real agents load it.
//
//   node bench/fleet.mjs [--devices N] [--interval S] [--duration S] [--database sqlite|postgres|URL]
//                        [--server URL] [--find-max] [--sockets N] [--changes N]
//
// Each simulated device registers once with the fleet's provisioning key (POST /device/register,
// its own random uuid and device key), then polls GET /device/v3/:uuid/state every --interval
// seconds with If-None-Match, and sends PATCH /device/v3/state when its target changed (a 200 with a
// new ETag): the first poll, and after each of the --changes fleet variable changes the script makes
// during the run (each one changes every device's target, as a deploy or an env change does).
// Devices' first polls are spread evenly over one interval; each later poll comes one interval after
// the previous one, ± 5% jitter (symmetric, so the fleet's request rate stays N / interval). That
// first interval is a warm-up and not measured (a device new to the run fetches its whole target
// and reports once); the --duration seconds after it are, with the changes spread over them.
//
// All devices share a keep-alive http.Agent of --sockets connections (not one connection per
// device: a device's own connection would sit idle 60 s, and a real fleet's arrive through NAT
// and proxies the server does not see either). Latency is from the request being handed to the
// agent to the last byte of the answer, so it includes waiting for a free socket; a request the
// simulator itself sent more than 50 ms after its scheduled time is counted as "late" (then the
// simulator, which shares this machine's 2 cores with the server, was the limit).
//
// Without --server the script starts `skiff server` in a temp dir on a free loopback port (SQLite
// by default, --database postgres for a fresh database with the skiff role) and measures its CPU
// (user + system time from /proc/<pid>/stat, as % of one core, averaged over the polling) and
// memory (VmRSS sampled every second, and VmHWM). With --server URL it uses that server and a user
// token from SKIFF_API_TOKEN; --server-pid PID names its process for CPU and memory.
//
// --find-max runs a series: N from --devices, doubling while the goal holds (p99 ≤ 50 ms, errors
// under 0.1%, at least 90% of the nominal request rate done), then bisecting to within 10%; it
// prints every trial and the largest N that held. Devices are registered once and reused.
//
// The issue's goal: 100,000 devices at a 60 s interval (≈1,700 requests/s) with p99 under 50 ms,
// on SQLite and on PostgreSQL, and the server under 300 MB RSS. There is no peer to run: the table
// prints ours beside the goal. Exits 1 when the benchmark cannot run (the server does not start,
// registration fails); a missed goal still exits 0.

import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { log, parseBenchArgs, printTable, fmtMB } from './lib.mjs';
import { percentile, withCleanup, sleep } from './agent-lib.mjs';
import { api, checkDatabaseOption, login, startServer, watchProcess } from './cloud-lib.mjs';

const GOAL = { devices: 100_000, interval: 60, p99Ms: 50, rssMB: 300, errorRate: 0.001, rateShare: 0.9 };
const LATE_MS = 50;
const JITTER = 0.05;
const REQUEST_TIMEOUT_MS = 10_000;

const opts = parseBenchArgs({
  runs: null,
  measuresOnce: 'one load run of --duration seconds, or a series of them with --find-max',
  options: {
    devices: { default: 1000, min: 1, help: 'simulated devices (with --find-max: where the series starts)' },
    interval: { default: 60, min: 1, help: 'seconds between two polls of one device' },
    duration: { default: 0, min: 0, help: 'seconds of polling measured per run (0: twice --interval)' },
    sockets: { default: 64, min: 1, help: 'keep-alive connections the devices share' },
    changes: { default: 1, min: 0, help: 'fleet variable changes during a run (each makes every device fetch its target and report)' },
    'max-devices': { default: 1_000_000, min: 1, help: 'with --find-max: stop growing here' },
    'server-pid': { default: 0, min: 0, help: 'with --server: its pid, for CPU and memory (0: not measured)' },
    server: { type: 'string', default: '', help: 'URL of a running skiff server (user token in SKIFF_API_TOKEN); default: start one here', check: (v) => (/^https?:\/\//.test(v) ? undefined : `an http(s):// URL, not '${v}'`) },
    database: { type: 'string', default: 'sqlite', help: 'for the server started here: sqlite, postgres (a fresh database) or a postgres:// URL', check: checkDatabaseOption },
    'device-type': { type: 'string', default: 'generic-amd64', help: "the fleet's device type" },
    'find-max': { type: 'boolean', help: 'grow N until the p99 goal fails; print the largest N that held' },
  },
});
const DURATION = opts.duration || 2 * opts.interval;

// ---------------------------------------------------------------- HTTP with one keep-alive pool

function request(agent, base, method, path, { token, body, headers = {} } = {}) {
  return new Promise((resolve) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const started = performance.now();
    const req = http.request(`${base}${path}`, {
      method, agent,
      headers: {
        authorization: `Bearer ${token}`,
        ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
        ...headers,
      },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString(), ms: performance.now() - started }));
      res.on('error', (err) => resolve({ status: 0, error: err.code ?? err.message, ms: performance.now() - started }));
    });
    // From the request's creation, so time spent waiting for a free socket counts, as a device's
    // own request timeout would.
    const deadline = setTimeout(() => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })), REQUEST_TIMEOUT_MS);
    req.on('close', () => clearTimeout(deadline));
    req.on('error', (err) => resolve({ status: 0, error: err.code ?? err.message, ms: performance.now() - started }));
    req.end(payload);
  });
}

// ---------------------------------------------------------------- the simulated devices

function newDevice(i) {
  return {
    i,
    uuid: randomBytes(16).toString('hex'),
    key: randomBytes(16).toString('hex'),
    ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    etag: undefined,
    reported: false,
  };
}

/** Registers devices (concurrency 32), honouring 429 + Retry-After as a real device would. */
async function register(agent, base, fleet, provisioningKey, devices, deviceType) {
  let next = 0;
  let limited = 0;
  const latencies = [];
  const started = performance.now();
  const worker = async () => {
    while (next < devices.length) {
      const d = devices[next++];
      for (;;) {
        const r = await request(agent, base, 'POST', '/device/register', {
          token: provisioningKey,
          body: { application: fleet.id, uuid: d.uuid, device_type: deviceType, api_key: d.key, supervisor_version: 'fleet-bench', os_version: 'fleet-bench 1' },
        });
        if (r.status === 201) { latencies.push(r.ms); break; }
        if (r.status === 429) {
          limited++;
          await sleep(1000 * (Number(r.headers['retry-after']) || 1));
          continue;
        }
        throw new Error(`registering device ${d.i + 1}: ${r.status || r.error} ${r.text?.slice(0, 300) ?? ''}`);
      }
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  const seconds = (performance.now() - started) / 1000;
  return { count: devices.length, seconds, perSecond: devices.length / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99), limited };
}

/** A binary min-heap of [due, device] on `due`: the poll schedule of the whole fleet. */
class Schedule {
  heap = [];
  push(due, device) {
    const h = this.heap;
    h.push([due, device]);
    for (let i = h.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (h[p][0] <= h[i][0]) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }
  peek() { return this.heap[0]?.[0]; }
  pop() {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0) {
      h[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && h[l][0] < h[m][0]) m = l;
        if (r < h.length && h[r][0] < h[m][0]) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i], h[m]];
        i = m;
      }
    }
    return top;
  }
}

/** The report a device sends for a new target: everything the first time, then what changed. */
function reportFor(device, target) {
  const mine = target[device.uuid] ?? {};
  const apps = {};
  for (const [appUuid, app] of Object.entries(mine.apps ?? {})) {
    const commit = Object.keys(app.releases ?? {})[0] ?? null;
    apps[appUuid] = { release_uuid: commit, ...(commit ? { releases: { [commit]: { update_status: 'done' } } } : {}) };
  }
  const body = device.reported
    ? { apps }
    : { status: 'Idle', os_version: 'fleet-bench 1', supervisor_version: 'fleet-bench', ip_address: device.ip, api_port: 48484, apps };
  return { [device.uuid]: body };
}

/**
 * One measured run: the first `n` devices poll for `seconds`; `changes` fleet variable changes are
 * spread over the run. Resolves the figures of the run.
 */
async function run({ agent, base, token, fleet, devices, n, seconds, changes, serverPid }) {
  const stats = { poll200: [], poll304: [], report: [], errors: new Map(), late: 0, sent: 0, skipped: 0 };
  const schedule = new Schedule();
  const intervalMs = opts.interval * 1000;
  // The first interval is a warm-up, not measured: a device new to the run fetches its whole
  // target and reports once (registration's tail); what follows is the fleet's steady state.
  const t0 = performance.now() + 200;
  const measureFrom = t0 + intervalMs;
  const end = measureFrom + seconds * 1000;
  for (let i = 0; i < n; i++) schedule.push(t0 + (i / n) * intervalMs + Math.random() * (intervalMs / n), devices[i]);

  const inFlight = new Set();
  const poll = async (device, due) => {
    const measured = due >= measureFrom;
    // A device polls once at a time, as an agent does: a poll due while its last one still waits
    // is not sent (and counted), so a slow server is not buried under a growing queue.
    if (device.busy) {
      if (measured) stats.skipped++;
      return;
    }
    device.busy = true;
    try {
      await pollOnce(device, due, measured);
    } finally {
      device.busy = false;
    }
  };
  const pollOnce = async (device, due, measured) => {
    const record = (list, ms) => measured && list.push(ms);
    const fail = (what) => measured && stats.errors.set(what, (stats.errors.get(what) ?? 0) + 1);
    if (measured) stats.sent++;
    if (measured && performance.now() - due > LATE_MS) stats.late++;
    const r = await request(agent, base, 'GET', `/device/v3/${device.uuid}/state`, { token: device.key, headers: device.etag ? { 'if-none-match': device.etag } : {} });
    if (r.status === 304) { record(stats.poll304, r.ms); return; }
    if (r.status !== 200) { fail(`GET state: ${r.status || r.error}`); return; }
    record(stats.poll200, r.ms);
    const etag = r.headers.etag;
    if (etag === device.etag) return;
    device.etag = etag;
    let target;
    try { target = JSON.parse(r.text); } catch { fail('GET state: body is not JSON'); return; }
    const p = await request(agent, base, 'PATCH', '/device/v3/state', { token: device.key, body: reportFor(device, target) });
    if (p.status >= 200 && p.status < 300) { record(stats.report, p.ms); device.reported = true; } else fail(`PATCH state: ${p.status || p.error} ${p.text?.slice(0, 120) ?? ''}`);
  };

  const changeTimes = Array.from({ length: changes }, (_, k) => measureFrom + ((k + 0.5) / changes) * seconds * 1000);
  const changer = (async () => {
    for (const at of changeTimes) {
      await sleep(Math.max(0, at - performance.now()));
      try {
        await api(base, token, 'PUT', '/variables', { fleet: fleet.name, name: 'FLEET_BENCH_GENERATION', value: randomBytes(4).toString('hex') });
        log(`fleet variable changed at ${((performance.now() - measureFrom) / 1000).toFixed(1)} s of the measured ${seconds} s: every device fetches its target and reports`);
      } catch (err) {
        stats.errors.set('PUT variable', (stats.errors.get('PUT variable') ?? 0) + 1);
        log(`PUT variable: ${err.message.slice(0, 200)}`);
      }
    }
  })();

  let watch;
  let cpuBefore;
  const startWatching = setTimeout(() => {
    watch = watchProcess(serverPid);
    cpuBefore = process.cpuUsage();
    log(`${n} devices: warm-up interval done, measuring ${seconds} s`);
  }, Math.max(0, measureFrom - performance.now()));
  const progress = setInterval(() => log(`${n} devices: ${((performance.now() - t0) / 1000).toFixed(0)} s of ${opts.interval} + ${seconds}, ${stats.sent} measured requests sent, ${inFlight.size} in flight`), 10_000);
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (schedule.peek() !== undefined && schedule.peek() <= now && schedule.peek() < end) {
        const [due, device] = schedule.pop();
        const p = poll(device, due).finally(() => inFlight.delete(p));
        inFlight.add(p);
        schedule.push(due + intervalMs * (1 + (Math.random() * 2 - 1) * JITTER), device);
      }
      if (now >= end) return resolve();
      setTimeout(tick, Math.max(0, Math.min(schedule.peek() ?? end, end) - performance.now()));
    };
    tick();
  });
  const windowSeconds = (performance.now() - measureFrom) / 1000;
  clearTimeout(startWatching);
  await Promise.all(inFlight);
  await changer;
  clearInterval(progress);
  const server = watch?.stop() ?? null;
  const cpu = process.cpuUsage(cpuBefore);
  const all = [...stats.poll200, ...stats.poll304, ...stats.report];
  const errors = [...stats.errors.values()].reduce((a, b) => a + b, 0);
  return {
    n, seconds: windowSeconds,
    requests: all.length + errors,
    perSecond: (all.length + errors) / windowSeconds,
    nominalPerSecond: n / opts.interval,
    p50: percentile(all, 50), p99: percentile(all, 99), max: all.length ? all.reduce((a, b) => Math.max(a, b)) : null,
    kinds: { 'GET state 304': stats.poll304, 'GET state 200': stats.poll200, 'PATCH report': stats.report },
    errors, errorKinds: stats.errors, late: stats.late, sent: stats.sent, skipped: stats.skipped,
    server, simulatorCpuPercent: (100 * (cpu.user + cpu.system)) / 1e6 / windowSeconds,
  };
}

function holds(r) {
  const polls = r.kinds['GET state 304'].length + r.kinds['GET state 200'].length;
  return r.p99 !== null && r.p99 <= GOAL.p99Ms && r.errors <= GOAL.errorRate * Math.max(1, r.requests) && polls >= GOAL.rateShare * r.nominalPerSecond * r.seconds;
}

const ms = (v) => (v == null ? 'n/a' : `${v.toFixed(1)} ms`);
const pct = (v) => (v == null ? 'n/a' : `${v.toFixed(0)}%`);

function printRun(r, label) {
  const rows = [
    ['devices', r.n.toLocaleString('en'), GOAL.devices.toLocaleString('en')],
    ['poll interval', `${opts.interval} s`, `${GOAL.interval} s`],
    ['requests/s (all kinds)', r.perSecond.toFixed(0), `≈${(GOAL.devices / GOAL.interval).toFixed(0)}`],
    ['nominal polls/s (N / interval)', r.nominalPerSecond.toFixed(0), ''],
    ['latency p50', ms(r.p50), ''],
    ['latency p99', ms(r.p99), `< ${GOAL.p99Ms} ms`],
    ['latency max', ms(r.max), ''],
    ...Object.entries(r.kinds).map(([k, v]) => [`  ${k}: count, p50 / p99`, v.length ? `${v.length}, ${ms(percentile(v, 50))} / ${ms(percentile(v, 99))}` : '0', '']),
    ['errors', `${r.errors}${r.errors ? ` (${[...r.errorKinds].map(([k, v]) => `${k}: ${v}`).join('; ')})` : ''}`, '0'],
    [`requests sent > ${LATE_MS} ms late by the simulator`, `${r.late} of ${r.sent}`, ''],
    ['polls not sent: the device\'s last one still waiting', String(r.skipped), '0'],
    ['server CPU (% of one core)', pct(r.server?.cpuPercent), ''],
    ['server RSS max / end', r.server ? `${fmtMB(r.server.rssMaxMB)} / ${fmtMB(r.server.rssEndMB)}` : 'n/a', `< ${GOAL.rssMB} MB`],
    ['server VmHWM (peak RSS)', fmtMB(r.server?.hwmMB), `< ${GOAL.rssMB} MB`],
    ['simulator CPU (% of one core)', pct(r.simulatorCpuPercent), ''],
  ];
  printTable(['measure', 'skiff server', 'goal'], rows, label);
}

await withCleanup(async (onCleanup) => {
  let base = opts.server.replace(/\/$/, '');
  let token = process.env.SKIFF_API_TOKEN;
  let serverPid = opts.serverPid;
  let database = 'given server';
  if (!base) {
    // One address registers the whole fleet here; in the field each device has its own.
    const server = await startServer({ database: opts.database, args: ['--register-rate-limit', '100000000'] });
    onCleanup(() => server.stop());
    base = server.url;
    serverPid = server.pid;
    database = server.database === 'sqlite' ? 'SQLite' : 'PostgreSQL';
    token = await login(base, server.email, server.password);
  } else if (!token) {
    throw new Error('--server needs a user token in SKIFF_API_TOKEN (skiff api-key generate)');
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.sockets, maxFreeSockets: opts.sockets, scheduling: 'fifo' });
  onCleanup(() => agent.destroy());

  const fleet = await api(base, token, 'POST', '/fleets', { name: `fleet-bench-${randomBytes(3).toString('hex')}`, deviceType: opts.deviceType });
  const provisioning = await api(base, token, 'POST', `/fleets/${encodeURIComponent(fleet.name)}/provisioning-keys`, { name: 'fleet-bench' });
  log(`fleet ${fleet.name} (${opts.deviceType}) on ${base}, ${database}`);

  const devices = [];
  const registrations = [];
  const ensureDevices = async (n) => {
    if (devices.length >= n) return;
    const fresh = Array.from({ length: n - devices.length }, (_, k) => newDevice(devices.length + k));
    log(`registering ${fresh.length} device(s)`);
    const reg = await register(agent, base, fleet, provisioning.key, fresh, opts.deviceType);
    devices.push(...fresh);
    registrations.push(reg);
    log(`registered ${reg.count} in ${reg.seconds.toFixed(1)} s (${reg.perSecond.toFixed(0)}/s, p50 ${ms(reg.p50)}, p99 ${ms(reg.p99)}${reg.limited ? `, ${reg.limited} answers 429: rate-limited` : ''})`);
  };
  const trial = async (n) => {
    await ensureDevices(n);
    log(`polling: ${n} devices every ${opts.interval} s for ${DURATION} s`);
    return run({ agent, base, token, fleet, devices, n, seconds: DURATION, changes: opts.changes, serverPid });
  };

  // The machine's load is printed with the figures: on a shared machine other work moves the p99.
  const header = () => `skiff server (${database}, Node ${process.version}), fleet simulator on the same machine: ${opts.sockets} keep-alive sockets, ${opts.changes} target change(s) per run, ${opts.interval} s warm-up + ${DURATION} s measured per run; load average ${loadavg().map((l) => l.toFixed(1)).join(' / ')} (1/5/15 min) at the end`;
  if (!opts.findMax) {
    const r = await trial(opts.devices);
    const reg = registrations.at(-1);
    console.log(`\n${header()}`);
    printRun(r, `${r.n} devices polling every ${opts.interval} s`);
    console.log(`registration: ${reg.count} devices in ${reg.seconds.toFixed(1)} s (${reg.perSecond.toFixed(0)}/s, p99 ${ms(reg.p99)})${reg.limited ? `; ${reg.limited} answers were 429 (rate limit)` : ''}`);
    console.log(`goal (p99 < ${GOAL.p99Ms} ms, no errors, RSS < ${GOAL.rssMB} MB) at ${r.n} devices: ${holds(r) && (r.server?.hwmMB ?? 0) < GOAL.rssMB ? 'met' : 'NOT met'}${r.n < GOAL.devices ? ` (the issue's goal is at ${GOAL.devices.toLocaleString('en')} devices: --devices ${GOAL.devices} or --find-max)` : ''}`);
    return;
  }

  const trials = [];
  let good = null;
  let bad = null;
  let n = opts.devices;
  while (n <= opts.maxDevices) {
    const r = await trial(n);
    trials.push(r);
    log(`${n} devices: p99 ${ms(r.p99)}, ${r.perSecond.toFixed(0)} req/s, ${r.errors} errors: ${holds(r) ? 'holds' : 'fails'}`);
    if (holds(r)) good = r; else { bad = r; break; }
    if (n === opts.maxDevices) break;
    n = Math.min(n * 2, opts.maxDevices);
  }
  while (good && bad && bad.n - good.n > Math.max(100, good.n * 0.1)) {
    const mid = Math.round((good.n + bad.n) / 2);
    const r = await trial(mid);
    trials.push(r);
    log(`${mid} devices: p99 ${ms(r.p99)}: ${holds(r) ? 'holds' : 'fails'}`);
    if (holds(r)) good = r; else bad = r;
  }
  console.log(`\n${header()}`);
  printTable(
    ['devices', 'req/s', 'p50', 'p99', 'errors', 'late sends', 'server CPU', 'server RSS max', 'holds'],
    trials.map((r) => [r.n.toLocaleString('en'), r.perSecond.toFixed(0), ms(r.p50), ms(r.p99), String(r.errors), String(r.late), pct(r.server?.cpuPercent), fmtMB(r.server?.rssMaxMB), holds(r) ? 'yes' : 'no']),
    `--find-max: every ${opts.interval} s per device, goal p99 ≤ ${GOAL.p99Ms} ms, errors < ${GOAL.errorRate * 100}%, ≥ ${GOAL.rateShare * 100}% of nominal polls done`,
  );
  if (good) printRun(good, `largest N that held: ${good.n.toLocaleString('en')} devices`);
  console.log(`largest N that held: ${good ? good.n.toLocaleString('en') : `none (even ${opts.devices} failed)`}${bad ? `; ${bad.n.toLocaleString('en')} failed` : `; stopped at --max-devices ${opts.maxDevices}`}. Goal: ${GOAL.devices.toLocaleString('en')} at ${GOAL.interval} s: ${good && good.n >= GOAL.devices && opts.interval <= GOAL.interval ? 'met' : 'NOT met'}`);
});
