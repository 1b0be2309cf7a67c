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
import { substituteDocument } from './compose-variables.js';
import {
  checkServiceCombination, checkServiceKey, emptyServiceConfig, isServiceKey, REFUSED_SERVICE_KEYS, SERVICE_KEYS, ServiceConfigError, stringMap,
  type ServiceConfig, type ServiceJson, type ServiceKey,
} from '../service/service-config.js';
import { parsePort } from '../service/values.js';
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
// Docker's remote-context forms; `name.git#ref` is how compose names a branch of a repository.
const GIT_RE = /^(https?:\/\/|git@|git:\/\/|ssh:\/\/|github\.com\/)|\.git#/i;
const TOP_LEVEL_KEYS = ['version', 'services', 'volumes', 'networks'];

// Keys a device refuses, with what to do instead: the device's own list (the agent refuses them too).
const UNSUPPORTED_SERVICE_KEYS = REFUSED_SERVICE_KEYS;

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
 * @param env - the variables `${VAR}` reads (process environment over the project's `.env`, see
 *   loadProject); substitution happens before validation, so every check sees the resolved values
 * @returns services with normalised `config` (environment, labels and build args as string maps;
 *   ports and volumes as strings; depends_on as a list), the top-level volumes and networks, and
 *   warnings (unknown keys, ignored settings, variables that are not set)
 * @throws SkiffError('project') for invalid YAML, a required variable that is unset, bad `${…}`
 *   syntax, and anything that cannot build or run on a device
 */
export function parseCompose(text: string, file: string, projectDir: string, env: Readonly<Record<string, string>> = {}): ComposeParseResult {
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
    // `{` and `}` end a plain value inside [ ] or { }, so an unquoted ${VAR} there breaks the YAML itself.
    const braceInFlow = /\[[^\]\n]*\$\{|\{[^}\n]*\$\{/.test(text.split('\n')[line - 1] ?? '');
    const hint = firstError.code === 'DUPLICATE_KEY' ? 'keep one of the keys' : braceInFlow ? 'quote values with ${…} inside [ ] or { }, e.g. ["MODE=${MODE:-prod}"]' : 'fix the syntax';
    throw new SkiffError('project', `invalid YAML: ${message}`, { where: `${rel}:${line}`, hint });
  }
  for (const w of doc.warnings) at.warnings.push({ message: w.message.split('\n')[0] ?? w.message, where: `${rel}:${lineCounter.linePos(w.pos[0]).line}` });
  substituteDocument(doc, (name) => (Object.hasOwn(env, name) ? env[name] : undefined), {
    // A substitution error is about its own text: the unset variables found before it are not its cause.
    error: (p, message, hint) => new SkiffError('project', message, { where: at.where(p), ...(hint ? { hint } : {}) }),
    // An unset variable often explains the error that follows (`ports: [":80"]`), so errors carry it too.
    warn: (p, message) => {
      at.warn(p, message);
      at.notes.push(`${at.where(p)}: ${message}`);
    },
  });

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
  /** Lines every error carries below its own (see SkiffError details). */
  readonly notes: string[] = [];

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
    return new SkiffError('project', message, { where: this.where(p), ...(hint ? { hint } : {}), ...(this.notes.length > 0 ? { details: [...this.notes] } : {}) });
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
//
// Each key's value is checked by the device's own rules (src/lib/service), so what compose accepts
// the device honours; this file adds what only the project knows (declared volumes, networks and
// services, the long syntaxes, build) and turns every problem into an error at its line.

interface Field {
  ctx: Context;
  service: string;
  key: string;
  path: Path;
  fail(message: string, hint?: string, sub?: Path): SkiffError;
}

/** Runs a check of the shared service rules, reporting its problem at the line it names. */
function located<T>(f: Field, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof ServiceConfigError) throw f.fail(err.message, err.hint, err.path);
    throw err;
  }
}

/**
 * Compose forms the release carries in another shape (the wire form of {@link ServiceJson}),
 * from the value as written and what the shared rules read from it. Keys not listed travel as
 * written.
 */
