/**
 * docker-compose.yml → ServiceSpec[]: the compose 2.x subset that balena devices run, validated
 * up front so a release never fails on the device. Every error and warning names `file:line`.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
// eslint-disable-next-line no-restricted-imports -- compose.ts is itself loaded lazily
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, visit } from 'yaml';
import type { Document, Pair, YAMLMap } from 'yaml';
import { SkiffError } from '../errors/errors.js';
import { closest as closestName } from '../text/suggest.js';
import type { BuildSpec, ProjectWarning, ServiceSpec } from './types.js';

/** Did-you-mean for compose keys: only near misses (two edits at most). */
const closest = (word: string, candidates: readonly string[]) => closestName(word, candidates, 2);

/** What {@link parseCompose} returns; the caller adds the project name and folder. */
export interface ComposeParseResult {
  services: ServiceSpec[];
  /** Top-level named volumes, each with its (possibly empty) driver settings. */
  volumes: Record<string, Record<string, unknown>>;
  /** Top-level networks, each with its (possibly empty) settings. */
  networks: Record<string, Record<string, unknown>>;
  warnings: ProjectWarning[];
}

type Path = ReadonlyArray<string | number>;

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const RESTART_RE = /^(no|always|unless-stopped|on-failure(:\d+)?)$/;
const SIZE_RE = /^\d+(\.\d+)?\s*([bkmgt]b?)?$/i;
const DURATION_RE = /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/;
// Docker's remote-context forms; `name.git#ref` is how compose names a branch of a repository.
const GIT_RE = /^(https?:\/\/|git@|git:\/\/|ssh:\/\/|github\.com\/)|\.git#/i;
const TOP_LEVEL_KEYS = ['version', 'services', 'volumes', 'networks'];

// Compose keys a device cannot honour, each with what to do instead. Erroring beats silently
// shipping a release that behaves differently on the device than under docker compose.
const DROP = 'remove it; the device supervisor does not apply it';
const UNSUPPORTED_SERVICE_KEYS: Record<string, string> = {
  deploy: 'use restart, mem_limit, cpus and the other service keys instead',
  links: 'services reach each other by service name on their shared network; remove it',
  external_links: 'services reach each other by service name on their shared network; remove it',
  secrets: 'use build secrets in balena.yml, or environment variables',
  configs: 'copy the file into the image, or use environment variables',
  container_name: 'the device supervisor names containers itself; remove it',
  credential_spec: 'remove it; it applies to Windows containers only',
  isolation: 'remove it; it applies to Windows containers only',
  env_file: 'the device never sees the file; list the variables under environment instead',
  volumes_from: 'share a named volume instead',
  volume_driver: 'set the driver on the top-level volume instead',
  scale: 'a device runs one container per service; define another service instead',
  extends: 'copy the settings into the service, or share them with a YAML anchor (x-common: &common, then <<: *common)',
  profiles: 'a device runs every service; remove the services it should not run',
  platform: 'the device type decides the platform; remove it',
  pull_policy: 'the device always uses the images in the release; remove it',
  gpus: 'use devices and the io.balena.features.* labels instead',
  blkio_config: DROP,
  cpu_count: DROP,
  cpu_percent: DROP,
  cpu_period: DROP,
  cpu_rt_period: DROP,
  cpu_rt_runtime: DROP,
  memswap_limit: DROP,
  mem_swappiness: DROP,
  storage_opt: DROP,
  cgroup: DROP,
  uts: DROP,
  attach: DROP,
  annotations: DROP,
  label_file: 'the device never sees the file; list the labels under labels instead',
  develop: DROP,
  post_start: DROP,
  pre_stop: DROP,
  use_api_socket: 'use the io.balena.features.balena-socket label instead',
};

const UNSUPPORTED_BUILD_KEYS: Record<string, string> = {
  network: 'builds use the default network; remove it',
  isolation: 'remove it; it applies to Windows containers only',
  dockerfile_inline: 'put the Dockerfile in the build context',
  additional_contexts: 'move everything the build needs into its context folder',
  secrets: 'declare build secrets in balena.yml instead',
  ssh: 'remove it; devices are built without SSH agent forwarding',
  platforms: 'the device type decides the platform; remove it',
  cache_to: 'remove it',
  no_cache: 'pass --nocache to the command instead',
  pull: 'pass --pull to the command instead',
  privileged: 'remove it',
  tags: 'remove it; skiff names the images itself',
  ulimits: 'remove it',
  entitlements: 'remove it',
};

/** Build keys balena accepts that skiff's builder has no use for yet: kept out of BuildSpec, with a warning. */
const IGNORED_BUILD_KEYS = ['extra_hosts', 'shm_size'];
const BUILD_KEYS = ['context', 'dockerfile', 'args', 'target', 'labels', 'cache_from', ...IGNORED_BUILD_KEYS];

/**
 * Parses and validates a compose file for devices.
 *
 * @param text - the compose file's content
 * @param file - its absolute path; errors name it relative to `projectDir`, e.g. `docker-compose.yml:12`
 * @param projectDir - the absolute project folder; build contexts are relative to it (and may lie outside it)
 * @returns services with normalised `config` (environment, labels and build args as string maps;
 *   ports and volumes as strings; depends_on as a list), the top-level volumes and networks, and
 *   warnings (unknown keys, ignored settings, unsubstituted `${VAR}`s)
 * @throws SkiffError('project') for invalid YAML and for anything that cannot build or run on a device
 */
