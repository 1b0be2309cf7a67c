/**
 * A small Docker Engine API client over node:http, for the device agent: exactly the calls the
 * agent makes, no dependencies. dockerode (which the CLI keeps for builds, pushes, logs and ssh)
 * loads ssh2, gRPC and protobuf when it is imported, for transports the agent never uses: without
 * it the idle agent is about 13 MB smaller (bench/agent-footprint.mjs).
 *
 * Method names and shapes follow dockerode's, so agent code reads the same; errors carry the HTTP
 * `statusCode` and the engine's own message (a 304 from start/stop means "already so").
 *
 * @example
 * const engine = await connectLiteEngine({});
 * const running = await engine.docker.listContainers({ filters: { label: ['io.skiff.agent=abc'] } });
 * await engine.docker.getContainer(running[0].Id).stop();
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import process from 'node:process';
import { StringDecoder } from 'node:string_decoder';
import { Transform, pipeline, type Readable } from 'node:stream';
import { connectionOptions, probeEngine, type ConnectionOptions, type EngineFacts, type EngineFlags } from './engine.js';

/** The engine's list filters, e.g. `{ label: ['io.skiff.agent=abc'] }`. */
export type Filters = Record<string, string[]>;

type Labels = Record<string, string>;

/** An answer other than 2xx from the engine. `message` is the engine's own words. */
export class EngineError extends Error {
  override readonly name = 'EngineError';

  constructor(readonly statusCode: number, message: string) {
    super(message);
  }
}

export interface ContainerSummary {
  Id: string;
  Names: string[];
  Image: string;
  ImageID: string;
  /** Seconds since the epoch. */
  Created: number;
  State: string;
  Status: string;
  Labels: Labels;
}

export interface ContainerInspect {
  Id: string;
  Name: string;
  /** The engine's image id (sha256:...). */
  Image: string;
  /** RFC 3339. */
  Created: string;
  State: {
    Status: string;
    Running: boolean;
    ExitCode: number;
    StartedAt: string;
    FinishedAt: string;
    Health?: { Status: string };
  };
  Config: { Image: string; Tty: boolean; Labels: Labels | null };
  HostConfig?: { NetworkMode?: string };
  NetworkSettings?: { IPAddress?: string; Networks?: Record<string, { IPAddress?: string }> | null };
}

export interface ImageSummary {
  Id: string;
  RepoTags: string[] | null;
  Labels: Labels | null;
  Created: number;
  Size: number;
}

export interface ImageInspect {
  Id: string;
  RepoTags: string[];
  Architecture: string;
  Os: string;
  Config: { Labels: Labels | null } | null;
  /** The layers' diffIDs, bottom first. */
  RootFS?: { Type: string; Layers?: string[] };
}

export interface VolumeSummary {
  Name: string;
  Driver: string;
  Mountpoint: string;
  Labels: Labels | null;
}

export interface NetworkSummary {
  Id: string;
  Name: string;
  Driver: string;
  Labels: Labels | null;
  IPAM: { Config: Array<{ Subnet?: string; Gateway?: string }> | null };
}

/**
 * A network's IPv4 gateway. The engine leaves `Gateway` out of the default bridge's IPAM config
 * when it made the bridge interface itself (dockerd's first start on a machine: no docker0 with an
 * address yet, so it records only the pool; after a restart it reads the gateway off docker0). Its
 * IPAM gives the bridge the pool's first address all the same, so that is the gateway then.
 * Undefined without an IPv4 subnet or gateway.
 */
export function networkGateway(network: Pick<NetworkSummary, 'IPAM'>): string | undefined {
  const v4 = (network.IPAM.Config ?? []).filter((c) => !(c.Subnet ?? c.Gateway ?? ':').includes(':'));
  const given = v4.find((c) => c.Gateway)?.Gateway;
  if (given) return given;
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(v4.find((c) => c.Subnet)?.Subnet ?? '');
  const bits = Number(m?.[5]);
  if (!m || bits > 30) return undefined;
  const address = m.slice(1, 5).reduce((n, octet) => n * 256 + Number(octet), 0);
  const first = address - (address % 2 ** (32 - bits)) + 1;
  return [24, 16, 8, 0].map((shift) => Math.floor(first / 2 ** shift) % 256).join('.');
}

