/**
 * One service's container settings, end to end: the compose-shaped JSON a release carries
 * ({@link ServiceJson}: what compose.ts produces, what `skiff push` and balena-cli's `balena push`
 * post to the device) and the typed {@link ServiceConfig} the agent turns into a container. One
 * parser ({@link parseServiceConfig}) converts the first into the second; the project model checks
 * each key with the same rules ({@link checkServiceKey}), so what `skiff build` accepts the device
 * runs, and what the device cannot honour is refused by both, naming the key.
 */
import {
  durationSeconds, exposeProblem, extraHost, parsePort, sizeBytes, type Problem,
} from './values.js';

// ---------------------------------------------------------------------------------------------
// The wire shape

/** A service's healthcheck as compose writes it. */
export interface HealthcheckJson {
  test?: string | string[];
  interval?: string | number;
  timeout?: string | number;
  start_period?: string | number;
  retries?: number;
  disable?: boolean;
}

/**
 * A service as a release carries it: compose's keys in snake_case, after the project model's
 * normalisation (maps for environment/labels/sysctls, lists for ports/dns/extra_hosts, sizes and
 * durations as compose wrote them). balena-cli posts the same keys, sometimes in compose's other
 * forms (a string for dns, a list for sysctls): {@link parseServiceConfig} reads both.
 */
export interface ServiceJson {
  image?: string;
  command?: string | string[];
  entrypoint?: string | string[];
  environment?: Record<string, string>;
  labels?: Record<string, string>;
  /** `[ip:][published:]target[/protocol]`; without `published` the same port on the host. */
  ports?: string[];
  /** `port[/protocol]`: exposed to the service's networks, not published. */
  expose?: string[];
  /** `name:/path[:ro]` (a named volume) or `/path` (anonymous). */
  volumes?: string[];
  /** `/path[:options]`, e.g. `/run:size=64m`. */
  tmpfs?: string[];
  /** One network: a name, or a name with its settings (aliases). */
  networks?: string[] | Record<string, { aliases?: string[] }>;
  network_mode?: string;
  restart?: string;
  privileged?: boolean;
  cap_add?: string[];
  cap_drop?: string[];
  /** `/dev/host[:/dev/container[:rwm]]`. */
  devices?: string[];
  /** cgroup device rules such as `c 188:* rmw`. */
  device_cgroup_rules?: string[];
  depends_on?: string[];
  healthcheck?: HealthcheckJson;
  stop_signal?: string;
  stop_grace_period?: string | number;
  working_dir?: string;
  user?: string;
  hostname?: string;
  domainname?: string;
  mac_address?: string;
  sysctls?: Record<string, string>;
  ulimits?: Record<string, number | { soft: number; hard: number }>;
  /** Sizes: a number of bytes or text such as `64m`. */
  shm_size?: string | number;
  mem_limit?: string | number;
  mem_reservation?: string | number;
  cpu_shares?: number;
  /** Microseconds of CPU time per 100 ms period. */
  cpu_quota?: number;
  cpuset?: string;
  /** CPUs, e.g. 0.5. */
  cpus?: number;
  pids_limit?: number;
  cgroup_parent?: string;
  dns?: string[];
  dns_search?: string[];
  dns_opt?: string[];
  /** `host:ip`. */
  extra_hosts?: string[];
  read_only?: boolean;
  security_opt?: string[];
  ipc?: string;
  pid?: string;
  init?: boolean;
  oom_kill_disable?: boolean;
  oom_score_adj?: number;
  stdin_open?: boolean;
  tty?: boolean;
  group_add?: string[];
  logging?: { driver?: string; options?: Record<string, string> };
  runtime?: string;
  userns_mode?: string;
}

/** A service key a release may carry. */
export type ServiceKey = keyof ServiceJson;

// ---------------------------------------------------------------------------------------------
// The typed model

/** The engine's healthcheck, durations in seconds. `test: ['NONE']` disables the image's own; no test keeps it. */
export interface Healthcheck {
  test?: string[];
  intervalSeconds?: number;
  timeoutSeconds?: number;
  retries?: number;
  startPeriodSeconds?: number;
}

/**
 * A service's container settings: every compose key the device honours, typed, with units in the
 * names. Optional fields are absent when the release does not set them (the engine's default).
 */
