/**
 * The PostgreSQL test support itself (test/support/postgres.ts): each run gets its own database,
 * which the skiff role owns and the after hook drops, and a restart of the cluster cuts open
 * connections and comes back, which the server's "PostgreSQL restarted" test relies on.
 */
import assert from 'node:assert/strict';
import pg from 'pg';
import { POSTGRES_ADMIN_URL, dropPostgresDatabases, postgresDatabase, restartPostgres, type TestDatabase } from '../support/postgres.js';
import { isRoot, requireOrSkip } from '../support/prerequisites.js';

async function databaseExists(name: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await c.connect();
  try {
    return (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1;
  } finally {
    await c.end();
  }
}

describe('test support: PostgreSQL', function () {
  this.timeout(60_000);
  let a: TestDatabase;
  let b: TestDatabase;

  before(async function () {
    a = await postgresDatabase(this);
    b = await postgresDatabase(this);
  });
  after(() => dropPostgresDatabases());

  it('gives each caller a new, empty database the skiff role owns and can write', async () => {
    assert.notEqual(a.name, b.name);
    assert.match(a.url, /^postgres:\/\/skiff:skiff@127\.0\.0\.1:5432\/skiff_test_\d+_[0-9a-f]{8}$/);
    const c = new pg.Client({ connectionString: a.url });
    await c.connect();
    try {
      const tables = await c.query("SELECT 1 FROM pg_tables WHERE schemaname = 'public'");
      assert.equal(tables.rowCount, 0);
      await c.query('CREATE TABLE t (x integer)');
      const owner = await c.query<{ owner: string }>('SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = current_database()');
      assert.equal(owner.rows[0]?.owner, 'skiff');
    } finally {
      await c.end();
    }
  });

  it('restartPostgres cuts open connections and returns once new ones are accepted', async function () {
    requireOrSkip(this, isRoot(), 'root (pg_ctlcluster restarts the cluster)');
    const held = new pg.Client({ connectionString: a.url });
    held.on('error', () => undefined); // the restart ends this connection: that is the point
    await held.connect();
    await restartPostgres();
    await assert.rejects(held.query('SELECT 1'));
    await held.end().catch(() => undefined);
    const fresh = new pg.Client({ connectionString: a.url });
    await fresh.connect();
    try {
      assert.equal((await fresh.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one, 1);
    } finally {
      await fresh.end();
    }
  });

  it('dropPostgresDatabases drops what this process made, even with a connection open', async () => {
    const open = new pg.Client({ connectionString: b.url });
    open.on('error', () => undefined);
    await open.connect();
    await dropPostgresDatabases();
    await open.end().catch(() => undefined);
    assert.equal(await databaseExists(a.name), false);
    assert.equal(await databaseExists(b.name), false);
  });
});
