// Release-to-device latency through the event channel: N simulated devices hold the WebSocket
// (GET /device/v3/:uuid/events) to one `skiff server`; the script makes releases and measures,
// for each device, the time from the release becoming final (the PATCH that marks it successful is
// sent) to that device's first target fetch answering 200 with the new target.
//
//   node bench/events.mjs [--connected N] [--releases N] [--database sqlite|postgres|URL]
//
// Each device registers with the fleet's provisioning key, fetches its target once (as an agent
// does after registering), opens its socket, and on every `update` fetches its target with
// If-None-Match, as the agent's poll does. No device polls on a timer: only the channel can explain
// a fetch. Each release is one service whose image is a tiny one pushed straight through the
// registry API (no engine). The issue's goal: p99 under 1 s with 1,000 connected devices.
// Exits 1 when the benchmark cannot run; a missed goal still exits 0.

import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { log, parseBenchArgs, printTable } from './lib.mjs';
import { percentile, withCleanup, sleep } from './agent-lib.mjs';
import { api, checkDatabaseOption, login, startServer } from './cloud-lib.mjs';

const GOAL = { connected: 1000, p99Ms: 1000 };

const opts = parseBenchArgs({
  runs: null,
  measuresOnce: 'the latency of each release to every connected device',
  options: {
    connected: { default: GOAL.connected, min: 1, help: 'simulated devices holding the event channel' },
    releases: { default: 3, min: 1, help: 'releases made, one after the other' },
    database: { type: 'string', default: 'sqlite', help: 'sqlite, postgres (a fresh database) or a postgres:// URL', check: checkDatabaseOption },
  },
});

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function request(base, method, path, { token, body, headers = {} } = {}) {
  return new Promise((resolve) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(`${base}${path}`, { method, agent, headers: { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}), ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}) } }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on('error', (err) => resolve({ status: 0, error: err.message }));
    req.end(payload);
  });
}

