/**
 * Build secrets: what `RUN --mount=type=secret,id=<id>` reads during a BuildKit build, from
 * balena.yml `build-secrets` (files under `.balena/secrets/`, balena's layout) and from `--secret`
 * flags (docker's syntax). Values travel only through the build's session: never in the context
 * tar, an image layer, the image config or the release.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { SkiffError } from '../errors/errors.js';
import type { BuildSettings } from '../project/balena-yml.js';

/** One `--secret` flag: `id=<id>,src=<file>` or `id=<id>,env=<VAR>` (docker build's syntax). */
export interface SecretFlag {
  id: string;
  /** A file whose bytes are the value. */
  src?: string;
  /** An environment variable whose value is the value. */
  env?: string;
}

/** balena's folder for build secret files, relative to the project. */
export const SECRETS_DIR = '.balena/secrets';

/** The largest secret BuildKit takes (its session's limit, moby/buildkit session/secrets): bytes. */
export const MAX_SECRET_BYTES = 500 * 1024;

/** What a secret id may be: BuildKit uses it as a file name under /run/secrets. */
const SECRET_ID = /^[A-Za-z0-9_.-]+$/;

/**
 * Parses `--secret` values as docker does: comma-separated `key=value` with `id`, `src`/`source`,
 * `env` and `type=file|env`; a bare `id=x` reads the environment variable `x` when it is set
 * (docker's rule), else the file `x`.
 *
 * @throws SkiffError('usage') naming the flag for a malformed value or a repeated id
 */
export function parseSecretFlags(values: readonly string[] | undefined, env: NodeJS.ProcessEnv): SecretFlag[] {
  const out: SecretFlag[] = [];
  for (const raw of values ?? []) {
    const fields = new Map<string, string>();
    for (const part of raw.split(',')) {
      const eq = part.indexOf('=');
      if (eq <= 0) throw new SkiffError('usage', `--secret '${raw}': '${part}' is not key=value`, { hint: 'e.g. --secret id=npmrc,src=$HOME/.npmrc' });
      const key = part.slice(0, eq).trim().toLowerCase();
      if (!['id', 'src', 'source', 'env', 'type'].includes(key)) {
        throw new SkiffError('usage', `--secret '${raw}': unknown key '${key}'`, { hint: 'use id=, src= (or source=), env= or type=file|env' });
      }
      fields.set(key === 'source' ? 'src' : key, part.slice(eq + 1).trim());
    }
    const id = fields.get('id');
    if (!id || !SECRET_ID.test(id)) {
      throw new SkiffError('usage', `--secret '${raw}' needs an id of letters, digits, '.', '_' or '-'`, { hint: 'e.g. --secret id=npmrc,src=.npmrc' });
    }
    if (out.some((s) => s.id === id)) throw new SkiffError('usage', `--secret id=${id} is given twice`);
    const type = fields.get('type');
    if (type !== undefined && type !== 'file' && type !== 'env') throw new SkiffError('usage', `--secret '${raw}': type must be file or env`);
    let src = fields.get('src');
    let envName = fields.get('env');
    if (src === '' || envName === '') throw new SkiffError('usage', `--secret '${raw}': ${src === '' ? 'src=' : 'env='} needs a value`, { hint: 'e.g. --secret id=npmrc,src=.npmrc or --secret id=token,env=TOKEN' });
    if (src === undefined && envName === undefined) {
      if (type === 'env' || (type === undefined && env[id] !== undefined)) envName = id;
      else src = id;
    }
    if (src !== undefined && envName !== undefined) throw new SkiffError('usage', `--secret '${raw}': give src= or env=, not both`);
    out.push({ id, ...(src !== undefined ? { src } : {}), ...(envName !== undefined ? { env: envName } : {}) });
  }
  return out;
}

/**
 * Secret ids and values for one service: balena.yml's global secrets, then the service's own,
 * then `given` (the `--secret` flags' values, {@link readSecretFlags}; a later one with the same
 * id wins). Values are read now, so a missing file fails before anything builds.
 *
 * @throws SkiffError('project') for a balena.yml secret whose file is missing (where: balena.yml:line)
 */