export function parseCompose(text: string, file: string, projectDir: string): ComposeParseResult {
  const rel = path.relative(projectDir, file).split(path.sep).join('/') || path.basename(file);
  const lineCounter = new LineCounter();
  // Compose files share settings with `<<: *anchor`, a YAML 1.1 feature: enable it explicitly.
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, merge: true, prettyErrors: false });
  const at = new Locator(doc, lineCounter, rel);

  const firstError = doc.errors[0];
  if (firstError) {
    const line = lineCounter.linePos(firstError.pos[0]).line;
    const message = firstError.code === 'DUPLICATE_KEY'
      ? `duplicate key '${(/^[^:\n]*/.exec(text.slice(firstError.pos[0]))?.[0] ?? '').trim().replace(/^["']|["']$/g, '')}'`
      : firstError.message.split('\n')[0] ?? 'syntax error';
    throw new SkiffError('project', `invalid YAML: ${message}`, { where: `${rel}:${line}`, hint: firstError.code === 'DUPLICATE_KEY' ? 'keep one of the keys' : 'fix the syntax' });
  }
  for (const w of doc.warnings) at.warnings.push({ message: w.message.split('\n')[0] ?? w.message, where: `${rel}:${lineCounter.linePos(w.pos[0]).line}` });

  let root: unknown;
  try {
    root = doc.toJS({ maxAliasCount: 1000 });
  } catch (err) {
    // Bad merge sources and alias bombs surface only when the document is resolved.
    const offset = badAliasOffset(doc);
    throw new SkiffError('project', `invalid YAML: ${(err as Error).message.split('\n')[0]}`, {
      where: offset === undefined ? rel : `${rel}:${lineCounter.linePos(offset).line}`,
      hint: 'fix the anchors and aliases',
    });
  }
  if (root === null || root === undefined) throw at.error([], 'the compose file is empty', 'define at least one service under services');
  if (!isRecord(root)) throw at.error([], 'the compose file must be a mapping with a services key');

  let servicesHint = 'define at least one service under services';
  for (const key of Object.keys(root)) {
    if (TOP_LEVEL_KEYS.includes(key) || key.startsWith('x-')) continue;
    if (key === 'secrets' || key === 'configs') {
      throw at.error([key], `top-level '${key}' is not supported on devices`, key === 'secrets' ? UNSUPPORTED_SERVICE_KEYS.secrets : UNSUPPORTED_SERVICE_KEYS.configs);
    }
    if (key === 'include') throw at.error([key], "top-level 'include' is not supported", 'put all services in one compose file');
    if (key === 'name') {
      at.warn([key], "top-level 'name' is ignored; the project name comes from the folder or --projectName");
      continue;
    }
    const guess = closest(key, TOP_LEVEL_KEYS);
    if (guess === 'services') servicesHint = `did you mean 'services' instead of '${key}'?`;
    at.warn([key], `unknown top-level key '${key}'${guess ? ` (did you mean '${guess}'?)` : ''}; it is ignored`);
  }

  const version = root.version;
  if (version !== undefined && version !== null && typeof version !== 'string' && typeof version !== 'number') {
    throw at.error(['version'], "'version' must be a string such as '2.4'");
  }
  const volumes = topLevelMap(root, 'volumes', at);
  const networks = topLevelMap(root, 'networks', at);

  const rawServices = root.services;
  if (rawServices === undefined || rawServices === null) throw at.error(rawServices === null ? ['services'] : [], "no services: the compose file needs a 'services' mapping", servicesHint);
  if (!isRecord(rawServices)) throw at.error(['services'], "'services' must be a mapping of service names to their settings");
  const names = Object.keys(rawServices);
  if (names.length === 0) throw at.error(['services'], "'services' is empty", servicesHint);

  const ctx: Context = { at, projectDir, serviceNames: new Set(names), volumes, networks };
  const services = names.map((name) => parseService(name, rawServices[name], ctx));
  checkCycles(services, at);
  return { services, volumes, networks, warnings: at.warnings };
}

interface Context {
  at: Locator;
  projectDir: string;
  serviceNames: Set<string>;
  volumes: Record<string, Record<string, unknown>>;
  networks: Record<string, Record<string, unknown>>;
}

/** Maps a path of keys/indices to the line of its key in the source, following aliases and merge keys. */
class Locator {
  readonly warnings: ProjectWarning[] = [];

  constructor(
    private readonly doc: Document,
    private readonly lineCounter: LineCounter,
    private readonly file: string,
  ) {}

  where(p: Path): string {
    const offset = this.offset(p);
    return offset === undefined ? this.file : `${this.file}:${this.lineCounter.linePos(offset).line}`;
  }

  line(p: Path): number | undefined {
    const offset = this.offset(p);
    return offset === undefined ? undefined : this.lineCounter.linePos(offset).line;
  }

  error(p: Path, message: string, hint?: string): SkiffError {
    return new SkiffError('project', message, { where: this.where(p), ...(hint ? { hint } : {}) });
  }

  warn(p: Path, message: string): void {
    this.warnings.push({ message, where: this.where(p) });
  }

  /** Offset of the deepest node on the path that exists (a key for maps, the item for lists). */
  private offset(p: Path): number | undefined {
    let node: unknown = this.doc.contents;
    let pos = startOf(node);
    for (const segment of p) {
      node = this.deref(node);
      if (isMap(node)) {
        const pair = this.findPair(node, String(segment), 0);
        if (!pair) break;
        pos = startOf(pair.key) ?? pos;
        node = pair.value;
      } else if (isSeq(node) && typeof segment === 'number') {
        const item: unknown = node.items[segment];
        if (item === undefined) break;
        pos = startOf(item) ?? pos;
        node = item;
      } else {
        break;
      }
    }
    return pos;
  }

