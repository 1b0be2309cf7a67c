// Helpers for the device-agent benchmarks (push.mjs, logs.mjs, agent-footprint.mjs).
// Plain Node ESM, node: builtins only. The engine is reached over its own socket (DOCKER_HOST
// tcp://host:port or unix://path, else /var/run/docker.sock), not through the agent, so clean-up
// works even when the agent has died.

import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { REPO_ROOT, SKIFF_BIN, log } from './lib.mjs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function percentile(values, p) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

// ---------------------------------------------------------------- engine API

function engineTarget() {
  const host = process.env.DOCKER_HOST;
  if (host?.startsWith('tcp://')) {
    const u = new URL(host.replace(/^tcp:/, 'http:'));
    return { host: u.hostname, port: Number(u.port || 2375) };
  }
  if (host?.startsWith('unix://')) return { socketPath: host.slice('unix://'.length) };
  return { socketPath: '/var/run/docker.sock' };
}

/** One engine API call; resolves { status, json } (json null when the body isn't JSON). */
export function engine(method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({
      ...engineTarget(), method, path,
      headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {},
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => {
        let json = null;
        try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
        resolve({ status: res.statusCode, json, text });
      });
    });
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error(`engine ${method} ${path} timed out`)));
    if (data) req.write(data);
    req.end();
  });
}

const q = (filters) => encodeURIComponent(JSON.stringify(filters));

export async function imageIds() {
  const { json } = await engine('GET', '/images/json?all=1');
  return new Set((json ?? []).map((i) => i.Id));
}

/** Image id of a reference ('name:tag'), or null. */
export async function imageId(ref) {
  const { status, json } = await engine('GET', `/images/${encodeURIComponent(ref)}/json`);
  return status === 200 ? json.Id : null;
}

/** Images whose tags start with one of the prefixes: [{ Id, RepoTags }]. */
export async function imagesTagged(prefixes) {
  const { json } = await engine('GET', '/images/json');
  return (json ?? []).filter((i) => (i.RepoTags ?? []).some((t) => prefixes.some((p) => t.startsWith(p))));
}

export async function containersOf(uuid) {
  const { json } = await engine('GET', `/containers/json?all=1&filters=${q({ label: [`io.skiff.agent=${uuid}`] })}`);
  return json ?? [];
}

/** Removes the containers, volumes and networks an agent made (label io.skiff.agent=<uuid>). */
export async function cleanupAgentObjects(uuid) {
  const label = `io.skiff.agent=${uuid}`;
  for (const c of await containersOf(uuid)) await engine('DELETE', `/containers/${c.Id}?force=1&v=1`).catch(() => {});
  const vols = (await engine('GET', `/volumes?filters=${q({ label: [label] })}`)).json?.Volumes ?? [];
  for (const v of vols) await engine('DELETE', `/volumes/${encodeURIComponent(v.Name)}`).catch(() => {});
  const nets = (await engine('GET', `/networks?filters=${q({ label: [label] })}`)).json ?? [];
  for (const n of nets) await engine('DELETE', `/networks/${n.Id}`).catch(() => {});
}

/** Removes images by id (untagging every tag first); ids that were here before (`keep`) are skipped. */
export async function removeImages(ids, keep = new Set()) {
  let removed = 0;
  for (const id of ids) {
    if (keep.has(id)) continue;
    const r = await engine('DELETE', `/images/${id}?force=1`).catch(() => ({ status: 0 }));
    if (r.status === 200) removed++;
  }
  return removed;
}

/** busybox:1.36 for the example projects (made locally when no registry is reachable). */
export function ensureBaseImage() {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'scripts', 'demo-base-images.mjs')], { stdio: ['ignore', 2, 2] });
  if (r.status !== 0) throw new Error('scripts/demo-base-images.mjs failed: cannot make busybox:1.36');
}

// ---------------------------------------------------------------- the agent

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** True when nothing accepts connections on 127.0.0.1:port. */
export function portIsFree(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.once('connect', () => { sock.destroy(); resolve(false); });
    sock.once('error', () => resolve(true));
  });
}

/**
 * Starts `skiff agent` on 127.0.0.1 with a temp data dir, like test/support/agent.ts.
 * Returns { child, pid, port, enginePort, dataDir, uuid, url, output(), kill() }.
 */
/**
 * `args` are extra `skiff agent` flags and `env` extra environment (e.g. DOCKER_HOST, for an agent
 * on another engine); `configFile` is the config.json a cloud-mode agent was given (`--config`),
 * read for the uuid once it has one (the uuid is null while it has none yet).
 */
