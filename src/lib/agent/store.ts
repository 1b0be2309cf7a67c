/**
 * The agent's durable state in SQLite: the target state (as posted), a few values (the previous
 * target, the applied commit, the images it ran) and a log of applied releases. Every write is one
 * transaction, so a `kill -9` leaves either the old or the new row, never half of one. A corrupt
 * database is set aside and a new one started; the engine's container labels are the source of
 * truth for what runs, so nothing running is touched.
 *
 * The target is also kept in target.json beside the database (replaced whole, by rename), so a
 * lost or corrupt database still knows the last target exactly: the containers alone can't tell
 * a release that only removed a service (the others keep their containers from the release before).
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { restrictOpenFile, SECRET_FILE_MODE, tightenSecretFile } from './config.js';

export interface StoredTarget {
  /** The JSON body as posted (balena local-mode shape). */
  json: unknown;
  updatedAt: string;
  /** Where it was read: the database, or target.json when the database had none. */
  from: 'database' | 'file';
}

export interface AgentStore {
  getTarget(): StoredTarget | undefined;
  setTarget(json: unknown): void;
  getValue(key: string): string | undefined;
  setValue(key: string, value: string): void;
  recordApplied(commit: string, status: 'applied' | 'rolled-back' | 'failed', detail: string): void;
  /** True when the database was corrupt and had to be recreated (the broken file is kept aside). */
  readonly recreated: boolean;
  close(): void;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS target (id INTEGER PRIMARY KEY CHECK (id = 1), json TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS applied (id INTEGER PRIMARY KEY AUTOINCREMENT, commit_id TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL, at TEXT NOT NULL);
`;

export async function openStore(dataDir: string): Promise<AgentStore> {
  let Database: typeof BetterSqlite3;
  try {
    Database = (await import('better-sqlite3')).default;
  } catch (err) {
    throw new Error(`the agent needs the better-sqlite3 package, which did not install (${(err as Error).message.split('\n')[0]}); reinstall skiff with build tools (python3, make, g++) present`);
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, 'agent.sqlite');
  // The target's environment often holds secrets: the database, its WAL and target.json are the
  // owner's alone. SQLite gives the WAL and shared-memory files the database file's mode.
  const tighten = (): void => {
    for (const f of [file, `${file}-wal`, `${file}-shm`, path.join(dataDir, 'target.json')]) tightenSecretFile(f);
  };
  let recreated = false;
  let db: BetterSqlite3.Database;
  try {
    db = new Database(file);
    tighten();
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new Error(`quick_check: ${String(check)}`);
    db.exec(SCHEMA);
  } catch {
    // Corrupt: keep the broken file for inspection and start afresh.
    try {
      renameSync(file, `${file}.corrupt-${Date.now()}`);
    } catch {
      // nothing to keep
    }
    db = new Database(file);
    tighten();
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.exec(SCHEMA);
    recreated = true;
  }
  tighten();
  const getKv = db.prepare<[string], { value: string }>('SELECT value FROM kv WHERE key = ?');
  const putKv = db.prepare('INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value');
  const getTarget = db.prepare<[], { json: string; updated_at: string }>('SELECT json, updated_at FROM target WHERE id = 1');
  const mirror = path.join(dataDir, 'target.json');
  const putTarget = db.prepare('INSERT INTO target (id, json, updated_at) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at');
  const addApplied = db.prepare('INSERT INTO applied (commit_id, status, detail, at) VALUES (?, ?, ?, ?)');
  return {
    recreated,
    getTarget() {
      const row = getTarget.get();
      return row ? { json: JSON.parse(row.json) as unknown, updatedAt: row.updated_at, from: 'database' } : readMirror(mirror);
    },
    setTarget(json) {
      const updatedAt = new Date().toISOString();
      putTarget.run(JSON.stringify(json), updatedAt);
      try {
        writeMirror(mirror, { json, updatedAt });
      } catch {
        // A copy that could not be replaced (a full disk) must not outlive its target: without it,
        // a lost database falls back on the containers' labels.
        rmSync(mirror, { force: true });
      }
    },
    getValue(key) {
      return getKv.get(key)?.value;
    },
    setValue(key, value) {
      putKv.run(key, value);
    },
    recordApplied(commit, status, detail) {
      addApplied.run(commit, status, detail, new Date().toISOString());
    },
    close() {
      db.close();
    },
  };
}

/** target.json, when it is there and whole. */
function readMirror(file: string): StoredTarget | undefined {
  try {
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { json?: unknown; updatedAt?: unknown };
    if (doc.json === undefined || typeof doc.updatedAt !== 'string') return undefined;
    return { json: doc.json, updatedAt: doc.updatedAt, from: 'file' };
  } catch {
    return undefined;
  }
}

/** Replaces target.json whole: written beside it, flushed, then renamed over it. */
function writeMirror(file: string, doc: { json: unknown; updatedAt: string }): void {
  const temp = `${file}.tmp`;
  const fd = openSync(temp, 'w', SECRET_FILE_MODE);
  try {
    restrictOpenFile(fd);
    writeSync(fd, JSON.stringify(doc));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, file);
}