export interface ServiceConfig {
  image: string;
  command?: string[];
  entrypoint?: string[];
  environment: Record<string, string>;
  labels: Record<string, string>;
  /** `[ip:][published:]target[/proto]` strings, checked by {@link parsePort}. */
  ports: string[];
  /** `port[/proto]` (ranges allowed). */
  expose?: string[];
  /** `name:/path[:ro]` (named volumes) or `/path` (anonymous). */
  volumes: string[];
  /** `/path[:options]`. */
  tmpfs: string[];
  /** At most one network (the engine attaches a container to one network when it creates it). */
  networks: string[];
  /** More names the service answers to on its network (its own name always). */
  networkAliases?: string[];
  /** Absent: the app's network (`networks`, else `default`). */
  networkMode?: 'host' | 'bridge' | 'none';
  restart: string;
  privileged: boolean;
  capAdd: string[];
  capDrop: string[];
  devices: string[];
  deviceCgroupRules?: string[];
  dependsOn: string[];
  workingDir?: string;
  user?: string;
  hostname?: string;
  domainname?: string;
  macAddress?: string;
  stopSignal?: string;
  stopGracePeriodSeconds?: number;
  healthcheck?: Healthcheck;
  sysctls?: Record<string, string>;
  ulimits?: Record<string, { soft: number; hard: number }>;
  shmSizeBytes?: number;
  memLimitBytes?: number;
  memReservationBytes?: number;
  cpuShares?: number;
  /** Microseconds per (the engine's default 100 ms) period. */
  cpuQuotaMicroseconds?: number;
  /** CPUs the service may use, e.g. `0-1,3`. */
  cpuset?: string;
  /** CPU limit in billionths of a CPU (`cpus: 0.5` → 500000000), the engine's unit. */
  nanoCpus?: number;
  /** Most processes; -1 for no limit. */
  pidsLimit?: number;
  cgroupParent?: string;
  dns?: string[];
  dnsSearch?: string[];
  dnsOptions?: string[];
  /** `host:ip`. */
  extraHosts?: string[];
  readOnly?: boolean;
  securityOpt?: string[];
  ipc?: 'host' | 'private' | 'shareable' | 'none';
  pid?: 'host';
  init?: boolean;
  oomKillDisable?: boolean;
  oomScoreAdj?: number;
  stdinOpen?: boolean;
  tty?: boolean;
  groupAdd?: string[];
  logging?: { driver?: string; options: Record<string, string> };
  runtime?: string;
  usernsMode?: 'host';
}

// ---------------------------------------------------------------------------------------------
// Errors and refused keys

/**
 * A service setting that is wrong or cannot be honoured. `key` is the compose key, `path` the
 * place inside its value (a list index, a map key) so the project model can point at the line.
 */
export class ServiceConfigError extends Error {
  override readonly name = 'ServiceConfigError';

  constructor(readonly key: string, readonly path: ReadonlyArray<string | number>, message: string, readonly hint?: string) {
    super(message);
  }
}

// Keys a device cannot honour, each with what to do instead. Refusing beats shipping a release
// that behaves differently on the device than under docker compose.
const NOT_APPLIED = 'remove it; the device supervisor does not apply it';

/** Compose service keys a device refuses, with what to do instead (compose.ts and the agent both refuse them). */
export const REFUSED_SERVICE_KEYS: Readonly<Record<string, string>> = {
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
  blkio_config: NOT_APPLIED,
  cpu_count: NOT_APPLIED,
  cpu_percent: NOT_APPLIED,
  cpu_period: 'remove it; the device uses the engine\'s 100 ms period (set cpus, or cpu_quota per 100 ms)',
  cpu_rt_period: NOT_APPLIED,
  cpu_rt_runtime: NOT_APPLIED,
  memswap_limit: NOT_APPLIED,
  mem_swappiness: NOT_APPLIED,
  storage_opt: NOT_APPLIED,
  cgroup: NOT_APPLIED,
  uts: NOT_APPLIED,
  attach: NOT_APPLIED,
  annotations: NOT_APPLIED,
  label_file: 'the device never sees the file; list the labels under labels instead',
  develop: NOT_APPLIED,
  post_start: NOT_APPLIED,
  pre_stop: NOT_APPLIED,
  use_api_socket: 'use the io.balena.features.balena-socket label instead',
};