export function readServiceSecrets(projectDir: string, settings: BuildSettings, service: string, given: Record<string, Buffer> = {}): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  const settingsFile = path.basename(settings.file ?? 'balena.yml');
  for (const spec of [...settings.secrets.global, ...(settings.secrets.services[service] ?? [])]) {
    const file = path.resolve(projectDir, SECRETS_DIR, spec.source);
    if (!file.startsWith(path.resolve(projectDir, SECRETS_DIR) + path.sep)) {
      throw new SkiffError('project', `build secret source '${spec.source}' is outside ${SECRETS_DIR}`, { where: spec.where ?? settingsFile, hint: `name a file inside ${SECRETS_DIR}/` });
    }
    const id = secretId(spec.dest);
    out[id] = checkSize(id, readSecretFile(file, () => new SkiffError('project', `build secret file ${SECRETS_DIR}/${spec.source} does not exist`, {
      where: spec.where ?? settingsFile,
      hint: `create it, or remove the secret from ${settingsFile}`,
    })), `${SECRETS_DIR}/${spec.source}`, 'project', spec.where ?? settingsFile);
  }
  return { ...out, ...given };
}

/**
 * The `--secret` flags' values by id, read once per build: a pipe (`src=/dev/stdin`) can be read
 * only once, and every service gets the same values.
 *
 * @throws SkiffError('usage') for a `--secret` whose file or variable is missing, or too large
 */
export function readSecretFlags(flags: readonly SecretFlag[], env: NodeJS.ProcessEnv): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (const flag of flags) {
    if (flag.env !== undefined) {
      const value = env[flag.env];
      if (value === undefined) throw new SkiffError('usage', `--secret id=${flag.id}: the environment variable ${flag.env} is not set`);
      out[flag.id] = checkSize(flag.id, Buffer.from(value), `--secret id=${flag.id} (env ${flag.env})`, 'usage');
    } else if (flag.src !== undefined) {
      const file = flag.src;
      out[flag.id] = checkSize(flag.id, readSecretFile(path.resolve(file), () => new SkiffError('usage', `--secret id=${flag.id}: cannot read '${file}'`, {
        hint: 'check the src= path (without src= or env=, the file or variable named like the id is read)',
      })), `--secret id=${flag.id} (${file})`, 'usage');
    }
  }
  return out;
}

/** The files a project's balena.yml secrets read, absolute; a cloud push uploads them for the server's build. */
export function secretFiles(projectDir: string, settings: BuildSettings): string[] {
  const specs = [...settings.secrets.global, ...Object.values(settings.secrets.services).flat()];
  return [...new Set(specs.map((s) => path.resolve(projectDir, SECRETS_DIR, s.source)))];
}

/** Whether any secret is declared for a service (balena.yml or flags). */
export function hasSecrets(settings: BuildSettings, service: string, flags: readonly SecretFlag[]): boolean {
  return flags.length > 0 || settings.secrets.global.length > 0 || (settings.secrets.services[service]?.length ?? 0) > 0;
}

/** A secret BuildKit would refuse with a raw gRPC error, refused here in one line. */
function checkSize(id: string, value: Buffer, what: string, code: 'usage' | 'project', where?: string): Buffer {
  if (value.length <= MAX_SECRET_BYTES) return value;
  throw new SkiffError(code, `${what}: secret '${id}' is ${value.length} bytes; BuildKit takes secrets up to ${MAX_SECRET_BYTES} bytes (500 KiB)`, {
    ...(where ? { where } : {}),
    hint: 'pass a key or token rather than a whole file tree, or mount larger files with RUN --mount=type=bind',
  });
}

/** balena's `dest` is a path under /run/secrets; BuildKit's id is the file name there. */
function secretId(dest: string): string {
  return dest.replace(/^\/run\/secrets\//, '').replace(/^\/+/, '');
}

function readSecretFile(file: string, missing: () => SkiffError): Buffer {
  try {
    // A pipe counts (`src=/dev/stdin`, as with docker build); a folder does not.
    if (statSync(file).isDirectory()) throw missing();
    return readFileSync(file);
  } catch (err) {
    if (err instanceof SkiffError) throw err;
    throw missing();
  }
}
