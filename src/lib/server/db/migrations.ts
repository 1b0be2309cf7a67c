/**
 * Versioned migrations, defined in code so the binary needs no migration files on disk. They run
 * at every start through Kysely's Migrator, which holds a lock while it migrates (on PostgreSQL an
 * advisory lock: two replicas starting at once migrate once). Never edit a published migration;
 * add the next one.
 */
import { sql, type Kysely, type CreateTableBuilder } from 'kysely';
import type { Migration, MigrationProvider } from 'kysely';
import type { Dialect } from './database.js';

// Migrations see the database before and after their own change, never the app's current types.
type AnyDb = Kysely<unknown>;

function idColumn<T extends string>(dialect: Dialect, table: CreateTableBuilder<T, never>): CreateTableBuilder<T, 'id'> {
  return dialect === 'postgres'
    ? table.addColumn('id', 'serial', (c) => c.primaryKey())
    : table.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());
}

function initial(dialect: Dialect): Migration {
  return {
    async up(db: AnyDb) {
      await idColumn(dialect, db.schema.createTable('users'))
        .addColumn('email', 'text', (c) => c.notNull().unique())
        .addColumn('password_hash', 'text', (c) => c.notNull())
        .addColumn('is_admin', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await idColumn(dialect, db.schema.createTable('sessions'))
        .addColumn('user_id', 'integer', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('token_hash', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .execute();
      await idColumn(dialect, db.schema.createTable('api_keys'))
        .addColumn('user_id', 'integer', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('description', 'text')
        .addColumn('key_hash', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text')
        .addColumn('last_used_at', 'text')
        .addColumn('revoked_at', 'text')
        .execute();
      await idColumn(dialect, db.schema.createTable('fleets'))
        .addColumn('uuid', 'text', (c) => c.notNull().unique())
        .addColumn('owner_id', 'integer', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('device_type', 'text', (c) => c.notNull())
        .addColumn('pinned_release_id', 'integer')
        .addColumn('state_version', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('fleets_owner_name', ['owner_id', 'name'])
        .execute();
      await idColumn(dialect, db.schema.createTable('provisioning_keys'))
        .addColumn('fleet_id', 'integer', (c) => c.notNull().references('fleets.id').onDelete('cascade'))
        .addColumn('name', 'text')
        .addColumn('key_hash', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text')
        .addColumn('revoked_at', 'text')
        .execute();
      await idColumn(dialect, db.schema.createTable('releases'))
        .addColumn('fleet_id', 'integer', (c) => c.notNull().references('fleets.id').onDelete('cascade'))
        .addColumn('commit', 'text', (c) => c.notNull().unique())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('is_final', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('is_invalidated', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('semver', 'text')
        .addColumn('notes', 'text')
        .addColumn('composition', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('releases_fleet').on('releases').columns(['fleet_id', 'id']).execute();
      await idColumn(dialect, db.schema.createTable('release_images'))
        .addColumn('release_id', 'integer', (c) => c.notNull().references('releases.id').onDelete('cascade'))
        .addColumn('service', 'text', (c) => c.notNull())
        .addColumn('repository', 'text', (c) => c.notNull())
        .addColumn('digest', 'text')
        .addColumn('size', 'bigint')
        .addUniqueConstraint('release_images_service', ['release_id', 'service'])
        .execute();
      await idColumn(dialect, db.schema.createTable('devices'))
        .addColumn('uuid', 'text', (c) => c.notNull().unique())
        .addColumn('key_hash', 'text', (c) => c.notNull().unique())
        .addColumn('fleet_id', 'integer', (c) => c.notNull().references('fleets.id').onDelete('cascade'))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('device_type', 'text', (c) => c.notNull())
        .addColumn('pinned_release_id', 'integer', (c) => c.references('releases.id').onDelete('set null'))
        .addColumn('state_version', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('last_seen', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('status', 'text')
        .addColumn('os_version', 'text')
        .addColumn('os_variant', 'text')
        .addColumn('supervisor_version', 'text')
        .addColumn('ip_address', 'text')
        .addColumn('mac_address', 'text')
        .addColumn('api_port', 'integer')
        .addColumn('provisioning_state', 'text')
        .addColumn('running_release', 'text')
        .addColumn('update_status', 'text')
        .addColumn('update_error', 'text')
        .addColumn('rolled_back_from', 'text')
        .addColumn('services', 'text', (c) => c.notNull().defaultTo('[]'))
        .addColumn('memory_usage', 'bigint')
        .addColumn('memory_total', 'bigint')
        .addColumn('storage_usage', 'bigint')
        .addColumn('storage_total', 'bigint')
        .addColumn('cpu_usage', 'integer')
        .addColumn('cpu_temp', 'integer')
        .execute();
      await db.schema.createIndex('devices_fleet').on('devices').column('fleet_id').execute();
      await idColumn(dialect, db.schema.createTable('variables'))
        .addColumn('fleet_id', 'integer', (c) => c.references('fleets.id').onDelete('cascade'))
        .addColumn('device_id', 'integer', (c) => c.references('devices.id').onDelete('cascade'))
        .addColumn('service', 'text', (c) => c.notNull().defaultTo(''))
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('value', 'text', (c) => c.notNull())
        .execute();
      // One value per scope and name: partial indexes, since a NULL never collides in a unique index.
      await db.schema.createIndex('variables_fleet').on('variables').columns(['fleet_id', 'service', 'name']).unique().where(sql.ref('device_id'), 'is', null).execute();
      await db.schema.createIndex('variables_device').on('variables').columns(['device_id', 'service', 'name']).unique().where(sql.ref('fleet_id'), 'is', null).execute();
      await idColumn(dialect, db.schema.createTable('tags'))
        .addColumn('fleet_id', 'integer', (c) => c.references('fleets.id').onDelete('cascade'))
        .addColumn('device_id', 'integer', (c) => c.references('devices.id').onDelete('cascade'))
        .addColumn('release_id', 'integer', (c) => c.references('releases.id').onDelete('cascade'))
        .addColumn('key', 'text', (c) => c.notNull())
        .addColumn('value', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('tags_fleet').on('tags').columns(['fleet_id', 'key']).unique().where(sql.ref('fleet_id'), 'is not', null).execute();
      await db.schema.createIndex('tags_device').on('tags').columns(['device_id', 'key']).unique().where(sql.ref('device_id'), 'is not', null).execute();
      await db.schema.createIndex('tags_release').on('tags').columns(['release_id', 'key']).unique().where(sql.ref('release_id'), 'is not', null).execute();
    },
  };
}

/** Issue 10: cloud builds and their output, device logs, releases stamped with a git commit. */
function builds(dialect: Dialect): Migration {
  return {
    async up(db: AnyDb) {
      await db.schema.alterTable('releases').addColumn('git_commit', 'text').execute();
      await db.schema.alterTable('releases').addColumn('build_uuid', 'text').execute();
      await idColumn(dialect, db.schema.createTable('builds'))
        .addColumn('uuid', 'text', (c) => c.notNull().unique())
        .addColumn('fleet_id', 'integer', (c) => c.notNull().references('fleets.id').onDelete('cascade'))
        .addColumn('user_id', 'integer', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('source', 'text', (c) => c.notNull())
        .addColumn('git_commit', 'text')
        .addColumn('git_ref', 'text')
        .addColumn('dirty', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('options', 'text', (c) => c.notNull())
        .addColumn('context_bytes', 'bigint', (c) => c.notNull())
        .addColumn('replica', 'text', (c) => c.notNull())
        .addColumn('cancel_requested', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('release_id', 'integer', (c) => c.references('releases.id').onDelete('set null'))
        .addColumn('error', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('started_at', 'text')
        .addColumn('finished_at', 'text')
        .execute();
      await db.schema.createIndex('builds_fleet').on('builds').columns(['fleet_id', 'id']).execute();
      await db.schema.createIndex('builds_status').on('builds').columns(['status', 'id']).execute();
      await idColumn(dialect, db.schema.createTable('build_events'))
        .addColumn('build_id', 'integer', (c) => c.notNull().references('builds.id').onDelete('cascade'))
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('event', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('build_events_seq', ['build_id', 'seq'])
        .execute();
      // Log ids grow for the server's whole life: 64-bit on PostgreSQL (SQLite's integer is already).
      await (dialect === 'postgres'
        ? db.schema.createTable('device_logs').addColumn('id', 'bigserial', (c) => c.primaryKey())
        : db.schema.createTable('device_logs').addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement()))
        .addColumn('device_id', 'integer', (c) => c.notNull().references('devices.id').onDelete('cascade'))
        .addColumn('timestamp', 'bigint', (c) => c.notNull())
        .addColumn('service', 'text')
        .addColumn('is_system', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('is_stderr', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('message', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('device_logs_device').on('device_logs').columns(['device_id', 'id']).execute();
    },
  };
}

/** Issue 11: tunnel sessions, and public URLs per fleet and device. */
function tunnels(dialect: Dialect): Migration {
  return {
    async up(db: AnyDb) {
      await db.schema.alterTable('fleets').addColumn('public_url', 'integer', (c) => c.notNull().defaultTo(0)).execute();
      await db.schema.alterTable('devices').addColumn('public_url', 'integer').execute();
      await idColumn(dialect, db.schema.createTable('device_sessions'))
        .addColumn('uuid', 'text', (c) => c.notNull().unique())
        .addColumn('device_id', 'integer', (c) => c.notNull().references('devices.id').onDelete('cascade'))
        .addColumn('user_id', 'integer', (c) => c.references('users.id').onDelete('set null'))
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('actor', 'text', (c) => c.notNull())
        .addColumn('target', 'text', (c) => c.notNull())
        .addColumn('client_address', 'text', (c) => c.notNull())
        .addColumn('replica', 'text', (c) => c.notNull())
        .addColumn('started_at', 'text', (c) => c.notNull())
        .addColumn('ended_at', 'text')
        .addColumn('bytes_in', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('bytes_out', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('outcome', 'text')
        .execute();
      await db.schema.createIndex('device_sessions_device').on('device_sessions').columns(['device_id', 'id']).execute();
    },
  };
}

/** Issue 12: delta jobs, and how a device's last update arrived. */
function deltas(dialect: Dialect): Migration {
  return {
    async up(db: AnyDb) {
      await db.schema.alterTable('devices').addColumn('update_download', 'text').execute();
      await idColumn(dialect, db.schema.createTable('deltas'))
        .addColumn('uuid', 'text', (c) => c.notNull().unique())
        .addColumn('fleet_id', 'integer', (c) => c.notNull().references('fleets.id').onDelete('cascade'))
        .addColumn('src_repository', 'text', (c) => c.notNull())
        .addColumn('src_digest', 'text', (c) => c.notNull())
        .addColumn('dest_repository', 'text', (c) => c.notNull())
        .addColumn('dest_digest', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('replica', 'text')
        .addColumn('replica_url', 'text')
        .addColumn('descriptor', 'text')
        .addColumn('download_bytes', 'bigint')
        .addColumn('pull_bytes', 'bigint')
        .addColumn('reason', 'text')
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addColumn('used_at', 'text')
        .addUniqueConstraint('deltas_pair', ['src_repository', 'src_digest', 'dest_repository', 'dest_digest'])
        .execute();
      await db.schema.createIndex('deltas_status').on('deltas').columns(['status', 'id']).execute();
    },
  };
}

/** The migrations for `dialect`, by name in the order they run. */
export function migrationProvider(dialect: Dialect): MigrationProvider {
  return {
    getMigrations: () => Promise.resolve({
      '0001_initial': initial(dialect),
      '0002_builds_logs': builds(dialect),
      '0003_tunnels': tunnels(dialect),
      '0004_deltas': deltas(dialect),
    }),
  };
}