// ---------------------------------------------------------------------------------------------
// Per-key rules

/** The key being read and its service. `label` names a part of the key's value in messages (`healthcheck.interval`). */
export interface FieldContext {
  key: string;
  service: string;
  label?: string;
}

type Path = ReadonlyArray<string | number>;

function fail(f: FieldContext, message: string, hint?: string, path: Path = []): never {
  throw new ServiceConfigError(f.key, path, message, hint);
}

const what = (f: FieldContext) => `'${f.label ?? f.key}' in service '${f.service}'`;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: unknown, f: FieldContext, path: Path = []): string {
  if (typeof v !== 'string') fail(f, `${what(f)} must be a string`, undefined, path);
  return v;
}

/** Numbers and booleans become their text (YAML reads `user: 1000` as a number). */
function scalar(v: unknown, f: FieldContext, path: Path = []): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return fail(f, `${what(f)} must be a string`, undefined, path);
}

function bool(v: unknown, f: FieldContext): boolean {
  if (typeof v === 'boolean') return v;
  return fail(f, `${what(f)} must be true or false`, typeof v === 'string' ? `write ${f.key}: true or ${f.key}: false (YAML 1.2 reads '${v}' as text)` : undefined);
}

function int(v: unknown, f: FieldContext, min: number, max: number, range: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) return fail(f, `${what(f)} must be a whole number`);
  if (v < min || v > max) return fail(f, `${what(f)} must be ${range}`);
  return v;
}

function bytes(v: unknown, f: FieldContext): number {
  const n = sizeBytes(v);
  return typeof n === 'number' ? n : fail(f, `${what(f)} ${n}`);
}

function seconds(v: unknown, f: FieldContext, path: Path = []): number {
  const n = durationSeconds(v);
  return typeof n === 'number' ? n : fail(f, `${what(f)} ${n}`, undefined, path);
}

function list<T>(v: unknown, f: FieldContext, each: (item: unknown, i: number) => T): T[] {
  if (!Array.isArray(v)) return fail(f, `${what(f)} must be a list`);
  return v.map(each);
}

function strings(v: unknown, f: FieldContext, check?: (s: string) => Problem | undefined): string[] {
  return list(v, f, (item, i) => {
    const s = str(item, f, [i]);
    const problem = check?.(s);
    if (problem !== undefined) fail(f, `invalid ${f.key} entry '${s}' in service '${f.service}': ${problem}`, undefined, [i]);
    return s;
  });
}

function stringOrList(v: unknown, f: FieldContext): string[] {
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v)) return fail(f, `${what(f)} must be a string or a list of strings`);
  return strings(v, f);
}

/**
 * A list of `NAME=value` (or bare `NAME`) or a mapping → a string map. Null and bare names become
 * '': the device has no shell environment to take the value from.
 */
export function stringMap(v: unknown, f: FieldContext, options: { namesRequired?: boolean; at?: Path } = {}): Record<string, string> {
  const out: Record<string, string> = {};
  const at = options.at ?? [];
  if (Array.isArray(v)) {
    v.forEach((item, i) => {
      if (typeof item !== 'string') fail(f, `${what(f)}: list items must be strings of the form NAME=value`, undefined, [...at, i]);
      const eq = item.indexOf('=');
      const name = eq < 0 ? item : item.slice(0, eq);
      if (!name.trim()) fail(f, `${what(f)}: '${item}' has no name before '='`, undefined, [...at, i]);
      out[name] = eq < 0 ? '' : item.slice(eq + 1);
    });
    return out;
  }
  if (!isRecord(v)) return fail(f, `${what(f)} must be a mapping or a list of NAME=value`, undefined, at);
  for (const [name, value] of Object.entries(v)) {
    if (options.namesRequired && !name.trim()) fail(f, `${what(f)}: empty variable name`, undefined, at);
    if (value === null || value === undefined) out[name] = '';
    else if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') out[name] = String(value);
    else fail(f, `${what(f)}: the value of '${name}' must be a string, number or boolean`, undefined, [...at, name]);
  }
  return out;
}

