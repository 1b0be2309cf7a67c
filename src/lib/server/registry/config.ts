/**
 * The YAML config the server writes for its distribution child (`docs/configuration.md` of
 * distribution 2.8). The server owns `http` and `auth` (loopback, relative URLs, its own token
 * auth); `--registry-config` may bring storage (S3 and the like) and the other sections.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SkiffError } from '../../errors/errors.js';
import { createOnce } from './signing-key.js';

/** Storage drivers distribution knows: one config names exactly one of them. */
const STORAGE_DRIVERS = ['filesystem', 'inmemory', 's3', 'azure', 'gcs', 'swift', 'oss'];

/** Sections of a user's config the server sets itself: carrying a user's value would be silently overridden, so it is refused. */
const OWNED_SECTIONS = ['http', 'auth'];

type Yaml = Record<string, unknown>;

function isObject(v: unknown): v is Yaml {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `over` merged into `base`, objects key by key, anything else replaced. */
function deepMerge(base: Yaml, over: Yaml): Yaml {
  const out: Yaml = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    out[k] = isObject(b) && isObject(v) ? deepMerge(b, v) : v;
  }
  return out;
}

/**
 * The HTTP secret distribution signs upload state with: kept in the data dir so an upload survives
 * a restart of the child, and so replicas sharing storage can share it too.
 */
function httpSecret(dataDir: string): string {
  const file = path.join(dataDir, 'http-secret');
  if (!existsSync(file)) createOnce(file, `${randomBytes(32).toString('hex')}\n`, 0o600);
  return readFileSync(file, 'utf8').trim();
}

/**
 * Reads a user's distribution config (`--registry-config`). Throws SkiffError naming the file when
 * it is not YAML, not a mapping, or sets a section the server owns.
 */
export async function readUserConfig(file: string): Promise<Yaml> {
  const { parse } = await import('yaml');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new SkiffError('usage', `cannot read the registry config ${file}`, { hint: 'check --registry-config', cause: err });
  }
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new SkiffError('usage', `the registry config is not YAML: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`, { where: file, cause: err });
  }
  if (doc === null || doc === undefined) return {};
  if (!isObject(doc)) throw new SkiffError('usage', 'the registry config is not a YAML mapping', { where: file });
  const owned = OWNED_SECTIONS.filter((s) => s in doc);
  if (owned.length > 0) {
    throw new SkiffError('usage', `the registry config sets ${owned.join(' and ')}, which skiff server sets itself (loopback address, token auth)`, {
      where: file,
      hint: 'keep only storage (and log, redis, notifications…) in it',
    });
  }
  const storage = doc['storage'];
  if (storage !== undefined && !isObject(storage)) throw new SkiffError('usage', 'storage in the registry config is not a mapping', { where: file });
  if (isObject(storage)) {
    const drivers = Object.keys(storage).filter((k) => STORAGE_DRIVERS.includes(k));
    if (drivers.length > 1) throw new SkiffError('usage', `the registry config names ${drivers.length} storage drivers (${drivers.join(', ')}); distribution takes one`, { where: file });
  }
  return doc;
}

/**
 * The full config: ours (filesystem storage in `<dataDir>/storage`, deletes enabled, loopback
 * address, relative URLs, token auth) with the user's merged over it. A user storage driver
 * replaces our filesystem one; their other storage keys (delete, cache, redirect…) merge.
 */
export function registryConfig(options: { dataDir: string; port: number; service: string; certFile: string; user: Yaml }): Yaml {
  const ours: Yaml = {
    version: 0.1,
    log: { level: 'error', formatter: 'text', accesslog: { disabled: true } },
    storage: {
      filesystem: { rootdirectory: path.join(options.dataDir, 'storage') },
      delete: { enabled: true },
      cache: { blobdescriptor: 'inmemory' },
    },
    http: {
      addr: `127.0.0.1:${options.port}`,
      relativeurls: true,
      secret: httpSecret(options.dataDir),
      headers: { 'X-Content-Type-Options': ['nosniff'] },
    },
    auth: {
      token: {
        // Never reached by clients: the proxy rewrites the realm to the server's own public URL.
        realm: `http://127.0.0.1:${options.port}/auth/v1/token`,
        service: options.service,
        issuer: options.service,
        rootcertbundle: options.certFile,
      },
    },
  };
  const userStorage = options.user['storage'];
  const base = isObject(userStorage) && Object.keys(userStorage).some((k) => STORAGE_DRIVERS.includes(k)) ? { ...ours, storage: { ...(ours['storage'] as Yaml), filesystem: undefined } } : ours;
  const merged = deepMerge(base, options.user);
  const storage = merged['storage'];
  if (isObject(storage)) merged['storage'] = Object.fromEntries(Object.entries(storage).filter(([, v]) => v !== undefined));
  return merged;
}

/** Writes the config as YAML to `file` (0600: it may hold S3 credentials). */
export async function writeRegistryConfig(file: string, config: Yaml): Promise<void> {
  const { stringify } = await import('yaml');
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, stringify(config), { mode: 0o600 });
  renameSync(tmp, file);
}