  private deref(node: unknown): unknown {
    return isAlias(node) ? node.resolve(this.doc) : node;
  }

  /** A key of the map itself, else one it merges in with `<<` (pointing at the anchor's text). */
  private findPair(map: YAMLMap, key: string, depth: number): Pair | undefined {
    if (depth > 20) return undefined;
    const merges: unknown[] = [];
    for (const pair of map.items) {
      const k = isScalar(pair.key) ? pair.key.value : pair.key;
      if (typeof k === 'symbol' && k.description === '<<') merges.push(pair.value);
      else if (String(k) === key) return pair;
    }
    for (const m of merges) {
      const source = this.deref(m);
      const sources = isSeq(source) ? source.items.map((i) => this.deref(i)) : [source];
      for (const s of sources) {
        const found = isMap(s) ? this.findPair(s, key, depth + 1) : undefined;
        if (found) return found;
      }
    }
    return undefined;
  }
}

/** Where an alias points nowhere or `<<` merges something that is not a mapping. */
function badAliasOffset(doc: Document): number | undefined {
  let found: number | undefined;
  const isMergeable = (n: unknown): boolean => {
    const target = isAlias(n) ? n.resolve(doc) : n;
    return isMap(target) || (isSeq(target) && target.items.every((i) => isMap(isAlias(i) ? i.resolve(doc) : i)));
  };
  visit(doc, {
    Alias(_, node) {
      if (node.resolve(doc) !== undefined) return undefined;
      found = startOf(node);
      return visit.BREAK;
    },
    Pair(_, pair) {
      const key = isScalar(pair.key) ? pair.key.value : undefined;
      if (typeof key !== 'symbol' || key.description !== '<<' || isMergeable(pair.value)) return undefined;
      found = startOf(pair.key);
      return visit.BREAK;
    },
  });
  return found;
}