/** A string runs through `/bin/sh -c`; a list is the exact argv. */
function commandList(v: unknown, f: FieldContext): string[] {
  if (typeof v === 'string') return ['/bin/sh', '-c', v];
  if (Array.isArray(v)) return v.map((item, i) => scalar(item, f, [i]));
  return fail(f, `${what(f)} must be a string or a list`);
}

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const RESTART_RE = /^(no|always|unless-stopped|on-failure(:\d+)?)$/;
const BIND_HINT = 'use a named volume, or the io.balena.features.* labels for host access';

function volume(s: string, f: FieldContext, i: number): string {
  const parts = s.split(':');
  const [source = '', target = '', mode] = parts;
  if (parts.length === 1) {
    if (!source.startsWith('/')) fail(f, `volume '${s}' in service '${f.service}' needs a target path`, 'write name:/path/in/container', [i]);
    return s;
  }
  if (/^[/.~]/.test(source)) fail(f, `bind mounts are not supported on devices: '${s}'`, BIND_HINT, [i]);
  if (parts.length > 3) fail(f, `invalid volume '${s}' in service '${f.service}'`, 'write name:/path[:ro]', [i]);
  if (mode !== undefined && mode !== 'ro' && mode !== 'rw') fail(f, `invalid volume mode '${mode}' in '${s}'`, 'use ro or rw', [i]);
  if (!NAME_RE.test(source)) fail(f, `invalid volume name '${source}' in '${s}'`, 'use letters, digits, "_", "." and "-"', [i]);
  if (!target.startsWith('/')) fail(f, `the target of volume '${s}' must be an absolute path`, undefined, [i]);
  return mode === 'ro' ? `${source}:${target}:ro` : `${source}:${target}`;
}

function networks(v: unknown, f: FieldContext): Pick<ServiceConfig, 'networks' | 'networkAliases'> {
  let names: string[];
  let aliases: string[] = [];
  if (Array.isArray(v)) names = strings(v, f);
  else if (isRecord(v)) {
    names = Object.keys(v);
    for (const [name, settings] of Object.entries(v)) {
      if (settings === null || settings === undefined) continue;
      if (!isRecord(settings)) fail(f, `the settings of network '${name}' in service '${f.service}' must be a mapping`, undefined, [name]);
      for (const [key, value] of Object.entries(settings)) {
        if (key !== 'aliases') {
          fail(f, `network setting '${key}' of service '${f.service}' is not supported on devices`, 'the device assigns addresses itself; only aliases can be set', [name, key]);
        }
        aliases = list(value, { ...f, label: 'aliases' }, (a, i) => {
          const alias = str(a, f, [name, key, i]);
          if (!NAME_RE.test(alias)) fail(f, `invalid alias '${alias}' in service '${f.service}'`, undefined, [name, key, i]);
          return alias;
        });
      }
    }
  } else return fail(f, `'networks' in service '${f.service}' must be a list of names or a mapping`);
  if (names.length > 1) {
    fail(f, `service '${f.service}' joins ${names.length} networks; a device attaches each service to one`, 'put the services that talk to each other on one network', [1]);
  }
  return { networks: names, ...(aliases.length ? { networkAliases: aliases } : {}) };
}

function networkMode(v: unknown, f: FieldContext): NonNullable<ServiceConfig['networkMode']> {
  const mode = str(v, f);
  if (mode === 'host' || mode === 'bridge' || mode === 'none') return mode;
  if (mode.startsWith('service:') || mode.startsWith('container:')) {
    return fail(f, `network_mode '${mode}' is not supported on devices`, 'put both services on one network and reach the other by its service name');
  }
  return fail(f, `network_mode '${mode}' is not supported on devices`, 'use host, bridge or none, or list the network under networks');
}

function dependsOn(v: unknown, f: FieldContext): string[] {
  if (Array.isArray(v)) return strings(v, f);
  if (isRecord(v)) return Object.keys(v); // conditions: compose.ts warns about the ones a device treats as service_started
  return fail(f, `'depends_on' in service '${f.service}' must be a list of service names or a mapping`);
}

const HEALTHCHECK_KEYS = ['test', 'interval', 'timeout', 'start_period', 'retries', 'disable'];