/** A tiny image through the registry API; returns its manifest digest. */
async function pushTinyImage(base, token, repository) {
  const scope = `repository:${repository}:pull,push`;
  const tokenRes = await fetch(`${base}/auth/v1/token?service=${encodeURIComponent(new URL(base).host)}&scope=${encodeURIComponent(scope)}`, { headers: { authorization: `Basic ${Buffer.from(`_token:${token}`).toString('base64')}` } });
  if (tokenRes.status !== 200) throw new Error(`registry token: ${tokenRes.status} ${await tokenRes.text()}`);
  const auth = { authorization: `Bearer ${(await tokenRes.json()).token}` };
  const sha = (b) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const upload = async (blob) => {
    const start = await fetch(`${base}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers: auth });
    if (start.status !== 202) throw new Error(`blob upload start: ${start.status}`);
    const put = new URL(start.headers.get('location') ?? '', base);
    put.searchParams.set('digest', sha(blob));
    const done = await fetch(put, { method: 'PUT', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: blob });
    if (done.status !== 201) throw new Error(`blob upload: ${done.status}`);
    return sha(blob);
  };
  const layer = await upload(randomBytes(64));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [layer] } }));
  const configDigest = await upload(config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
    config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: configDigest },
    layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: 64, digest: layer }],
  }));
  const res = await fetch(`${base}/v2/${repository}/manifests/latest`, { method: 'PUT', headers: { ...auth, 'content-type': 'application/vnd.docker.distribution.manifest.v2+json' }, body: manifest });
  if (res.status !== 201) throw new Error(`manifest push: ${res.status}`);
  return sha(manifest);
}

await withCleanup(async (onCleanup) => {
  const server = await startServer({ database: opts.database, args: ['--register-rate-limit', '100000000'] });
  onCleanup(() => server.stop());
  onCleanup(() => agent.destroy());
  const base = server.url;
  const token = await login(base, server.email, server.password);
  const fleet = await api(base, token, 'POST', '/fleets', { name: `events-bench-${randomBytes(3).toString('hex')}`, deviceType: 'genericx86-64-ext' });
  const provisioning = await api(base, token, 'POST', `/fleets/${encodeURIComponent(fleet.name)}/provisioning-keys`, { name: 'events-bench' });

  const devices = Array.from({ length: opts.connected }, () => ({ uuid: randomBytes(16).toString('hex'), key: randomBytes(16).toString('hex'), etag: undefined, fetched: new Map(), socket: undefined }));
  log(`registering ${devices.length} device(s) and opening their sockets`);
  let next = 0;
  let release = { commit: undefined, t0: 0 };
  /** A device's fetch of its target: with a release in flight, its first 200 naming it is timed. */
  const fetchTarget = async (d) => {
    const r = await request(base, 'GET', `/device/v3/${d.uuid}/state`, { token: d.key, headers: d.etag ? { 'if-none-match': d.etag } : {} });
    if (r.status === 200) {
      d.etag = r.headers.etag;
      const commit = release.commit;
      if (commit && !d.fetched.has(commit) && r.text.includes(commit)) d.fetched.set(commit, performance.now() - release.t0);
    } else if (r.status !== 304) log(`device ${d.uuid.slice(0, 7)}: target ${r.status || r.error}`);
  };
  const open = (d) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}/device/v3/${d.uuid}/events`, { headers: { authorization: `Bearer ${d.key}` } });
    d.socket = ws;
    ws.on('open', resolve);
    ws.on('error', reject);
    // Coalesced as the agent does: one fetch at a time, another after it when updates came meanwhile.
    let busy = false;
    let again = false;
    ws.on('message', async (data) => {
      if (JSON.parse(data.toString()).type !== 'update') return; // the hello, or an action
      if (busy) { again = true; return; }
      busy = true;
      do { again = false; await fetchTarget(d); } while (again);
      busy = false;
    });
  });
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (next < devices.length) {
      const d = devices[next++];
      const r = await request(base, 'POST', '/device/register', { token: provisioning.key, body: { application: fleet.id, uuid: d.uuid, device_type: 'genericx86-64-ext', api_key: d.key } });
      if (r.status !== 201) throw new Error(`registering: ${r.status || r.error} ${r.text ?? ''}`);
      await fetchTarget(d);
      await open(d);
    }
  }));
  onCleanup(() => { for (const d of devices) d.socket?.terminate(); });
  log(`${devices.length} devices connected`);

  const rows = [];
  const all = [];
  for (let i = 0; i < opts.releases; i++) {
    const created = await api(base, token, 'POST', `/fleets/${encodeURIComponent(fleet.name)}/releases`, { composition: { services: { main: { command: ['sleep', 'infinity'] } } } });
    const repository = created.repositories.main.split('/').slice(1).join('/');
    const digest = await pushTinyImage(base, token, repository);
    release = { commit: created.release.commit, t0: performance.now() };
    await api(base, token, 'PATCH', `/releases/${created.release.commit}`, { status: 'success', images: { main: digest }, isFinal: true });
    const deadline = Date.now() + 30_000;
    while (devices.some((d) => !d.fetched.has(release.commit)) && Date.now() < deadline) await sleep(20);
    const times = devices.map((d) => d.fetched.get(release.commit)).filter((t) => t !== undefined);
    all.push(...times);
    rows.push([`release ${i + 1}`, `${times.length}/${devices.length}`, `${percentile(times, 50).toFixed(0)} ms`, `${percentile(times, 99).toFixed(0)} ms`, `${Math.max(...times).toFixed(0)} ms`]);
    log(`release ${i + 1}: ${times.length}/${devices.length} devices fetched it; p50 ${percentile(times, 50).toFixed(0)} ms, p99 ${percentile(times, 99).toFixed(0)} ms`);
  }
  rows.push(['all', `${all.length}/${devices.length * opts.releases}`, `${percentile(all, 50).toFixed(0)} ms`, `${percentile(all, 99).toFixed(0)} ms`, `${Math.max(...all).toFixed(0)} ms`]);
  rows.push(['goal', `${GOAL.connected} connected`, '-', `< ${GOAL.p99Ms} ms`, '-']);
  printTable(['release', 'devices that fetched it', 'p50', 'p99', 'max'], rows, `Release-to-device latency through the event channel (${devices.length} connected, ${server.database === 'sqlite' ? 'SQLite' : 'PostgreSQL'})`);
});