export async function startAgent({ port, enginePort, rollbackGrace = 2, args: extra = [], env = {}, configFile, bin = SKIFF_BIN } = {}) {
  port ??= await freePort();
  enginePort ??= await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'skiff-bench-agent-'));
  const args = [bin, 'agent', '--data-dir', dataDir, '--listen-address', '127.0.0.1',
    '--listen-port', String(port), '--engine-port', String(enginePort), '--rollback-grace', String(rollbackGrace), ...extra];
  log(`$ node ${args.join(' ')}`);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', ...env } });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const url = `http://127.0.0.1:${port}`;
  const agent = {
    child, pid: child.pid, port, enginePort, dataDir, url, uuid: null,
    output: () => out,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        const done = new Promise((r) => child.once('close', r));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await done;
        clearTimeout(t);
      }
    },
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`agent exited: ${out}`);
    if (await fetch(`${url}/ping`).then((r) => r.ok).catch(() => false)) break;
    if (Date.now() > deadline) { await agent.kill(); throw new Error(`agent did not answer: ${out}`); }
    await sleep(100);
  }
  if (configFile) {
    try { agent.uuid = JSON.parse(readFileSync(configFile, 'utf8')).uuid ?? null; } catch { /* not written yet */ }
  } else {
    agent.uuid = JSON.parse(readFileSync(join(dataDir, 'config.json'), 'utf8')).uuid;
  }
  return agent;
}

export async function deviceStatus(url) {
  return (await fetch(`${url}/v2/state/status`)).json();
}

/** Polls check() every intervalMs until it returns truthy; throws after timeoutMs. */
export async function waitFor(check, { timeoutMs = 120_000, intervalMs = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${last?.message ?? JSON.stringify(last)}`);
    await sleep(intervalMs);
  }
}

/** Copies a project folder to a temp dir whose last path element is a fresh unique name. */
export function copyProject(src, prefix = 'skiffbench') {
  const parent = mkdtempSync(join(tmpdir(), 'skiff-bench-proj-'));
  const name = `${prefix}${randomBytes(3).toString('hex')}`;
  const dir = join(parent, name);
  if (src) cpSync(src, dir, { recursive: true });
  return { dir, name, remove: () => rmSync(parent, { recursive: true, force: true }) };
}

/** balena-cli's local push can't be told other ports: the agent must take these two. */
export const BALENA_API_PORT = 48484;
export const BALENA_ENGINE_PORT = 2375;

/** Fails unless 127.0.0.1 has balena's device API and engine ports free for our agent. */
export async function requireBalenaPorts() {
  for (const p of [BALENA_API_PORT, BALENA_ENGINE_PORT]) {
    if (!(await portIsFree(p))) throw new Error(`127.0.0.1:${p} is in use; balena push needs the agent on ${BALENA_API_PORT} (engine ${BALENA_ENGINE_PORT}). Stop whatever listens there first.`);
  }
}

/**
 * examples/multi-service copied to a temp folder with a unique name (skiff names images after the
 * folder). web publishes 8080:80; other sessions on this engine may hold 8080, so the copy
 * publishes a free port instead. Returns copyProject's result plus `hostPort`.
 */
export async function copyExampleProject() {
  const project = copyProject(join(REPO_ROOT, 'examples', 'multi-service'));
  const hostPort = await freePort();
  const composePath = join(project.dir, 'docker-compose.yml');
  writeFileSync(composePath, readFileSync(composePath, 'utf8').replace('"8080:80"', `"${hostPort}:80"`));
  return { ...project, hostPort };
}

/** Runs `skiff <args>` to completion; resolves { code, stdout, stderr, ms }. */
export function runSkiff(args, opts = {}) {
  return runCmd(process.execPath, [SKIFF_BIN, ...args], opts);
}

export function runCmd(cmd, args, { env, cwd, timeoutMs = 300_000 } = {}) {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(cmd, args, { cwd: cwd ?? REPO_ROOT, env: { NO_COLOR: '1', ...(env ?? process.env) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr, ms: Number(process.hrtime.bigint() - start) / 1e6 });
    });
  });
}

/**
 * Runs cleanup once: at the normal end, on an error, and on SIGINT/SIGTERM. Wrap the benchmark in
 * withCleanup(async (onCleanup) => { ... onCleanup(fn) ... }); the fns run last-registered first.
 */
export async function withCleanup(body) {
  const fns = [];
  let ran = false;
  const runAll = async () => {
    if (ran) return;
    ran = true;
    for (const fn of fns.reverse()) {
      try { await fn(); } catch (err) { log(`cleanup: ${err.message}`); }
    }
  };
  const onSignal = (sig) => { log(`${sig}: cleaning up`); runAll().finally(() => process.exit(130)); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await body((fn) => fns.push(fn));
  } catch (err) {
    process.exitCode = 1;
    log(`FAILED: ${err.stack ?? err}`);
  } finally {
    await runAll();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export { existsSync };
