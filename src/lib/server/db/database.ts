/**
 * Opens the server's database: SQLite (a file in the data dir, the default) or PostgreSQL
 * (`--database postgres://…`), behind one Kysely instance with the typed tables of schema.ts, and
 * runs the migrations. Drivers are imported here, on demand, so a start loads only the one it uses.
 */
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { Kysely, type Dialect as KyselyDialect } from 'kysely';
import { Migrator } from 'kysely';
import type { Database } from './schema.js';
import type { Statement } from 'better-sqlite3';
import { migrationProvider } from './migrations.js';
import { batchLookups } from './batch.js';
import { SkiffError } from '../../errors/errors.js';

export type Dialect = 'sqlite' | 'postgres';

/**
 * What the poll needs about the holder of a device key: the device, its fleet and both state
 * versions, plus the device's own part of its target (name, pin), so a changed target needs no
 * second read of the device.
 */
export interface DeviceByKey {
  id: number;
  uuid: string;
  key_hash: string;
  name: string;
  pinned_release_id: number | null;
  fleet_id: number;
  device_version: number;
  fleet_version: number;
}

/** A device-level variable as the target assembly needs it (`service` '' is every service). */
export interface DeviceVariableRow {
  service: string;
  name: string;
  value: string;
}

/**
 * The hot path's queries, prepared once (SQLite statements on a read-only connection, PostgreSQL
 * named statements): every device poll and report runs the first. Kept here, beside the schema, so
 * SQL stays in the database layer.
 */
export interface HotQueries {
  deviceByKeyHash(keyHash: string): Promise<DeviceByKey | undefined>;
  /** The device-level variables of a device (fleet-level ones are read once per fleet version). */
  deviceVariables(deviceId: number): Promise<DeviceVariableRow[]>;
  /**
   * For the devices' own frequent writes (state reports, last-poll batches): on PostgreSQL a pool
   * whose sessions run `synchronous_commit = off`, so a commit does not wait for its WAL flush
   * (each statement or transaction stays atomic; a crash of the database can lose the last
   * fraction of a second of them, which the devices send again with their next report and poll).
   * On SQLite the same instance as `db` (WAL with synchronous=NORMAL already does not fsync a commit).
   */
  deviceWrites: Kysely<Database>;
}

const DEVICE_BY_KEY_SQL = `SELECT d.id, d.uuid, d.key_hash, d.name, d.pinned_release_id, d.fleet_id, d.state_version AS device_version, f.state_version AS fleet_version
  FROM devices d JOIN fleets f ON f.id = d.fleet_id WHERE d.key_hash = `;
// `fleet_id IS NULL` lets the planner use the partial index variables_device (device-level rows).
const DEVICE_VARIABLES_SQL = 'SELECT service, name, value FROM variables WHERE fleet_id IS NULL AND device_id = ';

export interface OpenedDatabase {
  db: Kysely<Database>;
  hot: HotQueries;
  dialect: Dialect;
  /** Where it is, without a password: the SQLite file, or `postgres://host:port/name`. */
  where: string;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** The server's data dir: the SQLite file is `<dataDir>/skiff.db`. */
  dataDir: string;
  /** `postgres://…` / `postgresql://…`, or undefined for SQLite. */
  url?: string;
  /** One line per event the operator should see (e.g. a lost PostgreSQL connection). */
  log: (line: string) => void;
}

/**
 * Opens and migrates the database. Throws a SkiffError('usage') for a URL it does not understand
 * and ('serverUnreachable') when PostgreSQL does not answer.
 */
export async function openDatabase(options: OpenDatabaseOptions): Promise<OpenedDatabase> {
  const opened = options.url === undefined ? await openSqlite(options.dataDir) : await openPostgres(options.url, options.log);
  try {
    const migrator = new Migrator({ db: opened.db, provider: migrationProvider(opened.dialect) });
    const { error, results } = await migrator.migrateToLatest();
    if (error) throw error;
    for (const r of results ?? []) if (r.status === 'Error') throw new Error(`migration ${r.migrationName} failed`);
  } catch (err) {
    await opened.close();
    if (isDatabaseUnavailable(err)) throw new SkiffError('serverUnreachable', `the database at ${opened.where} does not answer`, { cause: err });
    throw err;
  }
  return opened;
}