function healthcheck(v: unknown, f: FieldContext): Healthcheck {
  if (!isRecord(v)) return fail(f, `${what(f)} must be a mapping`);
  for (const key of Object.keys(v)) {
    if (!HEALTHCHECK_KEYS.includes(key)) {
      fail(f, `healthcheck.${key} in service '${f.service}' is not supported on devices`, key === 'start_interval' ? 'the device engine (API 1.41) has no start interval; remove it' : `use ${HEALTHCHECK_KEYS.join(', ')}`, [key]);
    }
  }
  if (v.disable !== undefined && typeof v.disable !== 'boolean') fail(f, `healthcheck disable in service '${f.service}' must be true or false`, undefined, ['disable']);
  if (v.disable === true) return { test: ['NONE'] };
  const test = v.test === undefined ? undefined
    : typeof v.test === 'string' ? ['CMD-SHELL', v.test]
      : Array.isArray(v.test) && v.test.every((t) => typeof t === 'string') ? v.test as string[]
        : fail(f, `healthcheck test in service '${f.service}' must be a string or a list of strings`, undefined, ['test']);
  const sub = (key: string): FieldContext => ({ ...f, label: `healthcheck.${key}` });
  const time = (key: string) => (v[key] === undefined ? undefined : seconds(v[key], sub(key), [key]));
  if (v.retries !== undefined && (typeof v.retries !== 'number' || !Number.isInteger(v.retries) || v.retries < 0)) {
    fail(f, `healthcheck retries in service '${f.service}' must be a whole number`, undefined, ['retries']);
  }
  return {
    ...(test !== undefined ? { test } : {}),
    ...(time('interval') !== undefined ? { intervalSeconds: time('interval') } : {}),
    ...(time('timeout') !== undefined ? { timeoutSeconds: time('timeout') } : {}),
    ...(v.retries !== undefined ? { retries: v.retries as number } : {}),
    ...(time('start_period') !== undefined ? { startPeriodSeconds: time('start_period') } : {}),
  };
}

function ulimits(v: unknown, f: FieldContext): Record<string, { soft: number; hard: number }> {
  if (!isRecord(v)) return fail(f, `${what(f)} must be a mapping`);
  const out: Record<string, { soft: number; hard: number }> = {};
  for (const [name, limit] of Object.entries(v)) {
    const pair = typeof limit === 'number' ? { soft: limit, hard: limit } : isRecord(limit) ? { soft: limit.soft, hard: limit.hard } : undefined;
    if (!pair || !Number.isInteger(pair.soft) || !Number.isInteger(pair.hard)) {
      fail(f, `ulimit '${name}' in service '${f.service}' must be a number or { soft, hard }`, undefined, [name]);
    }
    if (!/^[a-z]+$/.test(name)) fail(f, `unknown ulimit '${name}' in service '${f.service}'`, 'use a name such as nofile, nproc or memlock', [name]);
    const soft = pair.soft as number;
    const hard = pair.hard as number;
    if (soft > hard) fail(f, `ulimit '${name}' in service '${f.service}': soft ${soft} is above hard ${hard}`, undefined, [name]);
    out[name] = { soft, hard };
  }
  return out;
}

function sysctls(v: unknown, f: FieldContext): Record<string, string> {
  const map = stringMap(v, f);
  for (const name of Object.keys(map)) {
    if (!/^[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+$/.test(name)) fail(f, `'${name}' in service '${f.service}' is not a sysctl name`, 'write a dotted name such as net.core.somaxconn', Array.isArray(v) ? [] : [name]);
  }
  return map;
}

function logging(v: unknown, f: FieldContext): NonNullable<ServiceConfig['logging']> {
  if (!isRecord(v)) return fail(f, `${what(f)} must be a mapping`);
  for (const key of Object.keys(v)) if (key !== 'driver' && key !== 'options') fail(f, `logging.${key} in service '${f.service}' is not supported`, 'use driver and options', [key]);
  const driver = v.driver === undefined ? undefined : str(v.driver, f, ['driver']);
  const options = v.options === undefined || v.options === null ? {} : stringMap(v.options, { ...f, label: 'logging.options' }, { at: ['options'] });
  return { ...(driver !== undefined ? { driver } : {}), options };
}

function cpus(v: unknown, f: FieldContext): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) return fail(f, `'cpus' in service '${f.service}' must be a number such as 0.5`);
  return Math.round(n * 1e9);
}