function startOf(node: unknown): number | undefined {
  const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
  return range?.[0];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `${VAR}` / `$VAR` (but not the `$$` escape): devices do no substitution, so it stays literal. */
function hasVariable(s: string): boolean {
  return /(^|[^$])\$(\{|[A-Za-z_])/.test(s);
}

function firstVariable(v: unknown, p: Path): Path | undefined {
  if (typeof v === 'string') return hasVariable(v) ? p : undefined;
  if (Array.isArray(v)) {
    for (const [i, item] of v.entries()) {
      const found = firstVariable(item, [...p, i]);
      if (found) return found;
    }
  } else if (isRecord(v)) {
    for (const [k, item] of Object.entries(v)) {
      const found = hasVariable(k) ? [...p, k] : firstVariable(item, [...p, k]);
      if (found) return found;
    }
  }
  return undefined;
}

function topLevelMap(root: Record<string, unknown>, key: 'volumes' | 'networks', at: Locator): Record<string, Record<string, unknown>> {
  const raw = root[key];
  const result: Record<string, Record<string, unknown>> = {};
  if (raw === undefined || raw === null) return result;
  if (!isRecord(raw)) throw at.error([key], `top-level '${key}' must be a mapping of names to settings`);
  for (const [name, value] of Object.entries(raw)) {
    if (!NAME_RE.test(name)) throw at.error([key, name], `invalid ${key === 'volumes' ? 'volume' : 'network'} name '${name}'`, 'use letters, digits, "_", "." and "-", starting with a letter or digit');
    if (value !== null && value !== undefined && !isRecord(value)) throw at.error([key, name], `the settings of ${key === 'volumes' ? 'volume' : 'network'} '${name}' must be a mapping (or empty)`);
    result[name] = value ?? {};
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Services

/** Checks one key's value and returns its normalised form (what goes into `config`). */
type Normaliser = (value: unknown, field: Field) => unknown;

interface Field {
  ctx: Context;
  service: string;
  key: string;
  path: Path;
  fail(message: string, hint?: string, sub?: Path): SkiffError;
}

const SERVICE_KEYS: Record<string, Normaliser> = {
  build: (v) => v, // handled by parseBuild
  image: (v, f) => {
    const image = str(v, f);
    if (!image.trim() || /\s/.test(image)) throw f.fail(`invalid image name '${image}' in service '${f.service}'`);
    return image;
  },
  command: command,
  entrypoint: command,
  environment: (v, f) => dict(v, f, true),
  labels: (v, f) => dict(v, f, false),
  ports: ports,
  expose: (v, f) => list(v, f, (item, i) => exposeSpec(item, f, i)),
  volumes: (v) => v, // handled by parseVolumes, which also moves tmpfs mounts into tmpfs
  tmpfs: (v, f) => {
    const mounts = strOrList(v, f);
    mounts.forEach((m, i) => {
      if (!m.startsWith('/') && !hasVariable(m)) throw f.fail(`tmpfs mount '${m}' in service '${f.service}' must be an absolute path`, undefined, Array.isArray(v) ? [i] : []);
    });
    return mounts;
  },
  networks: serviceNetworks,
  network_mode: networkMode,
  privileged: bool,
  cap_add: stringList,
  cap_drop: stringList,
  devices: stringList,
  device_cgroup_rules: stringList,
  restart: (v, f) => {
    const s = str(v, f);
    if (!RESTART_RE.test(s) && !hasVariable(s)) throw f.fail(`invalid restart policy '${s}' in service '${f.service}'`, 'use no, always, on-failure[:N] or unless-stopped');
    return s;
  },
  depends_on: dependsOn,
  healthcheck: healthcheck,
  stop_signal: str,
  stop_grace_period: duration,
  working_dir: str,
  user: (v, f) => scalarString(v, f),
  sysctls: (v, f) => dict(v, f, false),
  ulimits: ulimits,
  shm_size: size,
  mem_limit: size,
  mem_reservation: size,
  cpu_shares: int,
  cpu_quota: int,
  cpuset: (v, f) => scalarString(v, f),
  cpus: (v, f) => {
    const n = typeof v === 'string' && !hasVariable(v) && v.trim() !== '' ? Number(v) : v;
    if (typeof n === 'string') return n;
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) throw f.fail(`'cpus' in service '${f.service}' must be a number such as 0.5`);
    return n;
  },
  pids_limit: int,
  cgroup_parent: str,
  dns: strOrList,
  dns_search: strOrList,
  dns_opt: stringList,
  extra_hosts: extraHosts,
  hostname: str,
  domainname: str,
  read_only: bool,
  security_opt: stringList,
  ipc: str,
  pid: (v, f) => {
    const s = str(v, f);
    if (s !== 'host' && !hasVariable(s)) throw f.fail(`pid '${s}' in service '${f.service}' is not supported on devices`, "use pid: host, or remove it");
    return s;
  },
  init: bool,
  oom_kill_disable: bool,
  oom_score_adj: (v, f) => {
    const n = int(v, f);
    if (typeof n === 'number' && (n < -1000 || n > 1000)) throw f.fail(`'oom_score_adj' in service '${f.service}' must be between -1000 and 1000`);
    return n;
  },
  stdin_open: bool,
  tty: bool,
  group_add: (v, f) => list(v, f, (item, i) => scalarString(item, f, [i])),
  mac_address: str,
  logging: (v, f) => {
    const m = record(v, f);
    if (m.driver !== undefined) str(m.driver, f, ['driver']);
    if (m.options !== undefined && m.options !== null) {
      return { ...m, options: dict(m.options, { ...f, key: 'logging.options', fail: (msg, hint, sub = []) => f.fail(msg, hint, ['options', ...sub]) }, false) };
    }
    return m;
  },
  runtime: str,
  userns_mode: str,
};

function parseService(name: string, raw: unknown, ctx: Context): ServiceSpec {
  const { at } = ctx;
  const base = ['services', name];
  const line = at.line(base);
  if (!NAME_RE.test(name)) throw at.error(base, `invalid service name '${name}'`, 'use letters, digits, "_", "." and "-", starting with a letter or digit');
  if (raw !== null && raw !== undefined && !isRecord(raw)) throw at.error(base, `service '${name}' must be a mapping of settings`);
  const settings: Record<string, unknown> = isRecord(raw) ? raw : {};

  const config: Record<string, unknown> = {};
  let build: BuildSpec | undefined;
  let extraTmpfs: string[] = [];
  for (const [key, value] of Object.entries(settings)) {
    const p = [...base, key];
    if (key.startsWith('x-')) continue;
    const unsupported = UNSUPPORTED_SERVICE_KEYS[key];
    if (unsupported !== undefined) throw at.error(p, `'${key}' in service '${name}' is not supported on devices`, unsupported);
    const normalise = SERVICE_KEYS[key];
    if (!normalise) {
      const guess = closest(key, Object.keys(SERVICE_KEYS));
      at.warn(p, `unknown key '${key}' in service '${name}'${guess ? ` (did you mean '${guess}'?)` : ''}; it is ignored`);
      continue;
    }
    const variable = firstVariable(value, p);
    if (variable) at.warn(variable, `'${key}' in service '${name}' uses variable substitution, which devices do not do; the text is used as is`);
    const field: Field = { ctx, service: name, key, path: p, fail: (message, hint, sub = []) => at.error([...p, ...sub], message, hint) };
    if (key === 'build') build = parseBuild(value, field);
    else if (key === 'volumes') [config.volumes, extraTmpfs] = parseVolumes(value, field);
    else config[key] = normalise(value, field);
  }
  if (extraTmpfs.length > 0) config.tmpfs = [...((config.tmpfs as string[] | undefined) ?? []), ...extraTmpfs];

  const image = config.image as string | undefined;
  if (!build && image === undefined) throw at.error(base, `service '${name}' has neither build nor image`, 'add build: <folder> or image: <name>');
  if (config.network_mode !== undefined && config.networks !== undefined) {
    throw at.error([...base, 'network_mode'], `service '${name}' sets both network_mode and networks`, 'keep one of them');
  }
  if (config.network_mode === 'host' && config.ports !== undefined) {
    at.warn([...base, 'ports'], `ports of service '${name}' have no effect with network_mode: host`);
  }
  return { name, ...(build ? { build } : {}), ...(image !== undefined ? { image } : {}), config, ...(line !== undefined ? { line } : {}) };
}

// --- scalar and list helpers -----------------------------------------------------------------

function str(v: unknown, f: Field, sub: Path = []): string {
  if (typeof v !== 'string') throw f.fail(`'${f.key}' in service '${f.service}' must be a string`, undefined, sub);
  return v;
}

/** Numbers and booleans become their string form (YAML reads `user: 1000` as a number). */
function scalarString(v: unknown, f: Field, sub: Path = []): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  throw f.fail(`'${f.key}' in service '${f.service}' must be a string`, undefined, sub);
}

function bool(v: unknown, f: Field): boolean | string {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && hasVariable(v)) return v;
  throw f.fail(`'${f.key}' in service '${f.service}' must be true or false`, typeof v === 'string' ? `write ${f.key}: true or ${f.key}: false (YAML 1.2 reads '${v}' as text)` : undefined);
}

function int(v: unknown, f: Field): number | string {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'string' && hasVariable(v)) return v;
  throw f.fail(`'${f.key}' in service '${f.service}' must be a whole number`);
}