export interface EngineEvent {
  Type: string;
  Action: string;
  Actor: { ID: string; Attributes: Labels };
  time: number;
  timeNano: number;
}

/** One line of a pull's progress stream. */
export interface PullProgress {
  status?: string;
  id?: string;
  progress?: string;
  /** Bytes of the layer `id` downloaded so far, of `total` (while `status` is `Downloading`). */
  progressDetail?: { current?: number; total?: number };
  error?: string;
  errorDetail?: { message?: string };
}

/** A piece of a container's output. */
export interface LogFrame {
  stream: 'stdout' | 'stderr';
  data: Buffer;
}

export interface LogsOptions {
  follow?: boolean;
  stdout?: boolean;
  stderr?: boolean;
  timestamps?: boolean;
  tail?: number | 'all';
  /** Seconds since the epoch. */
  since?: number;
  /**
   * Whether the container has a TTY (its output is then one raw stream). Engines before API 1.42
   * send both kinds with the same content type, so the caller says (`inspect().Config.Tty`).
   */
  tty: boolean;
}

/** The subset of the engine's container spec the agent sets (`POST /containers/create`, API 1.41). */
export interface ContainerCreateSpec {
  /** The container's name (sent as a query parameter, as the engine wants it). */
  name?: string;
  Image: string;
  Cmd?: string[];
  Entrypoint?: string[];
  Env?: string[];
  Labels?: Labels;
  /** `port/proto` → {}. */
  ExposedPorts?: Record<string, object>;
  WorkingDir?: string;
  User?: string;
  Hostname?: string;
  Domainname?: string;
  /** `02:42:ac:11:00:02`. */
  MacAddress?: string;
  Tty?: boolean;
  OpenStdin?: boolean;
  StopSignal?: string;
  /** Seconds. */
  StopTimeout?: number;
  /** Durations in nanoseconds. */
  Healthcheck?: { Test?: string[]; Interval?: number; Timeout?: number; Retries?: number; StartPeriod?: number };
  HostConfig?: {
    Binds?: string[];
    /** Mount path → mount options (`size=64m`), '' for the defaults. */
    Tmpfs?: Record<string, string>;
    PortBindings?: Record<string, Array<{ HostIp?: string; HostPort: string }>>;
    RestartPolicy?: { Name: string; MaximumRetryCount?: number };
    Privileged?: boolean;
    CapAdd?: string[];
    CapDrop?: string[];
    Devices?: Array<{ PathOnHost: string; PathInContainer: string; CgroupPermissions: string }>;
    DeviceCgroupRules?: string[];
    NetworkMode?: string;
    AutoRemove?: boolean;
    /** Bytes. */
    Memory?: number;
    /** Bytes. */
    MemoryReservation?: number;
    /** Bytes of /dev/shm. */
    ShmSize?: number;
    /** CPU limit in 1e-9 CPUs. */
    NanoCpus?: number;
    /** Relative weight (default 1024). */
    CpuShares?: number;
    /** Microseconds per CPU period. */
    CpuQuota?: number;
    /** `0-1,3`. */
    CpusetCpus?: string;
    /** -1 for no limit. */
    PidsLimit?: number;
    CgroupParent?: string;
    Sysctls?: Record<string, string>;
    Ulimits?: Array<{ Name: string; Soft: number; Hard: number }>;
    Dns?: string[];
    DnsSearch?: string[];
    DnsOptions?: string[];
    /** `host:ip`. */
    ExtraHosts?: string[];
    ReadonlyRootfs?: boolean;
    SecurityOpt?: string[];
    IpcMode?: string;
    PidMode?: string;
    Init?: boolean;
    OomKillDisable?: boolean;
    OomScoreAdj?: number;
    GroupAdd?: string[];
    LogConfig?: { Type: string; Config: Record<string, string> };
    Runtime?: string;
    UsernsMode?: string;
  };
  NetworkingConfig?: { EndpointsConfig: Record<string, { Aliases?: string[] }> };
}

