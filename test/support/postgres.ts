/**
 * PostgreSQL for tests: a fresh database per test run, made with the `skiff` role that
 * scripts/setup-host.sh creates (password `skiff`, may create databases), and the cluster's
 * restart for the "PostgreSQL restarted while the server runs" fault test.
 *
 * The server to use is `SKIFF_TEST_POSTGRES` (a URL naming any database the role can connect to,
 * default `postgres://skiff:skiff@127.0.0.1:5432/postgres`). Without a server a test skips outside
 * CI and fails in CI (`requireOrSkip`): the suite runs against both dialects there.
 *
 *   let db: TestDatabase;
 *   before(async function () { db = await postgresDatabase(this); });
 *   after(() => dropPostgresDatabases());
 *   // spawn `skiff server --database ${db.url}`
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import process from 'node:process';
import { promisify } from 'node:util';
import pg from 'pg';
import { requireOrSkip } from './prerequisites.js';
import { waitFor } from './wait.js';

const run = promisify(execFile);

/** The server the tests use, as a URL with the `skiff` role's credentials. */
export const POSTGRES_ADMIN_URL = process.env.SKIFF_TEST_POSTGRES ?? 'postgres://skiff:skiff@127.0.0.1:5432/postgres';

/** Databases this process made: `skiff_test_<pid>_<hex>`, so a later run can drop a dead run's leftovers. */
const PREFIX = 'skiff_test_';
const made = new Set<string>();

export interface TestDatabase {
  /** `postgres://skiff:skiff@127.0.0.1:5432/skiff_test_…`: give it to `skiff server --database`. */
  url: string;
  name: string;
}

async function withAdmin<T>(use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: POSTGRES_ADMIN_URL, connectionTimeoutMillis: 3000 });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

/** True when the server answers and the role may log in (no throw). */
export async function postgresAvailable(): Promise<boolean> {
  try {
    await withAdmin((c) => c.query('SELECT 1'));
    return true;
  } catch {
    return false;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Identifiers we make are `[a-z0-9_]`, so quoting them needs no escaping beyond the quotes. */
const ident = (name: string): string => `"${name}"`;

/**
 * A new, empty database owned by the `skiff` role, uniquely named for this process, recorded for
 * {@link dropPostgresDatabases}. Databases left by test processes that have died are dropped first.
 * Skips (outside CI) or fails (in CI) when PostgreSQL does not answer.
 */
export async function postgresDatabase(ctx: Mocha.Context): Promise<TestDatabase> {
  requireOrSkip(ctx, await postgresAvailable(), `PostgreSQL at ${redact(POSTGRES_ADMIN_URL)} with role skiff (run scripts/setup-host.sh)`);
  const name = `${PREFIX}${process.pid}_${randomBytes(4).toString('hex')}`;
  await withAdmin(async (c) => {
    const { rows } = await c.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1', [`${PREFIX}%`]);
    for (const { datname } of rows) {
      const pid = Number(/^skiff_test_(\d+)_/.exec(datname)?.[1]);
      if (pid > 0 && !isAlive(pid)) await c.query(`DROP DATABASE IF EXISTS ${ident(datname)} WITH (FORCE)`);
    }
    await c.query(`CREATE DATABASE ${ident(name)}`);
  });
  made.add(name);
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${name}`;
  return { url: url.toString(), name };
}

/** {@link postgresDatabase}'s URL alone. */
export async function postgresUrl(ctx: Mocha.Context): Promise<string> {
  return (await postgresDatabase(ctx)).url;
}

/**
 * Drops every database this process made (for an `after` hook), ending connections a server under
 * test may still hold (`WITH (FORCE)`, PostgreSQL 13+). Does nothing when none was made.
 */
export async function dropPostgresDatabases(): Promise<void> {
  if (made.size === 0) return;
  await withAdmin(async (c) => {
    for (const name of [...made]) {
      // FORCE may end only our own role's connections: a backend of another role in the database
      // (a background worker finishing there) fails the drop until it leaves, so wait for that.
      await waitFor(async () => {
        const others = await c.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND usename IS DISTINCT FROM current_user', [name]);
        return Number(others.rows[0]?.n ?? 0) === 0;
      }, `other roles' backends to leave database ${name}`);
      await c.query(`DROP DATABASE IF EXISTS ${ident(name)} WITH (FORCE)`);
      made.delete(name);
    }
  });
}

/** The Debian cluster serving the tests' port: `{ version, name }` from `pg_lsclusters`. */
async function cluster(): Promise<{ version: string; name: string }> {
  const port = new URL(POSTGRES_ADMIN_URL).port || '5432';
  const { stdout } = await run('pg_lsclusters', ['--no-header']);
  for (const line of stdout.split('\n')) {
    const [version, name, clusterPort] = line.trim().split(/\s+/);
    if (version && name && clusterPort === port) return { version, name };
  }
  throw new Error(`no PostgreSQL cluster on port ${port} in pg_lsclusters:\n${stdout}`);
}

/**
 * Stops the cluster (`pg_ctlcluster … stop -m fast`: open connections are cut, as in a crash or
 * a failover). Needs root. Other test processes sharing the cluster see it go too.
 */
export async function stopPostgres(): Promise<void> {
  const c = await cluster();
  await run('pg_ctlcluster', [c.version, c.name, 'stop', '-m', 'fast']);
}

/** Starts the cluster again and waits until the `skiff` role can connect. */
export async function startPostgres(): Promise<void> {
  const c = await cluster();
  await run('pg_ctlcluster', [c.version, c.name, 'start']);
  await waitFor(() => postgresAvailable(), 'PostgreSQL to accept connections again', 30_000, 100);
}

/** `pg_ctlcluster … restart -m fast`, then waits until the `skiff` role can connect. */
export async function restartPostgres(): Promise<void> {
  const c = await cluster();
  await run('pg_ctlcluster', [c.version, c.name, 'restart', '-m', 'fast']);
  await waitFor(() => postgresAvailable(), 'PostgreSQL to accept connections again', 30_000, 100);
}

/** A URL without its password, for messages. */
export function redact(url: string): string {
  const u = new URL(url);
  if (u.password) u.password = '***';
  return u.toString();
}
