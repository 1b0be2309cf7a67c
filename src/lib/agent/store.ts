/**
 * The agent's durable state in SQLite: the target state (as posted), a few values (the previous
 * target, the applied commit, the images it ran) and a log of applied releases. Every write is one
 * transaction, so a `kill -9` leaves either the old or the new row, never half of one. A corrupt
 * database is set aside and a new one started; the engine's container labels are the source of
 * truth for what runs, so nothing running is touched.
 */
import { mkdirSync, renameSync } from 'node:fs';
import path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';

export interface StoredTarget {
  /** The JSON body as posted (balena local-mode shape). */
  json: unknown;
  updatedAt: string;
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
  mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, 'agent.sqlite');
  let recreated = false;
  let db: BetterSqlite3.Database;
  try {
    db = new Database(file);
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
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.exec(SCHEMA);
    recreated = true;
  }
  const getKv = db.prepare<[string], { value: string }>('SELECT value FROM kv WHERE key = ?');
  const putKv = db.prepare('INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value');
  const getTarget = db.prepare<[], { json: string; updated_at: string }>('SELECT json, updated_at FROM target WHERE id = 1');
  const putTarget = db.prepare('INSERT INTO target (id, json, updated_at) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at');
  const addApplied = db.prepare('INSERT INTO applied (commit_id, status, detail, at) VALUES (?, ?, ?, ?)');
  return {
    recreated,
    getTarget() {
      const row = getTarget.get();
      return row ? { json: JSON.parse(row.json) as unknown, updatedAt: row.updated_at } : undefined;
    },
    setTarget(json) {
      putTarget.run(JSON.stringify(json), new Date().toISOString());
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
