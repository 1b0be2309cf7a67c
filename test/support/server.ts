/**
 * The real `skiff server` (bin/run.js) as a subprocess for e2e tests: its own data dir, a free
 * loopback port, the first admin made from a password file, and `/ping` answering before the
 * promise resolves. Also: a fresh PostgreSQL database per run (from Debian's cluster), a private
 * PostgreSQL cluster a test may restart, users with session tokens, and a tiny image pushed
 * straight through the registry API (no engine needed).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { BIN, ROOT } from './cli.js';
import { scratchDir } from './tmp.js';
import { waitFor } from './wait.js';

export const ADMIN = { email: 'admin@skiff.test', password: 'admin-password-1' };

export interface StartedServer {
  /** e.g. `http://127.0.0.1:40123` */
  url: string;
  port: number;
  dataDir: string;
  child: ChildProcess;
  /** Sends `signal` and resolves with the exit code once the process is gone. */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
}

export interface StartServerOptions {
  /** `postgres://…`; SQLite in the data dir when left out. */
  database?: string;
  env?: NodeJS.ProcessEnv;
  args?: string[];
  /** Reuse a data dir (a restart); a new scratch folder by default. */
  dataDir?: string;
  /** Reuse a port (a restart); a free one by default. */
  port?: number;
  /** Wait for /ping (default true). */
  waitReady?: boolean;
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** Pass --admin-email/--admin-password-file for {@link ADMIN} (default true). */
  admin?: boolean;
  /** PEM files: the server speaks HTTPS (the helper trusts any certificate for /ping). */
  tls?: { cert: string; key: string };
}

/** A TCP port nothing listens on now (bound and released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

const running = new Set<ChildProcess>();
/**
 * Registry children of servers that exited (pid → data dir): a server SIGKILLed and never started
 * again in its data dir leaves its child running. The server's own clean-up of a dead server's
 * child (registry/child.ts) runs at its next start there; for the others, the children go when
 * the tests end.
 */
const leftRegistries = new Map<number, string>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
  for (const pid of leftRegistries.keys()) {
    try {
      // pids are reused: only a registry is killed
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('docker-registry')) process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
});

/** Notes the registry child a server (pid `serverPid`) in `dataDir` had, once the server is gone. */
function noteLeftRegistry(dataDir: string, serverPid: number | undefined): void {
  try {
    const pid = Number(readFileSync(path.join(dataDir, 'registry', 'run', `registry-${serverPid ?? 0}.child`), 'utf8').trim());
    if (pid > 0) leftRegistries.set(pid, dataDir);
  } catch {
    // stopped cleanly (no pid file), or it never started one
  }
}

/** Starts `skiff server` with the first admin {@link ADMIN}; resolves once `/ping` answers 200. */
export async function startServer(options: StartServerOptions = {}): Promise<StartedServer> {
  const dataDir = options.dataDir ?? scratchDir('skiff-server-');
  const passwordFile = path.join(dataDir, '..', `${path.basename(dataDir)}.admin-password`);
  writeFileSync(passwordFile, `${ADMIN.password}\n`);
  chmodSync(passwordFile, 0o600);
  const port = options.port ?? await freePort();
  const args = [BIN, 'server', '--data-dir', dataDir, '--port', String(port), '--host', options.host ?? '127.0.0.1',
    ...(options.admin === false ? [] : ['--admin-email', ADMIN.email, '--admin-password-file', passwordFile]),
    ...(options.tls ? ['--cert', options.tls.cert, '--key', options.tls.key] : []),
    ...(options.database ? ['--database', options.database] : []), ...(options.args ?? [])];
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => {
    running.delete(child);
    noteLeftRegistry(dataDir, child.pid);
    resolve(code);
  }));
  const url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const server: StartedServer = {
    url, port, dataDir, child,
    kill: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    output: () => out,
  };
  if (options.waitReady !== false) {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`skiff server exited with ${child.exitCode}:\n${out}`);
      return (await pingStatus(url).catch(() => undefined)) === 200;
    }, `skiff server on ${url} to answer /ping`, 30_000, 50).catch((err: Error) => {
      child.kill('SIGKILL');
      throw new Error(`${err.message}\n${out}`);
    });
  }
  return server;
}

