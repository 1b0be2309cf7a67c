/**
 * balena.yml / skiff.yml: the project's build-time settings (build variables and build secrets).
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { SkiffError } from '../errors/errors.js';
import type { ProjectWarning } from './types.js';

export interface BuildSettings {
  file?: string;
  /** Build args for every service. */
  globalVariables: Record<string, string>;
  /** Build args per service (override the global ones). */
  serviceVariables: Record<string, Record<string, string>>;
  /** Declared build secrets (source under .balena/secrets, dest under /run/secrets). */
  secrets: { global: SecretSpec[]; services: Record<string, SecretSpec[]> };
  warnings: ProjectWarning[];
}

export interface SecretSpec {
  /** File name under .balena/secrets. */
  source: string;
  /** The secret's id: the file name under /run/secrets in `RUN --mount=type=secret,id=<dest>`. */
  dest: string;
  /** `balena.yml:<line>` of the entry, for messages. */
  where?: string;
}

/** The names the build settings may have, first found wins (a cloud push always uploads them). */
export const BUILD_SETTINGS_FILES = ['skiff.yml', 'skiff.yaml', 'balena.yml', 'balena.yaml', '.balena/balena.yml', '.balena/balena.yaml'];

/** Reads the first of skiff.yml, balena.yml (and their .yaml and .balena/ forms) that exists. */
export async function loadBuildSettings(projectDir: string): Promise<BuildSettings> {
  const settings: BuildSettings = { globalVariables: {}, serviceVariables: {}, secrets: { global: [], services: {} }, warnings: [] };
  const rel = BUILD_SETTINGS_FILES.find((f) => existsSync(path.join(projectDir, f)));
  if (!rel) return settings;
  const file = path.join(projectDir, rel);
  settings.file = file;
  const { parseDocument, LineCounter } = await import('yaml');
  const lc = new LineCounter();
  const doc = parseDocument(readFileSync(file, 'utf8'), { lineCounter: lc, uniqueKeys: true });
  const first = doc.errors[0];
  if (first) {
    const line = lc.linePos(first.pos[0]).line;
    throw new SkiffError('project', `invalid YAML: ${first.message.split('\n')[0]}`, { where: `${rel}:${line}`, hint: 'fix the syntax' });
  }
  const root = doc.toJS() as unknown;
  if (root === null || root === undefined) return settings;
  if (!isRecord(root)) throw new SkiffError('project', 'expected a mapping at the top level', { where: `${rel}:1` });

  const lineOf = (keys: Array<string | number>): string => {
    const node = doc.getIn(keys, true) as { range?: [number, number, number] } | undefined;
    const pos = node?.range?.[0];
    return pos === undefined ? rel : `${rel}:${lc.linePos(pos).line}`;
  };
  const vars = root['build-variables'];
  if (vars !== undefined) {
    if (!isRecord(vars)) throw new SkiffError('project', "'build-variables' must be a mapping with 'global' and/or 'services'", { where: lineOf(['build-variables']) });
    settings.globalVariables = parseVarList(vars.global, ['build-variables', 'global'], lineOf);
    if (vars.services !== undefined) {
      if (!isRecord(vars.services)) throw new SkiffError('project', "'build-variables.services' must map service names to lists", { where: lineOf(['build-variables', 'services']) });
      for (const [svc, list] of Object.entries(vars.services)) {
        settings.serviceVariables[svc] = parseVarList(list, ['build-variables', 'services', svc], lineOf);
      }
    }
  }
  const secrets = root['build-secrets'];
  if (secrets !== undefined) {
    if (!isRecord(secrets)) throw new SkiffError('project', "'build-secrets' must be a mapping with 'global' and/or 'services'", { where: lineOf(['build-secrets']) });
    settings.secrets.global = parseSecrets(secrets.global, ['build-secrets', 'global'], lineOf);
    if (isRecord(secrets.services)) {
      for (const [svc, list] of Object.entries(secrets.services)) {
        settings.secrets.services[svc] = parseSecrets(list, ['build-secrets', 'services', svc], lineOf);
      }
    }
  }
  return settings;
}

function parseVarList(value: unknown, keys: string[], lineOf: (k: Array<string | number>) => string): Record<string, string> {
  if (value === undefined || value === null) return {};
  const out: Record<string, string> = {};
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      const m = typeof item === 'string' ? /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(item) : null;
      if (!m?.[1]) {
        throw new SkiffError('project', `build variable ${JSON.stringify(item)} is not of the form NAME=value`, { where: lineOf([...keys, i]) });
      }
      out[m[1]] = m[2] ?? '';
    });
    return out;
  }
  if (isRecord(value)) {
    for (const [k, v] of Object.entries(value)) out[k] = v === null ? '' : String(v);
    return out;
  }
  throw new SkiffError('project', `'${keys.join('.')}' must be a list of NAME=value`, { where: lineOf(keys) });
}

function parseSecrets(value: unknown, keys: string[], lineOf: (k: Array<string | number>) => string): SecretSpec[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new SkiffError('project', `'${keys.join('.')}' must be a list of {source, dest}`, { where: lineOf(keys) });
  return value.map((item: unknown, i) => {
    if (!isRecord(item) || typeof item.source !== 'string' || typeof item.dest !== 'string' || item.source === '' || item.dest === '') {
      throw new SkiffError('project', 'a build secret needs a source and a dest', { where: lineOf([...keys, i]) });
    }
    if (!/^[A-Za-z0-9_.-]+$/.test(item.dest.replace(/^\/run\/secrets\//, ''))) {
      throw new SkiffError('project', `build secret dest '${item.dest}' must be a file name (letters, digits, '.', '_', '-')`, { where: lineOf([...keys, i, 'dest']) });
    }
    return { source: item.source, dest: item.dest, where: lineOf([...keys, i]) };
  });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Build args for one service: balena.yml global < balena.yml service < compose build.args < --buildArg. */
export function buildArgsFor(service: string, settings: BuildSettings, composeArgs: Record<string, string>, cliArgs: Record<string, string>): Record<string, string> {
  return { ...settings.globalVariables, ...(settings.serviceVariables[service] ?? {}), ...composeArgs, ...cliArgs };
}