async function openSqlite(dataDir: string): Promise<OpenedDatabase> {
  const { default: SqliteDatabase } = await import('better-sqlite3');
  const { SqliteDialect } = await import('kysely');
  mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, 'skiff.db');
  const sqlite = new SqliteDatabase(file);
  // WAL lets readers run beside the one writer; busy_timeout waits for a lock instead of failing;
  // synchronous=NORMAL is durable across a process kill in WAL mode (only power loss can lose the last commit).
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('synchronous = NORMAL');
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) as KyselyDialect });
  // The poll reads through a connection of its own: WAL lets it read beside the writer, and it
  // never sees another request's transaction half-done (which sharing Kysely's connection would).
  const reader = new SqliteDatabase(file, { readonly: true });
  reader.pragma('busy_timeout = 5000');
  // Prepared on first use: the tables exist only once the migrations ran.
  let byKey: Statement<[string], DeviceByKey> | undefined;
  let variables: Statement<[number], DeviceVariableRow> | undefined;
  const hot: HotQueries = {
    deviceByKeyHash: (hash) => {
      byKey ??= reader.prepare<[string], DeviceByKey>(`${DEVICE_BY_KEY_SQL}?`);
      return Promise.resolve(byKey.get(hash));
    },
    deviceVariables: (deviceId) => {
      variables ??= reader.prepare<[number], DeviceVariableRow>(`${DEVICE_VARIABLES_SQL}?`);
      return Promise.resolve(variables.all(deviceId));
    },
    deviceWrites: db,
  };
  return { db, hot, dialect: 'sqlite', where: file, close: async () => {
    reader.close();
    await db.destroy();
  } };
}

async function openPostgres(url: string, log: (line: string) => void): Promise<OpenedDatabase> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new SkiffError('usage', `--database '${url}' is not a URL`, { hint: 'use postgres://USER:PASSWORD@HOST:PORT/NAME' });
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new SkiffError('usage', `--database takes a postgres:// URL, not ${parsed.protocol}//`, { hint: 'leave --database out to use SQLite in the data dir' });
  }
  const { default: pg } = await import('pg');
  const { PostgresDialect } = await import('kysely');
  const newPool = (options?: string) => {
    const pool = new pg.Pool({
      connectionString: url,
      max: POOL_SIZE,
      connectionTimeoutMillis: 5000,
      ...(options === undefined ? {} : { options }),
      // int8 (bigint columns: sizes, memory) as numbers: every value we keep fits in 2^53.
      types: { getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === 20 ? Number : pg.types.getTypeParser(oid, format ?? 'text'))) as typeof pg.types.getTypeParser },
    });
    // An idle connection that PostgreSQL drops (a restart) errors on the pool: without a listener
    // that would end the process. The next query opens a new connection.
    pool.on('error', (err) => log(`PostgreSQL connection lost: ${err.message}`));
    return pool;
  };
  const pool = newPool();
  // The devices' writes get sessions of their own (see HotQueries.deviceWrites): a commit per
  // report that waits for its fsync made the fleet-wide reports after a deploy queue for seconds.
  const devicePool = newPool('-c synchronous_commit=off');
  const where = `postgres://${parsed.host}${parsed.pathname}`;
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  const deviceWrites = new Kysely<Database>({ dialect: new PostgresDialect({ pool: devicePool }) });
  // Named statements (each connection parses and plans them once), each run for all the polls
  // that arrived together (see batch.ts).
  const byKeys = batchLookups<string, DeviceByKey>(async (hashes) => {
    const { rows } = await pool.query<DeviceByKey>({ name: 'skiff-devices-by-key', text: `${DEVICE_BY_KEY_SQL}ANY($1::text[])`, values: [hashes] });
    return new Map(rows.map((r) => [r.key_hash, r]));
  });
  const variablesOf = batchLookups<number, DeviceVariableRow[]>(async (ids) => {
    const { rows } = await pool.query<DeviceVariableRow & { device_id: number }>({ name: 'skiff-devices-variables', text: `SELECT device_id, service, name, value FROM variables WHERE fleet_id IS NULL AND device_id = ANY($1::int[])`, values: [ids] });
    const found = new Map<number, DeviceVariableRow[]>();
    for (const { device_id: id, ...v } of rows) found.set(id, [...(found.get(id) ?? []), v]);
    return found;
  });
  const hot: HotQueries = {
    deviceByKeyHash: byKeys,
    deviceVariables: async (deviceId) => (await variablesOf(deviceId)) ?? [],
    deviceWrites,
  };
  return { db, hot, dialect: 'postgres', where, close: async () => {
    await Promise.all([db.destroy(), deviceWrites.destroy()]);
  } };
}

/**
 * Connections per pool (the server has two: requests, and the devices' writes). The machine's
 * cores bound what more connections can do; more only queue inside PostgreSQL instead of here.
 */
const POOL_SIZE = 10;

const UNAVAILABLE_CODES = new Set(['SQLITE_BUSY', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', '57P01', '57P02', '57P03', '08000', '08001', '08003', '08006', '53300']);

/**
 * True when `err` means the database cannot be reached now (PostgreSQL restarting, the network
 * down, too many connections), as opposed to a query the database refused: the former is a 503.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && UNAVAILABLE_CODES.has(code)) return true;
    const message = (e as { message?: unknown }).message;
    if (typeof message === 'string' && /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(message)) return true;
  }
  return false;
}

/** True when `err` is a unique-constraint violation (SQLite or PostgreSQL). */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}