function size(v: unknown, f: Field): number | string {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
  if (typeof v === 'string' && (SIZE_RE.test(v.trim()) || hasVariable(v))) return v;
  throw f.fail(`'${f.key}' in service '${f.service}' must be a size such as 512m or 1g`);
}

function duration(v: unknown, f: Field): number | string {
  if (typeof v === 'number' && v >= 0) return v;
  if (typeof v === 'string' && (DURATION_RE.test(v) || hasVariable(v))) return v;
  throw f.fail(`'${f.key}' in service '${f.service}' must be a duration such as 10s or 1m30s`);
}

function record(v: unknown, f: Field): Record<string, unknown> {
  if (!isRecord(v)) throw f.fail(`'${f.key}' in service '${f.service}' must be a mapping`);
  return v;
}

function list<T>(v: unknown, f: Field, each: (item: unknown, i: number) => T): T[] {
  if (!Array.isArray(v)) throw f.fail(`'${f.key}' in service '${f.service}' must be a list`);
  return v.map(each);
}

function stringList(v: unknown, f: Field): string[] {
  return list(v, f, (item, i) => str(item, f, [i]));
}

function strOrList(v: unknown, f: Field): string[] {
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v)) throw f.fail(`'${f.key}' in service '${f.service}' must be a string or a list of strings`);
  return stringList(v, f);
}

function command(v: unknown, f: Field): string | string[] {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return v.map((item, i) => scalarString(item, f, [i]));
  throw f.fail(`'${f.key}' in service '${f.service}' must be a string or a list`);
}

/**
 * A list of `K=V` (or bare `K`) or a mapping, as a string map. Null and bare keys become '':
 * the device has no shell environment to take the value from.
 */
function dict(v: unknown, f: Pick<Field, 'key' | 'service' | 'fail'>, isEnvironment: boolean): Record<string, string> {
  const result: Record<string, string> = {};
  const what = `'${f.key}' in service '${f.service}'`;
  if (Array.isArray(v)) {
    v.forEach((item, i) => {
      if (typeof item !== 'string') throw f.fail(`${what}: list items must be strings of the form NAME=value`, undefined, [i]);
      const eq = item.indexOf('=');
      const key = eq < 0 ? item : item.slice(0, eq);
      if (!key.trim()) throw f.fail(`${what}: '${item}' has no name before '='`, undefined, [i]);
      result[key] = eq < 0 ? '' : item.slice(eq + 1);
    });
    return result;
  }
  if (!isRecord(v)) throw f.fail(`${what} must be a mapping or a list of NAME=value`);
  for (const [key, value] of Object.entries(v)) {
    if (isEnvironment && !key.trim()) throw f.fail(`${what}: empty variable name`);
    if (value === null || value === undefined) result[key] = '';
    else if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') result[key] = String(value);
    else throw f.fail(`${what}: the value of '${key}' must be a string, number or boolean`, undefined, [key]);
  }
  return result;
}

function ulimits(v: unknown, f: Field): Record<string, unknown> {
  const m = record(v, f);
  for (const [name, limit] of Object.entries(m)) {
    const ok = typeof limit === 'number' ? Number.isInteger(limit)
      : isRecord(limit) && Number.isInteger(limit.soft) && Number.isInteger(limit.hard);
    if (!ok) throw f.fail(`ulimit '${name}' in service '${f.service}' must be a number or { soft, hard }`, undefined, [name]);
  }
  return m;
}

function extraHosts(v: unknown, f: Field): string[] {
  if (isRecord(v)) return Object.entries(v).map(([host, ip]) => `${host}:${scalarString(ip, f, [host])}`);
  return stringList(v, f);
}

function healthcheck(v: unknown, f: Field): Record<string, unknown> {
  const m = record(v, f);
  if (m.test !== undefined && typeof m.test !== 'string' && !(Array.isArray(m.test) && m.test.every((t) => typeof t === 'string'))) {
    throw f.fail(`healthcheck test in service '${f.service}' must be a string or a list of strings`, undefined, ['test']);
  }
  for (const key of ['interval', 'timeout', 'start_period', 'start_interval']) {
    if (m[key] !== undefined) duration(m[key], { ...f, key: `healthcheck.${key}`, fail: (msg, hint) => f.fail(msg, hint, [key]) });
  }
  if (m.retries !== undefined && !Number.isInteger(m.retries)) throw f.fail(`healthcheck retries in service '${f.service}' must be a whole number`, undefined, ['retries']);
  if (m.disable !== undefined && typeof m.disable !== 'boolean') throw f.fail(`healthcheck disable in service '${f.service}' must be true or false`, undefined, ['disable']);
  return m;
}

// --- ports -------------------------------------------------------------------------------------