const oneOf = <T extends string>(values: readonly T[], hint: string) => (v: unknown, f: FieldContext): T => {
  const s = str(v, f);
  if (!(values as readonly string[]).includes(s)) return fail(f, `${f.key} '${s}' in service '${f.service}' is not supported on devices`, hint);
  return s as T;
};

const matching = (re: RegExp, example: string) => (v: unknown, f: FieldContext): string => {
  const s = scalar(v, f);
  if (!re.test(s)) return fail(f, `${what(f)} must look like ${example}`);
  return s;
};

const devicePath = (s: string): Problem | undefined => {
  const [host = '', container, perms] = s.split(':');
  if (!host.startsWith('/')) return 'the host path must be absolute';
  if (container !== undefined && !container.startsWith('/') && !/^[rwm]+$/.test(container)) return 'the container path must be absolute';
  if (perms !== undefined && !/^[rwm]+$/.test(perms)) return `permissions '${perms}' must be letters of rwm`;
  return undefined;
};

/** Reads one key of a service into the fields of {@link ServiceConfig} it sets. */
type FieldRule = (value: unknown, f: FieldContext) => Partial<ServiceConfig>;

/**
 * Every key a release may carry, and what it becomes. Keys not here are refused, never carried:
 * `satisfies` makes a new {@link ServiceJson} key a compile error until it has a rule.
 */