export interface VolumeCreateSpec {
  Name: string;
  Driver?: string;
  Labels?: Labels;
}

export interface NetworkCreateSpec {
  Name: string;
  Driver?: string;
  CheckDuplicate?: boolean;
  Internal?: boolean;
  Labels?: Labels;
}

export interface EngineVersion {
  Version?: string;
  ApiVersion?: string;
  Components?: Array<{ Name?: string }>;
}

export interface EngineInfo {
  Architecture?: string;
  NCPU?: number;
  ServerVersion?: string;
}

/** `POST /containers/{id}/exec` (API 1.41): a process to run in a running container. */
export interface ExecCreateSpec {
  Cmd: string[];
  AttachStdin?: boolean;
  AttachStdout?: boolean;
  AttachStderr?: boolean;
  Tty?: boolean;
  /** `NAME=value`. */
  Env?: string[];
  WorkingDir?: string;
  User?: string;
}

/** `GET /exec/{id}/json`. */
export interface ExecInspect {
  ID: string;
  Running: boolean;
  /** Null until the engine has recorded how the process ended. */
  ExitCode: number | null;
  /** The process's PID in the host's PID namespace (0 once it ended). */
  Pid: number;
  ContainerID: string;
}

export interface ExecHandle {
  readonly id: string;
  /**
   * Starts the process and hands back the engine's hijacked connection (`Upgrade: tcp`): writes
   * are its stdin, `end()` closes its stdin (a TCP half-close); reads are its output, Docker's
   * 8-byte-header frames without a TTY, raw bytes with one. The socket ends when the process's
   * output does.
   */
  start(options: { tty: boolean }): Promise<Socket>;
  /** The TTY's size (characters). */
  resize(size: { h: number; w: number }): Promise<void>;
  inspect(): Promise<ExecInspect>;
}

export interface ContainerHandle {
  readonly id: string;
  /** Prepares a process in the (running) container; 409 when it is not running. */
  exec(spec: ExecCreateSpec): Promise<ExecHandle>;
  inspect(): Promise<ContainerInspect>;
  /** Rejects with statusCode 304 when it already runs. */
  start(): Promise<void>;
  /** Without `t`, the engine waits the container's StopTimeout (else 10 s). Rejects with 304 when already stopped. */
  stop(options?: { t?: number }): Promise<void>;
  restart(options?: { t?: number }): Promise<void>;
  remove(options?: { force?: boolean; v?: boolean }): Promise<void>;
  /** Its output, split into stdout and stderr frames. Listen for 'error'; `destroy()` ends a followed stream. */
  logs(options: LogsOptions): Promise<Readable>;
}

export interface ImageHandle {
  readonly name: string;
  inspect(): Promise<ImageInspect>;
  remove(options?: { force?: boolean; noprune?: boolean }): Promise<void>;
  /** Gives the image another name, `repo:tag` (`POST /images/{name}/tag`). */
  tag(repo: string, tag: string): Promise<void>;
  /** The image as a tar (`GET /images/{name}/get`, docker save's format), streamed; `destroy()` stops it. */
  export(options?: { signal?: AbortSignal }): Promise<Readable>;
}

export interface VolumeHandle {
  readonly name: string;
  remove(options?: { force?: boolean }): Promise<void>;
}

export interface NetworkHandle {
  readonly id: string;
  inspect(): Promise<NetworkSummary>;
  remove(): Promise<void>;
}