const WIRE_FORM: { [K in ServiceKey]?: (raw: unknown, read: Partial<ServiceConfig>) => ServiceJson[K] } = {
  command: (raw, read) => (typeof raw === 'string' ? raw : read.command),
  entrypoint: (raw, read) => (typeof raw === 'string' ? raw : read.entrypoint),
  environment: (_, read) => read.environment,
  labels: (_, read) => read.labels,
  ports: (_, read) => read.ports,
  expose: (_, read) => read.expose,
  volumes: (_, read) => read.volumes,
  tmpfs: (_, read) => read.tmpfs,
  networks: (raw) => (isRecord(raw) ? Object.fromEntries(Object.entries(raw).map(([n, s]) => [n, isRecord(s) ? s : {}])) : raw as string[]),
  depends_on: (_, read) => read.dependsOn,
  user: (_, read) => read.user,
  group_add: (_, read) => read.groupAdd,
  sysctls: (_, read) => read.sysctls,
  extra_hosts: (_, read) => read.extraHosts,
  dns: (_, read) => read.dns,
  dns_search: (_, read) => read.dnsSearch,
  cpus: (_, read) => (read.nanoCpus ?? 0) / 1e9,
  logging: (_, read) => read.logging,
};

function parseService(name: string, raw: unknown, ctx: Context): ServiceSpec {
  const { at } = ctx;
  const base = ['services', name];
  const line = at.line(base);
  if (!NAME_RE.test(name)) throw at.error(base, `invalid service name '${name}'`, 'use letters, digits, "_", "." and "-", starting with a letter or digit');
  if (raw !== null && raw !== undefined && !isRecord(raw)) throw at.error(base, `service '${name}' must be a mapping of settings`);
  const settings: Record<string, unknown> = isRecord(raw) ? raw : {};

  // Filled key by key, with values already substituted (parseCompose) and checked by the device's rules.
  const config: Record<string, unknown> = {};
  const read = emptyServiceConfig();
  let build: BuildSpec | undefined;
  let extraTmpfs: string[] = [];
  for (const [key, value] of Object.entries(settings)) {
    const p = [...base, key];
    if (key.startsWith('x-')) continue;
    const field: Field = { ctx, service: name, key, path: p, fail: (message, hint, sub = []) => at.error([...p, ...sub], message, hint) };
    if (key === 'build') {
      build = parseBuild(value, field);
      continue;
    }
    if (!isServiceKey(key) && REFUSED_SERVICE_KEYS[key] === undefined) {
      const guess = closest(key, [...SERVICE_KEYS, 'build']);
      at.warn(p, `unknown key '${key}' in service '${name}'${guess ? ` (did you mean '${guess}'?)` : ''}; it is ignored`);
      continue;
    }
    let wire = value;
    if (key === 'volumes') [wire, extraTmpfs] = parseVolumes(value, field);
    else if (key === 'ports' && Array.isArray(value)) wire = value.map((item, i) => (isRecord(item) ? longPort(item, field, i) : item));
    const fields = located(field, () => checkServiceKey(key, wire, name));
    Object.assign(read, fields);
    const form = WIRE_FORM[key as ServiceKey];
    config[key] = form ? form(wire, fields) : wire;
    if (key === 'volumes') read.volumes.forEach((v, i) => checkDeclared(v, field, i));
    if (key === 'networks') for (const n of read.networks) checkNetwork(n, field, Array.isArray(value) ? [read.networks.indexOf(n)] : [n]);
    if (key === 'depends_on') dependsOn(value, field);
  }
  if (extraTmpfs.length > 0) {
    config.tmpfs = [...((config.tmpfs as string[] | undefined) ?? []), ...extraTmpfs];
    read.tmpfs = config.tmpfs as string[];
  }
  try {
    checkServiceCombination(read, name);
  } catch (err) {
    if (err instanceof ServiceConfigError) throw at.error([...base, err.key, ...err.path], err.message, err.hint);
    throw err;
  }

  const image = config.image as string | undefined;
  if (!build && image === undefined) throw at.error(base, `service '${name}' has neither build nor image`, 'add build: <folder> or image: <name>');
  if (config.network_mode === 'host' && config.ports !== undefined) {
    at.warn([...base, 'ports'], `ports of service '${name}' have no effect with network_mode: host`);
  }
  // The values were checked key by key above against the types of ServiceJson.
  const wireConfig = config as ServiceJson;
  return { name, ...(build ? { build } : {}), ...(image !== undefined ? { image } : {}), config: wireConfig, ...(line !== undefined ? { line } : {}) };
}

// --- scalar and list helpers (build keys) ------------------------------------------------------

function str(v: unknown, f: Field, sub: Path = []): string {
  if (typeof v !== 'string') throw f.fail(`'${f.key}' in service '${f.service}' must be a string`, undefined, sub);
  return v;
}