function ports(v: unknown, f: Field): string[] {
  return list(v, f, (item, i) => {
    if (isRecord(item)) return longPort(item, f, i);
    if (typeof item === 'number') item = String(item);
    if (typeof item !== 'string') throw f.fail(`ports of service '${f.service}' must be strings such as "8080:80"`, undefined, [i]);
    const problem = hasVariable(item) ? undefined : portProblem(item);
    if (problem) throw f.fail(`invalid port '${item}' in service '${f.service}': ${problem}`, 'use [host_ip:][published:]target[/tcp|udp], ports 1-65535', [i]);
    return item;
  });
}

function longPort(p: Record<string, unknown>, f: Field, i: number): string {
  const fail = (message: string): SkiffError => f.fail(`invalid port in service '${f.service}': ${message}`, 'use target, and optionally published, protocol and host_ip', [i]);
  const target = p.target;
  if (target === undefined) throw fail('target is required');
  const protocol = p.protocol ?? 'tcp';
  if (typeof protocol !== 'string') throw fail('protocol must be tcp or udp');
  const parts = [p.host_ip, p.published, target].map((x) => (x === undefined || x === null ? undefined : String(x)));
  const [hostIp, published] = parts;
  const spec = `${hostIp !== undefined ? `${hostIp.includes(':') ? `[${hostIp}]` : hostIp}:${published ?? ''}:` : published !== undefined ? `${published}:` : ''}${String(target)}${protocol === 'tcp' ? '' : `/${protocol}`}`;
  const problem = portProblem(spec);
  if (problem) throw fail(problem);
  return spec;
}

/** Why a short-syntax port is invalid, or undefined if it is fine. */
function portProblem(spec: string): string | undefined {
  let rest = spec;
  const slash = rest.lastIndexOf('/');
  if (slash >= 0) {
    const protocol = rest.slice(slash + 1);
    if (!['tcp', 'udp', 'sctp'].includes(protocol)) return `unknown protocol '${protocol}'`;
    rest = rest.slice(0, slash);
  }
  let ip: string | undefined;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']:');
    if (close < 0) return 'an IPv6 address needs the form [address]:published:target';
    ip = rest.slice(1, close);
    rest = rest.slice(close + 2);
    if (!/^[0-9a-fA-F:.]+$/.test(ip) || !ip.includes(':')) return `invalid IPv6 address '${ip}'`;
  }
  const parts = rest.split(':');
  if (ip === undefined && parts.length === 3) {
    ip = parts.shift();
    if (!isIPv4(ip ?? '')) return `invalid host IP '${ip ?? ''}'`;
  }
  if (parts.length > 2 || (ip !== undefined && parts.length !== 2)) return 'too many colons';
  const target = parts.pop() ?? '';
  const published = parts.pop();
  const targetRange = portRange(target);
  if (typeof targetRange === 'string') return targetRange;
  if (published !== undefined && published !== '') {
    const publishedRange = portRange(published);
    if (typeof publishedRange === 'string') return publishedRange;
    if (targetRange[1] > targetRange[0] && publishedRange[1] - publishedRange[0] !== targetRange[1] - targetRange[0]) return 'the published and target ranges differ in size';
  } else if (published === '' && ip === undefined) {
    return 'empty published port';
  }
  return undefined;
}

function portRange(s: string): [number, number] | string {
  const m = /^(\d+)(?:-(\d+))?$/.exec(s);
  if (!m) return `'${s}' is not a port number`;
  const low = Number(m[1]);
  const high = m[2] === undefined ? low : Number(m[2]);
  for (const n of [low, high]) if (n < 1 || n > 65535) return `port ${n} is out of range (1-65535)`;
  if (high < low) return `range '${s}' is backwards`;
  return [low, high];
}

function isIPv4(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  return m !== null && m.slice(1).every((octet) => Number(octet) <= 255);
}

function exposeSpec(item: unknown, f: Field, i: number): string {
  const spec = typeof item === 'number' ? String(item) : item;
  if (typeof spec !== 'string') throw f.fail(`expose of service '${f.service}' must list ports`, undefined, [i]);
  if (hasVariable(spec)) return spec;
  const m = /^([^/]+)(?:\/(tcp|udp|sctp))?$/.exec(spec);
  const problem = m ? portRange(m[1] ?? '') : 'unknown protocol';
  if (typeof problem === 'string') throw f.fail(`invalid exposed port '${spec}' in service '${f.service}': ${problem}`, 'use port[/tcp|udp], ports 1-65535', [i]);
  return spec;
}

// --- volumes -----------------------------------------------------------------------------------

const BIND_HINT = 'use a named volume, or the io.balena.features.* labels for host access';

/** Returns the volume strings and the tmpfs mounts declared with the long syntax. */
function parseVolumes(v: unknown, f: Field): [string[], string[]] {
  const tmpfs: string[] = [];
  const volumes: string[] = [];
  list(v, f, (item, i) => {
    if (typeof item === 'string') volumes.push(shortVolume(item, f, i));
    else if (isRecord(item)) {
      const mount = longVolume(item, f, i);
      (mount.tmpfs ? tmpfs : volumes).push(mount.spec);
    } else throw f.fail(`volumes of service '${f.service}' must be strings such as data:/data`, undefined, [i]);
  });
  return [volumes, tmpfs];
}