/** The engine calls the device agent makes. */
export interface EngineClient {
  ping(options?: { signal?: AbortSignal }): Promise<void>;
  version(): Promise<EngineVersion>;
  info(): Promise<EngineInfo>;
  listContainers(options?: { all?: boolean; filters?: Filters }): Promise<ContainerSummary[]>;
  listImages(options?: { all?: boolean; filters?: Filters }): Promise<ImageSummary[]>;
  listVolumes(options?: { filters?: Filters }): Promise<{ Volumes: VolumeSummary[] | null; Warnings: string[] | null }>;
  listNetworks(options?: { filters?: Filters }): Promise<NetworkSummary[]>;
  getContainer(id: string): ContainerHandle;
  getImage(name: string): ImageHandle;
  getVolume(name: string): VolumeHandle;
  getNetwork(id: string): NetworkHandle;
  createContainer(spec: ContainerCreateSpec): Promise<ContainerHandle>;
  createVolume(spec: VolumeCreateSpec): Promise<VolumeSummary>;
  createNetwork(spec: NetworkCreateSpec): Promise<NetworkHandle>;
  /**
   * Pulls an image and resolves once the engine has it; an error line in the progress stream
   * rejects. A reference without a tag means `:latest` (as the docker CLI pulls it).
   */
  pull(reference: string, options?: { onProgress?: (progress: PullProgress) => void; signal?: AbortSignal }): Promise<void>;
  /**
   * Loads images from a docker save tar streamed as the request body (`POST /images/load`).
   * @returns the engine's progress messages (e.g. `Loaded image ID: sha256:…`)
   * @throws EngineError for a refused archive (its error line)
   */
  loadImage(archive: Readable, options?: { signal?: AbortSignal }): Promise<string[]>;
  /** The engine's event stream, one parsed {@link EngineEvent} per 'data'. Listen for 'error'; `destroy()` closes it. */
  getEvents(options?: { filters?: Filters; since?: number }): Promise<Readable>;
}

/** An engine the agent talks to: what it is, and the client. */
export interface LiteEngine extends EngineFacts {
  docker: EngineClient;
}

/** Connects (flags, then DOCKER_HOST, then the default socket) and checks the engine answers. */
export async function connectLiteEngine(flags: EngineFlags, env: NodeJS.ProcessEnv = process.env): Promise<LiteEngine> {
  const connection = connectionOptions(flags, env);
  const docker = createEngineClient(connection.options);
  const facts = await probeEngine({ ping: (signal) => docker.ping({ signal }), info: () => docker.info(), version: () => docker.version() }, connection);
  return { ...facts, docker };
}

type Query = Record<string, string | number | boolean | Filters | undefined>;

interface Call {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  query?: Query;
  body?: unknown;
  /** A raw request body streamed as it is (instead of `body`'s JSON). */
  upload?: { stream: Readable; contentType: string };
  signal?: AbortSignal;
}

function queryString(query: Query | undefined): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value === undefined) continue;
    params.set(key, typeof value === 'boolean' ? (value ? '1' : '0') : typeof value === 'object' ? JSON.stringify(value) : String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

/** Reads a whole body; rejects when the connection drops before its end. */
function readBody(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (chunk: Buffer) => chunks.push(chunk));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
    res.on('close', () => {
      if (!res.complete) reject(new Error('the engine closed the connection before the end of its answer'));
    });
  });
}

/** The engine's message from an error body (`{"message": "..."}`), else the body's text. */
function errorMessage(text: string): string {
  try {
    const parsed = JSON.parse(text) as { message?: unknown };
    if (typeof parsed.message === 'string') return parsed.message;
  } catch {
    // not JSON: the text is the message
  }
  return text.trim();
}