/** The status of `GET <url>/ping`; over HTTPS any certificate is accepted (tests make their own). */
export function pingStatus(url: string): Promise<number | undefined> {
  if (!url.startsWith('https:')) return fetch(`${url}/ping`).then((r) => r.status);
  return new Promise((resolve, reject) => {
    const req = https.get(`${url}/ping`, { rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', reject);
  });
}

/** A JSON request; answers the status, headers and parsed body (undefined when empty). */
export async function api(base: string, method: string, route: string, options: { token?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: Headers; body: unknown }> {
  const res = await fetch(`${base}${route}`, {
    method,
    headers: { ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}), ...(options.token ? { authorization: `Bearer ${options.token}` } : {}), ...options.headers },
    ...(options.body !== undefined ? { body: typeof options.body === 'string' ? options.body : JSON.stringify(options.body) } : {}),
  });
  const text = await res.text();
  let body: unknown;
  try {
    body = text === '' ? undefined : JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, headers: res.headers, body };
}

/** Logs in; throws unless 200. */
export async function login(base: string, email: string, password: string): Promise<string> {
  const res = await api(base, 'POST', '/auth/login', { body: { email, password } });
  if (res.status !== 200) throw new Error(`login ${email}: ${res.status} ${JSON.stringify(res.body)}`);
  return (res.body as { token: string }).token;
}

/** Makes a user through the admin (`POST /users`) and answers its session token. */
export async function createUser(base: string, email = `u${randomBytes(4).toString('hex')}@skiff.test`, password = 'user-password-1'): Promise<{ email: string; password: string; token: string }> {
  const admin = await login(base, ADMIN.email, ADMIN.password);
  const res = await api(base, 'POST', '/users', { token: admin, body: { email, password } });
  if (res.status !== 201) throw new Error(`create user ${email}: ${res.status} ${JSON.stringify(res.body)}`);
  return { email, password, token: await login(base, email, password) };
}

function psql(sql: string, port = 5432): string {
  return execFileSync('su', ['postgres', '-c', `psql -p ${port} -v ON_ERROR_STOP=1 -qAt -c "${sql.replace(/"/g, '\\"')}"`], { encoding: 'utf8' });
}

/** Debian's cluster running (started when down; idempotent). */
export function ensurePostgres(): void {
  const status = execFileSync('pg_lsclusters', ['-h'], { encoding: 'utf8' });
  if (!/\b15\s+main\s+5432\s+online/.test(status)) execFileSync('pg_ctlcluster', ['15', 'main', 'start']);
}

/** A new role and database on Debian's cluster for this run; answers its URL. */
export function freshPostgresDatabase(): string {
  ensurePostgres();
  const name = `skiff_${randomBytes(6).toString('hex')}`;
  const password = randomBytes(12).toString('hex');
  psql(`CREATE ROLE ${name} LOGIN PASSWORD '${password}'`);
  psql(`CREATE DATABASE ${name} OWNER ${name}`);
  return `postgres://${name}:${password}@127.0.0.1:5432/${name}`;
}

/** Drops a database and role made by {@link freshPostgresDatabase} (once no server uses it). */
export function dropPostgresDatabase(url: string): void {
  const name = new URL(url).pathname.slice(1);
  if (!/^skiff_[0-9a-f]{12}$/.test(name)) throw new Error(`not a test database: ${name}`);
  psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  psql(`DROP ROLE IF EXISTS ${name}`);
}

/** A PostgreSQL cluster of our own (initdb in a scratch folder, a free port) that a test may stop and start. */
export async function privatePostgres(): Promise<{ url: string; stop(): void; start(): void; remove(): void }> {
  const dir = scratchDir('skiff-pg-');
  chmodSync(dir, 0o777);
  const data = path.join(dir, 'data');
  const port = await freePort();
  const bin = '/usr/lib/postgresql/15/bin';
  const asPostgres = (cmd: string) => execFileSync('su', ['postgres', '-c', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  asPostgres(`${bin}/initdb -D ${data} -A trust -U postgres >/dev/null`);
  const start = () => asPostgres(`${bin}/pg_ctl -D ${data} -o "-p ${port} -k ${dir} -c listen_addresses=127.0.0.1" -l ${dir}/log -w start >/dev/null`);
  const stop = () => asPostgres(`${bin}/pg_ctl -D ${data} -m fast -w stop >/dev/null`);
  start();
  asPostgres(`psql -h ${dir} -p ${port} -qAt -c "CREATE DATABASE skiff"`);
  return { url: `postgres://postgres@127.0.0.1:${port}/skiff`, start, stop, remove: () => { try { stop(); } catch { /* already stopped */ } } };
}

/**
 * Pushes a one-layer image (random bytes, so each call makes a new digest) to `repository` through
 * the server's `/v2/` with a token for `token`'s user; answers the manifest digest.
 */
export async function pushTinyImage(base: string, token: string, repository: string): Promise<string> {
  const scope = `repository:${repository}:pull,push`;
  const tokenRes = await fetch(`${base}/auth/v1/token?service=${encodeURIComponent(new URL(base).host)}&scope=${encodeURIComponent(scope)}`, { headers: { authorization: `Basic ${Buffer.from(`_token:${token}`).toString('base64')}` } });
  if (tokenRes.status !== 200) throw new Error(`registry token: ${tokenRes.status} ${await tokenRes.text()}`);
  const registryToken = ((await tokenRes.json()) as { token: string }).token;
  const auth = { authorization: `Bearer ${registryToken}` };
  const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const upload = async (blob: Buffer): Promise<string> => {
    const digest = sha(blob);
    const start = await fetch(`${base}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers: auth });
    if (start.status !== 202) throw new Error(`blob upload start: ${start.status} ${await start.text()}`);
    const location = start.headers.get('location') ?? '';
    const put = new URL(location, base);
    put.searchParams.set('digest', digest);
    const done = await fetch(put, { method: 'PUT', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: new Uint8Array(blob) });
    if (done.status !== 201) throw new Error(`blob upload: ${done.status} ${await done.text()}`);
    return digest;
  };
  const layer = randomBytes(64);
  const layerDigest = await upload(layer);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [layerDigest] } }));
  const configDigest = await upload(config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
    config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: configDigest },
    layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: layer.length, digest: layerDigest }],
  }));
  const res = await fetch(`${base}/v2/${repository}/manifests/latest`, { method: 'PUT', headers: { ...auth, 'content-type': 'application/vnd.docker.distribution.manifest.v2+json' }, body: new Uint8Array(manifest) });
  if (res.status !== 201) throw new Error(`manifest push: ${res.status} ${await res.text()}`);
  return sha(manifest);
}