function shortVolume(spec: string, f: Field, i: number): string {
  if (hasVariable(spec)) return spec;
  const parts = spec.split(':');
  const [source = '', target, mode] = parts;
  if (parts.length === 1) {
    if (!source.startsWith('/')) throw f.fail(`volume '${spec}' in service '${f.service}' needs a target path`, 'write name:/path/in/container', [i]);
    return spec;
  }
  if (/^[/.~]/.test(source)) throw f.fail(`bind mounts are not supported on devices: '${spec}'`, BIND_HINT, [i]);
  if (parts.length > 3) throw f.fail(`invalid volume '${spec}' in service '${f.service}'`, 'write name:/path[:ro]', [i]);
  if (mode !== undefined && mode !== 'ro' && mode !== 'rw') throw f.fail(`invalid volume mode '${mode}' in '${spec}'`, 'use ro or rw', [i]);
  return namedVolume(source, target ?? '', mode === 'ro', spec, f, i);
}

function namedVolume(source: string, target: string, readOnly: boolean, spec: string, f: Field, i: number): string {
  if (!NAME_RE.test(source)) throw f.fail(`invalid volume name '${source}' in '${spec}'`, 'use letters, digits, "_", "." and "-"', [i]);
  if (!(source in f.ctx.volumes)) throw f.fail(`volume '${source}' used by service '${f.service}' is not declared in the top-level volumes`, `add '${source}:' under the top-level volumes key`, [i]);
  if (!target.startsWith('/')) throw f.fail(`the target of volume '${spec}' must be an absolute path`, undefined, [i]);
  return `${source}:${target}${readOnly ? ':ro' : ''}`;
}

function longVolume(m: Record<string, unknown>, f: Field, i: number): { spec: string; tmpfs: boolean } {
  const { type, source, target } = m;
  const described = `${typeof source === 'string' ? `${source}:` : ''}${typeof target === 'string' ? target : ''}`;
  if (typeof target !== 'string' || !target.startsWith('/')) throw f.fail(`a volume of service '${f.service}' needs an absolute target path`, undefined, [i]);
  if (type === 'bind') throw f.fail(`bind mounts are not supported on devices: '${described}'`, BIND_HINT, [i]);
  if (type === 'tmpfs') {
    const tmpfsSize = isRecord(m.tmpfs) ? m.tmpfs.size : undefined;
    return { spec: tmpfsSize === undefined ? target : `${target}:size=${String(tmpfsSize)}`, tmpfs: true };
  }
  if (type !== 'volume') {
    throw f.fail(`volume type '${String(type)}' in service '${f.service}' is not supported on devices`, 'use type: volume (named) or type: tmpfs', [i]);
  }
  const readOnly = m.read_only === true;
  if (source === undefined || source === null || source === '') {
    if (readOnly) throw f.fail(`an anonymous volume cannot be read-only (service '${f.service}')`, 'give the volume a name', [i]);
    return { spec: target, tmpfs: false };
  }
  if (typeof source !== 'string') throw f.fail(`volume source in service '${f.service}' must be a volume name`, undefined, [i]);
  if (/^[/.~]/.test(source)) throw f.fail(`bind mounts are not supported on devices: '${described}'`, BIND_HINT, [i]);
  return { spec: namedVolume(source, target, readOnly, described, f, i), tmpfs: false };
}

// --- networks and dependencies -----------------------------------------------------------------

function checkNetwork(name: string, f: Field, sub: Path): void {
  if (name !== 'default' && !(name in f.ctx.networks)) {
    throw f.fail(`network '${name}' used by service '${f.service}' is not declared in the top-level networks`, `add '${name}:' under the top-level networks key`, sub);
  }
}

function serviceNetworks(v: unknown, f: Field): string[] | Record<string, Record<string, unknown>> {
  if (Array.isArray(v)) {
    return v.map((item, i) => {
      const name = str(item, f, [i]);
      checkNetwork(name, f, [i]);
      return name;
    });
  }
  if (!isRecord(v)) throw f.fail(`'networks' in service '${f.service}' must be a list of names or a mapping`);
  const result: Record<string, Record<string, unknown>> = {};
  for (const [name, settings] of Object.entries(v)) {
    checkNetwork(name, f, [name]);
    if (settings !== null && settings !== undefined && !isRecord(settings)) throw f.fail(`the settings of network '${name}' in service '${f.service}' must be a mapping`, undefined, [name]);
    result[name] = settings ?? {};
  }
  return result;
}

function networkMode(v: unknown, f: Field): string {
  const mode = str(v, f);
  if (['host', 'bridge', 'none'].includes(mode) || hasVariable(mode)) return mode;
  if (mode.startsWith('service:')) {
    const other = mode.slice('service:'.length);
    if (!f.ctx.serviceNames.has(other)) throw f.fail(`network_mode of service '${f.service}' names unknown service '${other}'`);
    if (other === f.service) throw f.fail(`service '${f.service}' cannot share its own network`);
    return mode;
  }
  if (mode.startsWith('container:')) throw f.fail(`network_mode '${mode}' is not supported on devices`, 'use service:<name> to share the network of another service');
  throw f.fail(`network_mode '${mode}' is not supported on devices`, 'use host, bridge, none or service:<name>, or list the network under networks');
}