function strOrList(v: unknown, f: Field): string[] {
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v)) throw f.fail(`'${f.key}' in service '${f.service}' must be a string or a list of strings`);
  return v.map((item, i) => str(item, f, [i]));
}

/** A list of `K=V` (or bare `K`) or a mapping, as a string map, read by the device's rules. */
function dict(v: unknown, f: Field, namesRequired: boolean): Record<string, string> {
  return located(f, () => stringMap(v, { key: f.key, service: f.service }, { namesRequired }));
}

// --- ports -------------------------------------------------------------------------------------

/** The long syntax (`{ target, published, protocol, host_ip }`) as the short one the device reads. */
function longPort(p: Record<string, unknown>, f: Field, i: number): string {
  const fail = (message: string): SkiffError => f.fail(`invalid port in service '${f.service}': ${message}`, 'use target, and optionally published, protocol and host_ip', [i]);
  const target = p.target;
  if (target === undefined) throw fail('target is required');
  const protocol = p.protocol ?? 'tcp';
  if (typeof protocol !== 'string') throw fail('protocol must be tcp or udp');
  const parts = [p.host_ip, p.published, target].map((x) => (x === undefined || x === null ? undefined : String(x)));
  const [hostIp, published] = parts;
  const spec = `${hostIp !== undefined ? `${hostIp.includes(':') ? `[${hostIp}]` : hostIp}:${published ?? ''}:` : published !== undefined ? `${published}:` : ''}${String(target)}${protocol === 'tcp' ? '' : `/${protocol}`}`;
  const port = parsePort(spec);
  if (typeof port === 'string') throw fail(port);
  return spec;
}

// --- volumes -----------------------------------------------------------------------------------

const BIND_HINT = 'use a named volume, or the io.balena.features.* labels for host access';

/** The volume strings (long syntax as short) and the tmpfs mounts declared with the long syntax. */
function parseVolumes(v: unknown, f: Field): [unknown, string[]] {
  if (!Array.isArray(v)) return [v, []]; // the shared rules say what is wrong
  const tmpfs: string[] = [];
  const volumes: unknown[] = [];
  v.forEach((item, i) => {
    if (isRecord(item)) {
      const mount = longVolume(item, f, i);
      (mount.tmpfs ? tmpfs : volumes).push(mount.spec);
    } else {
      volumes.push(item);
    }
  });
  return [volumes, tmpfs];
}

/** A named volume (`name:/path`) must be one of the project's volumes. */
function checkDeclared(spec: string, f: Field, i: number): void {
  const [source = '', target] = spec.split(':');
  if (target !== undefined && !(source in f.ctx.volumes)) {
    throw f.fail(`volume '${source}' used by service '${f.service}' is not declared in the top-level volumes`, `add '${source}:' under the top-level volumes key`, [i]);
  }
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
  return { spec: `${source}:${target}${readOnly ? ':ro' : ''}`, tmpfs: false };
}

// --- networks and dependencies -----------------------------------------------------------------

function checkNetwork(name: string, f: Field, sub: Path): void {
  if (name !== 'default' && !(name in f.ctx.networks)) {
    throw f.fail(`network '${name}' used by service '${f.service}' is not declared in the top-level networks`, `add '${name}:' under the top-level networks key`, sub);
  }
}

/** Checks the services named exist; warns about the conditions a device treats as service_started. */
function dependsOn(v: unknown, f: Field): void {
  const check = (name: string, sub: Path): void => {
    if (!f.ctx.serviceNames.has(name)) throw f.fail(`service '${f.service}' depends on unknown service '${name}'`, undefined, sub);
    if (name === f.service) throw f.fail(`service '${f.service}' depends on itself`, undefined, sub);
  };
  if (Array.isArray(v)) {
    v.forEach((name, i) => check(String(name), [i]));
    return;
  }
  for (const [name, settings] of Object.entries(v as Record<string, unknown>)) {
    check(name, [name]);
    const condition = isRecord(settings) ? settings.condition : undefined;
    if (condition === 'service_healthy' || condition === 'service_completed_successfully') {
      f.ctx.at.warn([...f.path, name, 'condition'], `devices only wait for '${name}' to start (condition ${condition} is treated as service_started)`);
    } else if (condition !== undefined && condition !== 'service_started') {
      throw f.fail(`unknown depends_on condition '${String(condition)}'`, 'use service_started', [name, 'condition']);
    }
  }
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