/** A client for the engine at `options` (unix socket, or host:port over HTTP or HTTPS). */
export function createEngineClient(options: ConnectionOptions): EngineClient {
  // One connection per call: the agent makes a few calls every few seconds, and a pooled socket
  // to an engine that restarts would only fail the next call.
  const agent = new http.Agent({ keepAlive: false });
  let httpsAgent: import('node:https').Agent | undefined;

  async function open(call: Call): Promise<http.IncomingMessage> {
    const payload = call.body === undefined ? undefined : JSON.stringify(call.body);
    const request: http.RequestOptions = {
      method: call.method,
      path: `${call.path}${queryString(call.query)}`,
      headers: call.upload ? { 'Content-Type': call.upload.contentType } : payload === undefined ? {} : { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) },
      ...(call.signal ? { signal: call.signal } : {}),
    };
    let send: (opts: http.RequestOptions, onResponse: (res: http.IncomingMessage) => void) => http.ClientRequest;
    if (options.socketPath) {
      send = (opts, onResponse) => http.request({ ...opts, socketPath: options.socketPath, agent }, onResponse);
    } else if (options.protocol === 'https') {
      const https = await import('node:https'); // TLS only for a remote engine that asks for it
      httpsAgent ??= new https.Agent({ keepAlive: false, ca: options.ca, cert: options.cert, key: options.key });
      const tlsAgent = httpsAgent;
      send = (opts, onResponse) => https.request({ ...opts, host: options.host, port: options.port, agent: tlsAgent }, onResponse);
    } else {
      send = (opts, onResponse) => http.request({ ...opts, host: options.host, port: options.port, agent }, onResponse);
    }
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = send(request, resolve);
      req.on('error', reject);
      if (call.upload) {
        const upload = call.upload.stream;
        // the body's own error ends the request (and so this call) with it
        pipeline(upload, req, (err) => {
          if (err) reject(err);
        });
      } else req.end(payload);
    });
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) return res;
    const message = errorMessage(await readBody(res).catch(() => ''));
    throw new EngineError(status, message || `HTTP ${status} from ${call.method} ${call.path}`);
  }

  /**
   * `POST path` with `body`, upgraded to a raw connection (the engine answers 101 UPGRADED; any
   * other answer is its error). The bytes the engine sent with its answer are put back in front
   * of the socket's stream.
   */
  async function hijack(path: string, body: unknown): Promise<Socket> {
    const payload = JSON.stringify(body);
    const headers = { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload), Connection: 'Upgrade', Upgrade: 'tcp' };
    let req: http.ClientRequest;
    if (options.socketPath) req = http.request({ method: 'POST', path, headers, socketPath: options.socketPath, agent });
    else if (options.protocol === 'https') {
      const https = await import('node:https');
      req = https.request({ method: 'POST', path, headers, host: options.host, port: options.port, ca: options.ca, cert: options.cert, key: options.key });
    } else req = http.request({ method: 'POST', path, headers, host: options.host, port: options.port, agent });
    return await new Promise<Socket>((resolve, reject) => {
      req.once('upgrade', (_res: http.IncomingMessage, socket: Socket, head: Buffer) => {
        if (head.length > 0) socket.unshift(head);
        resolve(socket);
      });
      req.once('response', (res: http.IncomingMessage) => {
        const status = res.statusCode ?? 0;
        void readBody(res).catch(() => '').then((text) => reject(new EngineError(status, errorMessage(text) || `HTTP ${status} from POST ${path}`)));
      });
      req.once('error', reject);
      req.end(payload);
    });
  }

  async function json<T>(call: Call): Promise<T> {
    const text = await readBody(await open(call));
    return (text ? JSON.parse(text) : undefined) as T;
  }

  async function done(call: Call): Promise<void> {
    await readBody(await open(call));
  }

  async function stream(call: Call, parse: Transform): Promise<Readable> {
    const res = await open(call);
    // A dropped connection errors `parse`; destroying `parse` closes the connection.
    pipeline(res, parse, () => {});
    return parse;
  }

  const container = (id: string): ContainerHandle => {
    const at = `/containers/${encodeURIComponent(id)}`;
    return {
      id,
      async exec(spec) {
        const created = await json<{ Id: string }>({ method: 'POST', path: `${at}/exec`, body: spec });
        const execAt = `/exec/${encodeURIComponent(created.Id)}`;
        return {
          id: created.Id,
          start: ({ tty }) => hijack(`${execAt}/start`, { Detach: false, Tty: tty }),
          resize: ({ h, w }) => done({ method: 'POST', path: `${execAt}/resize`, query: { h, w } }),
          inspect: () => json<ExecInspect>({ method: 'GET', path: `${execAt}/json` }),
        };
      },
      inspect: () => json<ContainerInspect>({ method: 'GET', path: `${at}/json` }),
      start: () => done({ method: 'POST', path: `${at}/start` }),
      stop: (o = {}) => done({ method: 'POST', path: `${at}/stop`, query: { t: o.t } }),
      restart: (o = {}) => done({ method: 'POST', path: `${at}/restart`, query: { t: o.t } }),
      remove: (o = {}) => done({ method: 'DELETE', path: at, query: { force: o.force, v: o.v } }),
      logs: ({ tty, ...o }) => stream(
        { method: 'GET', path: `${at}/logs`, query: { follow: o.follow, stdout: o.stdout, stderr: o.stderr, timestamps: o.timestamps, tail: o.tail, since: o.since } },
        tty ? rawFrames() : demuxFrames(),
      ),
    };
  };

  const network = (id: string): NetworkHandle => ({
    id,
    inspect: () => json<NetworkSummary>({ method: 'GET', path: `/networks/${encodeURIComponent(id)}` }),
    remove: () => done({ method: 'DELETE', path: `/networks/${encodeURIComponent(id)}` }),
  });

  return {
    async ping(o = {}) {
      await done({ method: 'GET', path: '/_ping', signal: o.signal });
    },
    version: () => json<EngineVersion>({ method: 'GET', path: '/version' }),
    info: () => json<EngineInfo>({ method: 'GET', path: '/info' }),
    listContainers: (o = {}) => json({ method: 'GET', path: '/containers/json', query: { all: o.all, filters: o.filters } }),
    listImages: (o = {}) => json({ method: 'GET', path: '/images/json', query: { all: o.all, filters: o.filters } }),
    listVolumes: (o = {}) => json({ method: 'GET', path: '/volumes', query: { filters: o.filters } }),
    listNetworks: (o = {}) => json({ method: 'GET', path: '/networks', query: { filters: o.filters } }),
    getContainer: container,
    getImage: (name) => ({
      name,
      inspect: () => json<ImageInspect>({ method: 'GET', path: `/images/${encodeURIComponent(name)}/json` }),
      remove: (o = {}) => done({ method: 'DELETE', path: `/images/${encodeURIComponent(name)}`, query: { force: o.force, noprune: o.noprune } }),
      tag: (repo, tag) => done({ method: 'POST', path: `/images/${encodeURIComponent(name)}/tag`, query: { repo, tag } }),
      export: (o = {}) => open({ method: 'GET', path: `/images/${encodeURIComponent(name)}/get`, signal: o.signal }),
    }),
    getVolume: (name) => ({
      name,
      remove: (o = {}) => done({ method: 'DELETE', path: `/volumes/${encodeURIComponent(name)}`, query: { force: o.force } }),
    }),
    getNetwork: network,
    async createContainer({ name, ...spec }) {
      const created = await json<{ Id: string }>({ method: 'POST', path: '/containers/create', query: { name }, body: spec });
      return container(created.Id);
    },
    createVolume: (spec) => json<VolumeSummary>({ method: 'POST', path: '/volumes/create', body: spec }),
    async createNetwork(spec) {
      const created = await json<{ Id: string }>({ method: 'POST', path: '/networks/create', body: spec });
      return network(created.Id);
    },
    async pull(reference, o = {}) {
      const { name, tag } = splitReference(reference);
      const progress = await stream({ method: 'POST', path: '/images/create', query: { fromImage: name, tag }, signal: o.signal }, jsonLines());
      await followPull(progress, o.onProgress);
    },
    async loadImage(archive, o = {}) {
      const progress = await stream({ method: 'POST', path: '/images/load', query: { quiet: true }, upload: { stream: archive, contentType: 'application/x-tar' }, signal: o.signal }, jsonLines());
      const messages: string[] = [];
      await followPull(progress, (p) => {
        const line = (p as { stream?: unknown }).stream;
        if (typeof line === 'string' && line.trim()) messages.push(line.trim());
      }).catch((err: unknown) => {
        throw err instanceof EngineError ? err : new EngineError(500, err instanceof Error ? err.message : String(err));
      });
      return messages;
    },
    getEvents: (o = {}) => stream({ method: 'GET', path: '/events', query: { filters: o.filters, since: o.since } }, jsonLines()),
  };
}