function dependsOn(v: unknown, f: Field): string[] {
  const check = (name: string, sub: Path): string => {
    if (!f.ctx.serviceNames.has(name)) throw f.fail(`service '${f.service}' depends on unknown service '${name}'`, undefined, sub);
    if (name === f.service) throw f.fail(`service '${f.service}' depends on itself`, undefined, sub);
    return name;
  };
  if (Array.isArray(v)) return v.map((item, i) => check(str(item, f, [i]), [i]));
  if (!isRecord(v)) throw f.fail(`'depends_on' in service '${f.service}' must be a list of service names or a mapping`);
  return Object.entries(v).map(([name, settings]) => {
    check(name, [name]);
    const condition = isRecord(settings) ? settings.condition : undefined;
    if (condition === 'service_healthy' || condition === 'service_completed_successfully') {
      f.ctx.at.warn([...f.path, name, 'condition'], `devices only wait for '${name}' to start (condition ${condition} is treated as service_started)`);
    } else if (condition !== undefined && condition !== 'service_started') {
      throw f.fail(`unknown depends_on condition '${String(condition)}'`, 'use service_started', [name, 'condition']);
    }
    return name;
  });
}

/** Dependency cycles (depends_on and network_mode: service:x) would leave services never starting. */
function checkCycles(services: ServiceSpec[], at: Locator): void {
  const deps = new Map<string, Array<{ to: string; key: string }>>();
  for (const s of services) {
    const edges = ((s.config.depends_on as string[] | undefined) ?? []).map((to) => ({ to, key: 'depends_on' }));
    const mode = s.config.network_mode;
    if (typeof mode === 'string' && mode.startsWith('service:')) edges.push({ to: mode.slice('service:'.length), key: 'network_mode' });
    deps.set(s.name, edges);
  }
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (name: string): void => {
    state.set(name, 'visiting');
    stack.push(name);
    for (const { to, key } of deps.get(name) ?? []) {
      if (state.get(to) === 'visiting') {
        const cycle = [...stack.slice(stack.indexOf(to)), to];
        throw at.error(['services', name, key], `dependency cycle: ${cycle.join(' -> ')}`, 'remove one of the dependencies');
      }
      if (!state.has(to)) visit(to);
    }
    stack.pop();
    state.set(name, 'done');
  };
  for (const s of services) if (!state.has(s.name)) visit(s.name);
}

// --- build -------------------------------------------------------------------------------------

function parseBuild(v: unknown, f: Field): BuildSpec {
  const { at, projectDir } = f.ctx;
  const line = at.line(f.path);
  const spec = typeof v === 'string' ? { context: v } : v;
  if (!isRecord(spec)) throw f.fail(`'build' in service '${f.service}' must be a folder or a mapping`);
  for (const key of Object.keys(spec)) {
    if (key.startsWith('x-')) continue;
    const unsupported = UNSUPPORTED_BUILD_KEYS[key];
    if (unsupported !== undefined) throw f.fail(`build.${key} in service '${f.service}' is not supported`, unsupported, [key]);
    if (IGNORED_BUILD_KEYS.includes(key)) at.warn([...f.path, key], `build.${key} in service '${f.service}' is not used by skiff's builder; it is ignored`);
    else if (!BUILD_KEYS.includes(key)) {
      const guess = closest(key, BUILD_KEYS);
      at.warn([...f.path, key], `unknown key 'build.${key}' in service '${f.service}'${guess ? ` (did you mean '${guess}'?)` : ''}; it is ignored`);
    }
  }
  const sub = (key: string): Field => ({ ...f, key: `build.${key}`, path: [...f.path, key], fail: (message, hint, rest = []) => f.fail(message, hint, [key, ...rest]) });

  const contextValue = spec.context ?? '.';
  if (typeof contextValue !== 'string' || contextValue === '') throw sub('context').fail(`build context of service '${f.service}' must be a folder`);
  if (GIT_RE.test(contextValue)) {
    throw sub('context').fail('build contexts from git URLs are not supported; clone the repository into the project', 'then set build to its folder');
  }
  // A context outside the project folder (`../` from a compose file in a sub-folder of a monorepo)
  // is fine, as with docker compose; it then uses its own .dockerignore.
  const context = path.resolve(projectDir, contextValue);
  const contextRel = path.relative(projectDir, context);
  if (!existsSync(context)) throw sub('context').fail(`build context '${contextValue}' of service '${f.service}' does not exist`, 'create the folder or fix the path');
  if (!statSync(context).isDirectory()) throw sub('context').fail(`build context '${contextValue}' of service '${f.service}' is not a folder`);

  let dockerfile: string | undefined;
  if (spec.dockerfile !== undefined) {
    const d = str(spec.dockerfile, sub('dockerfile'));
    const resolved = path.resolve(context, d);
    const inside = path.relative(context, resolved);
    if (!inside || inside.startsWith('..') || path.isAbsolute(inside)) {
      throw sub('dockerfile').fail(`dockerfile '${d}' of service '${f.service}' must be inside its build context '${contextRel || '.'}'`, 'move the Dockerfile into the context folder');
    }
    dockerfile = inside.split(path.sep).join('/');
  }
  const target = spec.target === undefined ? undefined : str(spec.target, sub('target'));
  const cacheFrom = spec.cache_from === undefined ? [] : strOrList(spec.cache_from, sub('cache_from'));
  return {
    context,
    contextRel: contextRel === '' ? '.' : contextRel.split(path.sep).join('/'),
    ...(dockerfile !== undefined ? { dockerfile } : {}),
    args: spec.args === undefined || spec.args === null ? {} : dict(spec.args, sub('args'), true),
    ...(target !== undefined ? { target } : {}),
    labels: spec.labels === undefined || spec.labels === null ? {} : dict(spec.labels, sub('labels'), false),
    cacheFrom,
    ...(line !== undefined ? { line } : {}),
  };
}
