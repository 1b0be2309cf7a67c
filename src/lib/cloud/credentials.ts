/**
 * Where the CLI keeps who it is logged in as: `~/.skiff/credentials.json` holds the server's URL
 * and the user's token (a session token from `skiff login`, or an API key). CI sets
 * `SKIFF_API_URL` and `SKIFF_API_TOKEN` instead, and those win over the file, each on its own.
 *
 * The token is a secret: the folder is 0700 and the file 0600, written to a temporary file in the
 * same folder, flushed, then renamed over the old one, so a crash leaves the old file or the new one,
 * never half of one, and never a moment where the token is readable by others.
 */
import { chmodSync, closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { SkiffError } from '../errors/errors.js';

/** What the file holds. `url` is the server's base URL without a trailing slash, e.g. `http://127.0.0.1:48080`. */
export interface StoredCredentials {
  url: string;
  token: string;
  /** The user's email, when the login said it (for `whoami` offline messages only; the server is the truth). */
  email?: string;
}

/** The credentials a command uses, and where each half came from (for `whoami` and --debug). */
export interface Credentials {
  url: string;
  token?: string;
  urlFrom: 'env' | 'file' | 'default';
  tokenFrom?: 'env' | 'file';
}

/** `skiff server`'s default port on this machine: what a URL-less `skiff login` talks to. */
export const DEFAULT_SERVER_URL = 'http://127.0.0.1:48080';

/** The folder: `$HOME/.skiff` (HOME, not the password database, so tests and CI can move it). */
export function credentialsDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.HOME && env.HOME !== '' ? env.HOME : os.homedir(), '.skiff');
}

export function credentialsFile(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(credentialsDir(env), 'credentials.json');
}

/**
 * A server URL as people type it (`example.com:48080`, `https://api.example.com/`) in its one
 * stored form: a scheme (http:// when none is given), no trailing slash.
 *
 * @throws SkiffError('usage') for something that is not an http(s) URL
 */
export function normaliseServerUrl(input: string): string {
  const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(input) ? input : `http://${input}`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new SkiffError('usage', `'${input}' is not a server URL`, { hint: 'e.g. skiff login https://skiff.example.com or skiff login 127.0.0.1:48080' });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new SkiffError('usage', `'${input}' is not an http or https URL`, { hint: 'e.g. skiff login https://skiff.example.com' });
  }
  if (url.search || url.hash || url.username || url.password) {
    throw new SkiffError('usage', `the server URL '${input}' must not carry a query, fragment or user name`);
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

/** The file's contents, or undefined when there is none; a damaged file is a usage error naming it. */
export function readStoredCredentials(env: NodeJS.ProcessEnv = process.env): StoredCredentials | undefined {
  const file = credentialsFile(env);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SkiffError('error', `cannot read ${file}: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new SkiffError('notLoggedIn', `${file} is not valid JSON`, { hint: 'run skiff login again' });
  }
  const c = data as Partial<StoredCredentials> | null;
  if (typeof c?.url !== 'string' || typeof c.token !== 'string') {
    throw new SkiffError('notLoggedIn', `${file} has no server URL and token`, { hint: 'run skiff login again' });
  }
  return { url: c.url, token: c.token, ...(typeof c.email === 'string' ? { email: c.email } : {}) };
}

/**
 * The URL and token to use: `SKIFF_API_URL` and `SKIFF_API_TOKEN` first, then the file, then (for
 * the URL only) the local default. Never throws for a missing token: commands that need one call
 * {@link requireToken}.
 */
export function resolveCredentials(env: NodeJS.ProcessEnv = process.env): Credentials {
  const stored = readStoredCredentials(env);
  const envUrl = env.SKIFF_API_URL?.trim();
  const envToken = env.SKIFF_API_TOKEN?.trim();
  const url = envUrl ? normaliseServerUrl(envUrl) : stored?.url ?? DEFAULT_SERVER_URL;
  const urlFrom = envUrl ? 'env' : stored ? 'file' : 'default';
  if (envToken) return { url, token: envToken, urlFrom, tokenFrom: 'env' };
  // A stored token belongs to the server it was made by: not sent to another URL from the environment.
  if (stored && stored.url === url) return { url, token: stored.token, urlFrom, tokenFrom: 'file' };
  return { url, urlFrom };
}

/**
 * The token, or the "not logged in" error (exit 11) that names `skiff login`.
 *
 * @throws SkiffError('notLoggedIn')
 */
export function requireToken(credentials: Credentials): string {
  if (credentials.token) return credentials.token;
  throw new SkiffError('notLoggedIn', `not logged in to ${credentials.url}`, { hint: 'run skiff login (or set SKIFF_API_TOKEN)' });
}

/** Writes the file atomically with mode 0600 in a 0700 folder (tightening modes that were looser). */
export function saveCredentials(credentials: StoredCredentials, env: NodeJS.ProcessEnv = process.env): string {
  const dir = credentialsDir(env);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if ((statSync(dir).mode & 0o077) !== 0) chmodSync(dir, 0o700);
  const file = credentialsFile(env);
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, `${JSON.stringify(credentials, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  // Make the rename itself durable.
  const dirFd = openSync(dir, 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
  return file;
}

/** Removes the file; true when there was one. */
export function removeCredentials(env: NodeJS.ProcessEnv = process.env): boolean {
  const file = credentialsFile(env);
  try {
    rmSync(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * A password from a file: its first line (the newline an editor adds is not part of it).
 *
 * @throws SkiffError('usage') when the file cannot be read or its first line is empty
 */
export function readPasswordFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new SkiffError('usage', `cannot read the password file '${file}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const line = text.split(/\r?\n/)[0] ?? '';
  if (line === '') throw new SkiffError('usage', `the password file '${file}' is empty`);
  return line;
}