const FIELD_RULES = {
  image: (v, f) => {
    const image = str(v, f);
    if (!image.trim() || /\s/.test(image)) fail(f, `invalid image name '${image}' in service '${f.service}'`);
    return { image };
  },
  command: (v, f) => ({ command: commandList(v, f) }),
  entrypoint: (v, f) => ({ entrypoint: commandList(v, f) }),
  environment: (v, f) => ({ environment: stringMap(v, f, { namesRequired: true }) }),
  labels: (v, f) => ({ labels: stringMap(v, f) }),
  ports: (v, f) => ({
    ports: list(v, f, (item, i) => {
      const spec = typeof item === 'number' ? String(item) : item;
      if (typeof spec !== 'string') return fail(f, `ports of service '${f.service}' must be strings such as "8080:80"`, undefined, [i]);
      const port = parsePort(spec);
      if (typeof port === 'string') fail(f, `invalid port '${spec}' in service '${f.service}': ${port}`, 'use [host_ip:][published:]target[/tcp|udp], ports 1-65535', [i]);
      return spec;
    }),
  }),
  expose: (v, f) => ({
    expose: list(v, f, (item, i) => {
      const spec = typeof item === 'number' ? String(item) : item;
      if (typeof spec !== 'string') return fail(f, `expose of service '${f.service}' must list ports`, undefined, [i]);
      const problem = exposeProblem(spec);
      if (problem) fail(f, `invalid exposed port '${spec}' in service '${f.service}': ${problem}`, 'use port[/tcp|udp], ports 1-65535', [i]);
      return spec;
    }),
  }),
  volumes: (v, f) => ({
    volumes: list(v, f, (item, i) => {
      if (typeof item !== 'string') return fail(f, `volumes of service '${f.service}' must be strings such as data:/data`, undefined, [i]);
      return volume(item, f, i);
    }),
  }),
  tmpfs: (v, f) => ({
    tmpfs: stringOrList(v, f).map((m, i) => {
      if (!m.startsWith('/')) fail(f, `tmpfs mount '${m}' in service '${f.service}' must be an absolute path`, undefined, Array.isArray(v) ? [i] : []);
      return m;
    }),
  }),
  networks: networks,
  network_mode: (v, f) => ({ networkMode: networkMode(v, f) }),
  restart: (v, f) => {
    const restart = str(v, f);
    if (!RESTART_RE.test(restart)) fail(f, `invalid restart policy '${restart}' in service '${f.service}'`, 'use no, always, on-failure[:N] or unless-stopped');
    return { restart };
  },
  privileged: (v, f) => ({ privileged: bool(v, f) }),
  cap_add: (v, f) => ({ capAdd: strings(v, f) }),
  cap_drop: (v, f) => ({ capDrop: strings(v, f) }),
  devices: (v, f) => ({ devices: strings(v, f, devicePath) }),
  device_cgroup_rules: (v, f) => ({ deviceCgroupRules: strings(v, f, (s) => (/^[abc] (\d+|\*):(\d+|\*) [rwm]{1,3}$/.test(s) ? undefined : "write a rule such as 'c 188:* rmw'")) }),
  depends_on: (v, f) => ({ dependsOn: dependsOn(v, f) }),
  healthcheck: (v, f) => ({ healthcheck: healthcheck(v, f) }),
  stop_signal: (v, f) => ({ stopSignal: matching(/^(SIG[A-Z0-9+]+|\d+)$/, 'SIGTERM')(v, f) }),
  stop_grace_period: (v, f) => ({ stopGracePeriodSeconds: seconds(v, f) }),
  working_dir: (v, f) => ({ workingDir: matching(/^\//, '/app (an absolute path)')(v, f) }),
  user: (v, f) => ({ user: scalar(v, f) }),
  hostname: (v, f) => ({ hostname: matching(/^[a-zA-Z0-9][a-zA-Z0-9.-]*$/, 'a host name such as box')(v, f) }),
  domainname: (v, f) => ({ domainname: matching(/^[a-zA-Z0-9][a-zA-Z0-9.-]*$/, 'a domain such as example.org')(v, f) }),
  mac_address: (v, f) => ({ macAddress: matching(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, '02:42:ac:11:00:02')(v, f) }),
  sysctls: (v, f) => ({ sysctls: sysctls(v, f) }),
  ulimits: (v, f) => ({ ulimits: ulimits(v, f) }),
  shm_size: (v, f) => ({ shmSizeBytes: bytes(v, f) }),
  mem_limit: (v, f) => {
    const n = bytes(v, f);
    // The engine's own floor; below it the container would not be created.
    if (n > 0 && n < 6 * 1024 ** 2) fail(f, `${what(f)} must be at least 6m`);
    return { memLimitBytes: n };
  },
  mem_reservation: (v, f) => ({ memReservationBytes: bytes(v, f) }),
  cpu_shares: (v, f) => ({ cpuShares: int(v, f, 2, 262144, 'between 2 and 262144') }),
  cpu_quota: (v, f) => ({ cpuQuotaMicroseconds: int(v, f, 1000, Number.MAX_SAFE_INTEGER, 'at least 1000 (1 ms)') }),
  cpuset: (v, f) => ({ cpuset: matching(/^\d+(-\d+)?(,\d+(-\d+)?)*$/, '0-1,3')(v, f) }),
  cpus: (v, f) => ({ nanoCpus: cpus(v, f) }),
  pids_limit: (v, f) => ({ pidsLimit: int(v, f, -1, Number.MAX_SAFE_INTEGER, '-1 (no limit) or more') }),
  cgroup_parent: (v, f) => ({ cgroupParent: str(v, f) }),
  dns: (v, f) => ({ dns: stringOrList(v, f) }),
  dns_search: (v, f) => ({ dnsSearch: stringOrList(v, f) }),
  dns_opt: (v, f) => ({ dnsOptions: strings(v, f) }),
  extra_hosts: (v, f) => {
    // compose writes a mapping (host: ip) or a list (host:ip or host=ip); the engine wants host:ip.
    const entries: Array<[string, Path]> = isRecord(v)
      ? Object.entries(v).map(([host, ip]) => [`${host}:${scalar(ip, f, [host])}`, [host]])
      : strings(v, f).map((e, i) => [e, [i]]);
    return {
      extraHosts: entries.map(([entry, path]) => {
        const host = extraHost(entry);
        return typeof host === 'string' ? host : fail(f, `invalid extra_hosts entry in service '${f.service}': ${host.problem}`, 'write host:ip', path);
      }),
    };
  },
  read_only: (v, f) => ({ readOnly: bool(v, f) }),
  security_opt: (v, f) => ({ securityOpt: strings(v, f) }),
  ipc: (v, f) => ({ ipc: oneOf(['host', 'private', 'shareable', 'none'] as const, 'use host, private, shareable or none')(v, f) }),
  pid: (v, f) => ({ pid: oneOf(['host'] as const, 'use pid: host, or remove it')(v, f) }),
  init: (v, f) => ({ init: bool(v, f) }),
  oom_kill_disable: (v, f) => ({ oomKillDisable: bool(v, f) }),
  oom_score_adj: (v, f) => ({ oomScoreAdj: int(v, f, -1000, 1000, 'between -1000 and 1000') }),
  stdin_open: (v, f) => ({ stdinOpen: bool(v, f) }),
  tty: (v, f) => ({ tty: bool(v, f) }),
  group_add: (v, f) => ({ groupAdd: list(v, f, (item, i) => scalar(item, f, [i])) }),
  logging: (v, f) => ({ logging: logging(v, f) }),
  runtime: (v, f) => ({ runtime: str(v, f) }),
  userns_mode: (v, f) => ({ usernsMode: oneOf(['host'] as const, 'use userns_mode: host, or remove it')(v, f) }),
} satisfies { [K in ServiceKey]-?: FieldRule };

/** Every key a release may carry. */
export const SERVICE_KEYS = Object.keys(FIELD_RULES) as ServiceKey[];

/** Whether a release may carry `key` (compose's snake_case name). */
export function isServiceKey(key: string): key is ServiceKey {
  return Object.hasOwn(FIELD_RULES, key);
}

/**
 * Checks one key's value as the device will read it.
 *
 * @returns the fields of {@link ServiceConfig} it sets
 * @throws ServiceConfigError naming the key (and the place in its value), or for a refused key
 */
export function checkServiceKey(key: string, value: unknown, service: string): Partial<ServiceConfig> {
  const f = { key, service };
  const refused = REFUSED_SERVICE_KEYS[key];
  if (refused !== undefined) fail(f, `'${key}' in service '${service}' is not supported on devices`, refused);
  if (!isServiceKey(key)) return fail(f, `unknown key '${key}' in service '${service}'`, 'remove it; a device honours every key it accepts, and refuses the others');
  return FIELD_RULES[key](value, f);
}

/** A service with nothing set: what each absent key means. */
export function emptyServiceConfig(): ServiceConfig {
  return {
    image: '', environment: {}, labels: {}, ports: [], volumes: [], tmpfs: [], networks: [], restart: 'always',
    privileged: false, capAdd: [], capDrop: [], devices: [], dependsOn: [],
  };
}

/**
 * Settings the engine would refuse together, or that would do nothing.
 *
 * @throws ServiceConfigError naming the key to change
 */
export function checkServiceCombination(c: ServiceConfig, service: string): void {
  const f = (key: string) => ({ key, service });
  if (c.nanoCpus !== undefined && c.cpuQuotaMicroseconds !== undefined) {
    fail(f('cpu_quota'), `service '${service}' sets both cpus and cpu_quota`, 'keep one of them (cpus: 0.5 is cpu_quota: 50000)');
  }
  if (c.memLimitBytes && c.memReservationBytes && c.memReservationBytes > c.memLimitBytes) {
    fail(f('mem_reservation'), `mem_reservation of service '${service}' is above its mem_limit`, 'the reservation is a soft limit below mem_limit');
  }
  if (c.networkMode !== undefined && c.networks.length > 0) fail(f('network_mode'), `service '${service}' sets both network_mode and networks`, 'keep one of them');
  if (c.networkMode === 'host' && c.sysctls && Object.keys(c.sysctls).some((k) => k.startsWith('net.'))) {
    fail(f('sysctls'), `service '${service}' sets net.* sysctls but uses the host's network`, 'set them on the device, or give the service its own network');
  }
}

/**
 * Parses a service's compose-shaped JSON (as a release or balena-cli's target state carries it)
 * into the typed model. `meta` names keys the caller reads itself (serviceName, serviceId, …) and
 * `x-` keys are compose's own extensions: both are skipped. Every other key is either honoured
 * or refused.
 *
 * @example parseServiceConfig({ image: 'web', mem_limit: '64m' }, 'web').memLimitBytes // 67108864
 * @throws ServiceConfigError naming the first key that is wrong, refused or unknown
 */
export function parseServiceConfig(json: Record<string, unknown>, service: string, meta: ReadonlySet<string> = new Set()): ServiceConfig {
  const config = emptyServiceConfig();
  for (const [key, value] of Object.entries(json)) {
    if (meta.has(key) || key.startsWith('x-') || value === undefined || value === null) continue;
    Object.assign(config, checkServiceKey(key, value, service));
  }
  if (!config.image) fail({ key: 'image', service }, `service '${service}' needs an image`);
  checkServiceCombination(config, service);
  return config;
}
