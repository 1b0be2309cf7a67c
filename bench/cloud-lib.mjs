// Shared helpers for the cloud benchmarks (fleet.mjs, cloud-deploy.mjs, cloud-logs.mjs, tunnel.mjs): starting `skiff server`
// in a temp data dir (SQLite, or a fresh PostgreSQL database made with the `skiff` role that
// scripts/setup-host.sh creates), calls to its API, and the server process's CPU and memory from
// /proc. Plain Node ESM, node: builtins only (PostgreSQL through the `psql` client).

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { REPO_ROOT, SKIFF_BIN, log, sh } from './lib.mjs';
import { freePort, sleep } from './agent-lib.mjs';

/** PostgreSQL the benches use, as a URL with the skiff role's credentials. */
export const BENCH_POSTGRES = process.env.SKIFF_BENCH_POSTGRES || 'postgres://skiff:skiff@127.0.0.1:5432/postgres';

/**
 * Builds dist/ (npm run prepare-cli) when it lacks one of `commands` (file names under
 * dist/commands, e.g. `server.js`, `fleet/create.js`): a checkout built before the cloud, or never.
 */
export function ensureCommandsBuilt(commands = ['server.js']) {
  const missing = () => commands.filter((c) => !existsSync(join(REPO_ROOT, 'dist', 'commands', c)));
  if (missing().length === 0) return;
  log(`dist/commands lacks ${missing().join(', ')}: building skiff (npm run prepare-cli)`);
  sh('npm', ['run', 'prepare-cli'], { cwd: REPO_ROOT });
  if (missing().length > 0) throw new Error(`this checkout has no ${missing().map((c) => `dist/commands/${c}`).join(', ')} (is the command merged?)`);
}