/**
 * `name[:tag]` or `name@digest` → the engine's `fromImage` and `tag` (a digest goes in `tag` too).
 * No tag means `latest`: an empty tag would ask the engine for every tag of the repository.
 */
export function splitReference(reference: string): { name: string; tag: string } {
  const at = reference.indexOf('@');
  if (at >= 0) return { name: reference.slice(0, at), tag: reference.slice(at + 1) };
  const colon = reference.lastIndexOf(':');
  if (colon > reference.lastIndexOf('/')) return { name: reference.slice(0, colon), tag: reference.slice(colon + 1) };
  return { name: reference, tag: 'latest' };
}

/** Resolves when a pull's progress stream ends cleanly; rejects on its first error line. */
export function followPull(progress: Readable, onProgress?: (p: PullProgress) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    progress.on('data', (p: PullProgress) => {
      const failure = p.errorDetail?.message ?? p.error;
      if (failure !== undefined) {
        reject(new Error(failure));
        progress.destroy();
        return;
      }
      onProgress?.(p);
    });
    progress.on('error', reject);
    progress.on('end', () => resolve());
  });
}

/** Bytes → one parsed JSON value per line (the engine's event and progress streams). */
export function jsonLines(): Transform {
  const decoder = new StringDecoder('utf8');
  let partial = '';
  const emit = (stream: Transform, line: string) => {
    const text = line.trim();
    if (text) stream.push(JSON.parse(text));
  };
  return new Transform({
    readableObjectMode: true,
    transform(chunk: Buffer, _encoding, callback) {
      partial += decoder.write(chunk);
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      try {
        for (const line of lines) emit(this, line);
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
    flush(callback) {
      try {
        emit(this, partial + decoder.end());
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
  });
}

/**
 * The engine's multiplexed output (containers without a TTY) → {@link LogFrame}s. Each frame has
 * an 8-byte header: the stream (0 stdin, 1 stdout, 2 stderr, 3 the engine's own errors), three zero bytes, then the payload's
 * length as a big-endian uint32. Frames arrive split across chunks, or several in one. Should the
 * bytes not be frames after all (a TTY container misreported), the rest passes through as stdout.
 */
export function demuxFrames(): Transform {
  let pending: Buffer = Buffer.alloc(0);
  let raw = false;
  return new Transform({
    readableObjectMode: true,
    transform(chunk: Buffer, _encoding, callback) {
      if (raw) {
        callback(null, { stream: 'stdout', data: chunk } satisfies LogFrame);
        return;
      }
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 8) {
        const type = pending[0] ?? 0;
        if (type > 3 || pending[1] !== 0 || pending[2] !== 0 || pending[3] !== 0) {
          raw = true;
          this.push({ stream: 'stdout', data: pending } satisfies LogFrame);
          pending = Buffer.alloc(0);
          break;
        }
        const end = 8 + pending.readUInt32BE(4);
        if (pending.length < end) break;
        if (end > 8) this.push({ stream: type >= 2 ? 'stderr' : 'stdout', data: pending.subarray(8, end) } satisfies LogFrame);
        pending = pending.subarray(end);
      }
      callback();
    },
  });
}

/** A TTY container's output: one raw stream, all of it stdout. */
function rawFrames(): Transform {
  return new Transform({
    readableObjectMode: true,
    transform(chunk: Buffer, _encoding, callback) {
      callback(null, { stream: 'stdout', data: chunk } satisfies LogFrame);
    },
  });
}