function psql(sql) {
  const u = new URL(BENCH_POSTGRES);
  const r = spawnSync('psql', ['-h', u.hostname, '-p', u.port || '5432', '-U', decodeURIComponent(u.username), '-d', u.pathname.slice(1) || 'postgres', '-v', 'ON_ERROR_STOP=1', '-qtAX', '-c', sql], {
    env: { ...process.env, PGPASSWORD: decodeURIComponent(u.password) },
    encoding: 'utf8',
  });
  if (r.error) throw new Error(`psql: ${r.error.message} (apt-get install postgresql-client, or run scripts/setup-host.sh)`);
  if (r.status !== 0) throw new Error(`psql ${sql}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** A new database for one bench run: `{ url, drop() }` (drop ends the server's connections first). */
export function makePostgresDatabase() {
  const name = `skiff_bench_${process.pid}_${randomBytes(4).toString('hex')}`;
  psql(`CREATE DATABASE ${name}`);
  const url = new URL(BENCH_POSTGRES);
  url.pathname = `/${name}`;
  return { url: url.toString(), name, drop: () => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}

/**
 * `--database` of a bench: `sqlite` (the server's default file in its data dir), `postgres` (a fresh
 * database made here and dropped at the end) or a `postgres://` URL used as it is.
 */
export function checkDatabaseOption(value) {
  return value === 'sqlite' || value === 'postgres' || /^postgres(ql)?:\/\//.test(value) ? undefined : `sqlite, postgres or a postgres:// URL, not '${value}'`;
}

/**
 * Starts `skiff server` (the Node process itself, so its pid is the server's) on a free loopback
 * port in a temp data dir, with an admin user, and waits until `GET /ping` answers 200.
 * `database`: see checkDatabaseOption; `dataDir`: start on a data dir an earlier startServer made
 * (a restart). Resolves { url, pid, child, dataDir, email, password, database, readyMs, output(),
 * stop({ keepData }) }; register stop() with withCleanup's onCleanup (keepData: leave the data
 * dir and database for a restart).
 */
export async function startServer({ database = 'sqlite', args = [], env = {}, label = 'server', dataDir: reuse } = {}) {
  ensureCommandsBuilt();
  const dataDir = reuse ?? mkdtempSync(join(tmpdir(), 'skiff-bench-server-'));
  const email = 'bench@skiff.invalid';
  const passwordFile = join(dataDir, 'admin-password');
  if (!reuse) writeFileSync(passwordFile, `${randomBytes(12).toString('hex')}\n`, { mode: 0o600 });
  const password = readFileSync(passwordFile, 'utf8').trim();
  let db;
  if (database === 'postgres') db = makePostgresDatabase();
  const databaseUrl = db?.url ?? (database === 'sqlite' ? undefined : database);
  const port = await freePort();
  const argv = [
    SKIFF_BIN, 'server', '--data-dir', join(dataDir, 'data'), '--port', String(port), '--host', '127.0.0.1',
    '--admin-email', email, '--admin-password-file', passwordFile,
    ...(databaseUrl ? ['--database', databaseUrl] : []), ...args,
  ];
  const started = process.hrtime.bigint();
  const child = spawn(process.execPath, argv, { cwd: REPO_ROOT, env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d) => { out = (out + d).slice(-200_000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  const url = `http://127.0.0.1:${port}`;
  const stop = async ({ keepData = false } = {}) => {
    if (!exited) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await new Promise((r) => (exited ? r() : child.once('exit', r)));
      clearTimeout(killer);
    }
    if (keepData) return;
    try { db?.drop(); } catch (err) { log(`dropping ${db.name}: ${err.message}`); }
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    // Not waitFor: a server that exited is an answer at once, not something to wait out.
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (exited) throw new Error(`skiff server exited (${exited.code ?? exited.signal}) before answering /ping:\n${out}`);
      const ok = await fetch(`${url}/ping`, { signal: AbortSignal.timeout(1000) }).then((r) => r.status === 200, () => false);
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`${label} on ${url} did not answer /ping within 60 s:\n${out}`);
      await sleep(20);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  const readyMs = Number(process.hrtime.bigint() - started) / 1e6;
  log(`${label}: skiff server pid ${child.pid} on ${url} (${databaseUrl ? redact(databaseUrl) : 'SQLite'}), ready in ${(readyMs / 1000).toFixed(2)} s`);
  return { url, pid: child.pid, child, dataDir, email, password, database: databaseUrl ?? 'sqlite', readyMs, output: () => out, stop };
}

/** A URL without its password, for logs. */
export function redact(url) {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}

/**
 * One JSON call to the user API. Throws on a non-2xx answer, with the server's message.
 * Resolves the parsed body (undefined for 204).
 */
export async function api(base, token, method, path, body) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text.slice(0, 500)}`);
  return text ? JSON.parse(text) : undefined;
}

/** A session token for email/password (`POST /auth/login`). */
export async function login(base, email, password) {
  return (await api(base, undefined, 'POST', '/auth/login', { email, password })).token;
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/**
 * A process's CPU time (seconds, user + system, from /proc/<pid>/stat) and memory (MB: VmRSS and
 * VmHWM, the kernel's RSS high-water mark, from /proc/<pid>/status); null once it is gone.
 */
export function procSample(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd (state) on
    const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(status)?.[1] ?? Number.NaN);
    return { at: performance.now(), cpuSeconds, rssMB: kb('VmRSS') / 1024, hwmMB: kb('VmHWM') / 1024 };
  } catch {
    return null;
  }
}

/**
 * Samples a process every second until stopped: `stop()` gives { cpuPercent (of one core, averaged
 * over the span), rssMaxMB, rssEndMB, hwmMB } or null when the pid could not be read.
 */
export function watchProcess(pid) {
  if (!pid) return { stop: () => null };
  const first = procSample(pid);
  let last = first;
  let rssMax = first?.rssMB ?? 0;
  const timer = setInterval(() => {
    const s = procSample(pid);
    if (s) { last = s; rssMax = Math.max(rssMax, s.rssMB); }
  }, 1000);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      const s = procSample(pid) ?? last;
      if (!first || !s) return null;
      rssMax = Math.max(rssMax, s.rssMB);
      const span = (s.at - first.at) / 1000;
      return { cpuPercent: span > 0 ? (100 * (s.cpuSeconds - first.cpuSeconds)) / span : null, rssMaxMB: rssMax, rssEndMB: s.rssMB, hwmMB: s.hwmMB };
    },
  };
}

/**
 * The cloud benches' project: a compose file with one build per service, each busybox plus its own
 * random `payload` file of `payloadBytes`, running a shell that ends on SIGTERM (`sleep` as PID 1
 * ignores it, and every update would then wait out the engine's 10 s stop timeout, which is not the
 * cloud's time).
 */
export function writeServicesProject(dir, services, payloadBytes) {
  writeFileSync(join(dir, 'docker-compose.yml'), `version: "2.1"\nservices:\n${services.map((s) => `  ${s}:\n    build: ./${s}\n`).join('')}`);
  for (const s of services) {
    mkdirSync(join(dir, s), { recursive: true });
    writeFileSync(join(dir, s, 'Dockerfile'), 'FROM busybox:1.36\nCOPY payload /payload\nCMD ["sh", "-c", "trap \'exit 0\' TERM; while true; do sleep 1; done"]\n');
    writeFileSync(join(dir, s, 'payload'), randomBytes(payloadBytes));
  }
}

/**
 * What the device benches (cloud-logs.mjs, tunnel.mjs) start the same way: a server
 * (`database`), a logged-in CLI environment, a fleet polled every second, a temp project folder
 * (the images built from it are removed at the end), and one cloud-mode agent provisioned with
 * `skiff config generate`. Everything is registered with `onCleanup`. Returns
 * `{ server, token, env, skiff(args, what), fleet, project, agent }`.
 */
export async function startCloudDevice(onCleanup, { name, database, agent: agentOptions = {} }) {
  const { cleanupAgentObjects, imageIds, imagesTagged, removeImages, runSkiff, startAgent } = await import('./agent-lib.mjs');
  const before = await imageIds();
  const server = await startServer({ database });
  onCleanup(() => server.stop());
  const token = await login(server.url, server.email, server.password);
  const home = mkdtempSync(join(tmpdir(), `skiff-bench-${name}-home-`));
  onCleanup(() => rmSync(home, { recursive: true, force: true }));
  const env = { ...process.env, HOME: home, SKIFF_API_URL: server.url, SKIFF_API_TOKEN: token, NO_COLOR: '1' };
  const skiff = async (args, what) => {
    const r = await runSkiff(args, { env });
    if (r.code !== 0) throw new Error(`${what}: skiff ${args.join(' ')} exited ${r.code}:\n${r.stdout}${r.stderr}`);
    return r.stdout;
  };
  const fleet = `${name}-bench-${randomBytes(3).toString('hex')}`;
  await skiff(['fleet', 'create', fleet, '--type', 'generic-amd64'], 'fleet create');
  await skiff(['env', 'set', 'SKIFF_AGENT_POLL_INTERVAL', '1000', '--fleet', fleet], 'poll interval');
  const project = mkdtempSync(join(tmpdir(), `skiff${name.replace(/[^a-z0-9]/g, '')}bench`));
  onCleanup(() => rmSync(project, { recursive: true, force: true }));
  // Registered before the agent's clean-up, so it runs after it: an image in use cannot go.
  onCleanup(async () => {
    const mine = (await imagesTagged([`${project.split('/').pop().toLowerCase()}_`, `${new URL(server.url).host}/`])).map((i) => i.Id);
    log(`removed ${await removeImages(mine, before)} image(s) this run made`);
  });
  const configFile = join(home, 'config.json');
  await skiff(['config', 'generate', '--fleet', fleet, '--output', configFile], 'config generate');
  const agent = await startAgent({ ...agentOptions, args: ['--config', configFile, ...(agentOptions.args ?? [])], configFile });
  onCleanup(async () => {
    await agent.kill();
    if (agent.uuid) await cleanupAgentObjects(agent.uuid);
    rmSync(agent.dataDir, { recursive: true, force: true });
  });
  return { server, token, env, skiff, fleet, project, agent };
}
