/**
 * The CLI's client for `skiff server`'s user-facing API: one typed method per route of
 * `src/lib/api/endpoints.ts`, bodies typed by `src/lib/api/resources.ts` (types only: the server
 * validates, the client does not carry the schemas). Every failure becomes one SkiffError with the
 * published exit code (see {@link errorFromAnswer} and {@link errorFromFailure}).
 */
import type { Readable } from 'node:stream';
import { SkiffError } from '../errors/errors.js';
import { endpointPath, ENDPOINTS, type EndpointName } from '../api/endpoints.js';
import type {
  ApiKey, CreateApiKeyRequest, CreatedApiKey, CreatedRelease, CreateFleetRequest, CreateReleaseRequest, CreateUserRequest,
  Device, Fleet, FleetConfig, FleetConfigRequest, LoginRequest, LoginResponse, Release, SetTagRequest, SetVariableRequest,
  Tag, TagScope, UpdateDeviceRequest, UpdateFleetRequest, UpdateReleaseRequest, User, Variable, VariableScope, WhoAmI,
} from '../api/resources.js';
import type { Build } from '../api/builds.js';
import type { DeviceLogLine, DeviceLogsQuery } from '../api/logs.js';
import type { DeviceActionRequest, DeviceActionResult } from '../api/events.js';
import type { DevicePublicUrl, DeviceSession, DeviceSessionsQuery, FleetPublicUrl } from '../api/tunnel.js';
import type { WebSocket } from 'ws';

/** How long one request may take before the server counts as unreachable (milliseconds). */
export const DEFAULT_TIMEOUT_MS = 30_000;

export interface CloudClientOptions {
  /** The server's base URL, e.g. `http://127.0.0.1:48080` (see normaliseServerUrl). */
  url: string;
  /** Session token or API key; absent for `login`. */
  token?: string;
  /** Per-request timeout in milliseconds (default {@link DEFAULT_TIMEOUT_MS}). */
  timeoutMs?: number;
  /** Called with one line per request and answer (`--debug`); never given the token. */
  onDebug?: (line: string) => void;
  /** Aborts every request in flight (Ctrl-C). */
  signal?: AbortSignal;
}

export interface RequestOptions {
  params?: Record<string, string | number>;
  /** An array repeats the parameter (`tag=a=1&tag=b=2`). */
  query?: Record<string, string | string[] | undefined>;
  body?: unknown;
  /** A 401 on this route means wrong credentials (login), not an expired session. */
  isLogin?: boolean;
}

type AnswerBody = { message?: unknown; field?: unknown; error?: unknown; status?: unknown; statusCode?: unknown } | undefined;

/**
 * A non-2xx answer as the one error a person reads. The server's `message` (and `field`, for a
 * 400) is kept; the kind of error comes from the status only.
 *
 * - 401 → notLoggedIn (11), naming `skiff login`
 * - 404 → notFound (12)
 * - 409 → conflict (14)
 * - 400, 413, 422 → usage (2), naming the field
 * - 502, 503, 504 → serverUnreachable (13)
 * - anything else → error (1)
 */
export function errorFromAnswer(status: number, body: unknown, context: { url: string; isLogin?: boolean }): SkiffError {
  const b = (typeof body === 'object' && body !== null ? body : undefined) as AnswerBody;
  const serverMessage = typeof b?.message === 'string' && b.message.trim() !== '' ? b.message.trim().replace(/\.$/, '') : undefined;
  const field = typeof b?.field === 'string' && b.field !== '' ? b.field : undefined;
  // Not a skiff server at all: its words ("Unauthorized", "not found") would send the user after a
  // password or a fleet when the URL is what is wrong. A device's API (skiff agent, balena
  // supervisor) answers `{status: 'failed', message}`; a web server's 404 page is not JSON.
  const hint = 'check the URL: skiff server listens on port 48080 unless --port says otherwise';
  if (typeof b?.status === 'string' && b.statusCode === undefined) {
    return new SkiffError('serverUnreachable', `${context.url} is a device's API (a skiff agent or balena supervisor), not a skiff server`, { hint });
  }
  if (b === undefined && (status === 404 || status === 405 || status === 501)) {
    return new SkiffError('serverUnreachable', `${context.url} answered ${status} and is not a skiff server`, { hint });
  }
  switch (status) {
    case 401: {
      // The server's own words may already name skiff login: say it once.
      const named = serverMessage?.includes('skiff login') === true;
      if (context.isLogin) return new SkiffError('notLoggedIn', serverMessage ?? 'wrong email or password', named ? {} : { hint: 'check them and run skiff login again' });
      return new SkiffError('notLoggedIn', `${context.url}: ${serverMessage ?? 'the server did not accept the token'}`, named ? {} : { hint: 'run skiff login (or set SKIFF_API_TOKEN to a valid API key)' });
    }
    case 403:
      return new SkiffError('error', serverMessage ?? 'not allowed', { hint: 'this needs an administrator' });
    case 404:
      return new SkiffError('notFound', serverMessage ?? 'not found');
    case 409:
      return new SkiffError('conflict', serverMessage ?? 'conflicts with what exists');
    case 400:
    case 413:
    case 422: {
      const text = serverMessage ?? (status === 413 ? 'the request is too large' : 'the server refused the request');
      return new SkiffError('usage', field && !text.includes(field) ? `${field}: ${text}` : text);
    }
    case 429:
      return new SkiffError('error', serverMessage ?? 'too many requests', { hint: 'wait a minute and try again' });
    case 504:
      // The server's own 504 (a device that did not answer) says what to do; a proxy's says nothing.
      if (serverMessage && b?.statusCode === 504) return new SkiffError('serverUnreachable', serverMessage);
      return new SkiffError('serverUnreachable', `${context.url} answered ${status}${serverMessage ? `: ${serverMessage}` : ''}`, { hint: 'is skiff server running? Try again in a moment' });
    case 502:
    case 503:
      return new SkiffError('serverUnreachable', `${context.url} answered ${status}${serverMessage ? `: ${serverMessage}` : ''}`, { hint: 'is skiff server running? Try again in a moment' });
    default:
      return new SkiffError('error', `${context.url} answered ${status}${serverMessage ? `: ${serverMessage}` : ''}`);
  }
}

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: 'refused the connection',
  ECONNRESET: 'closed the connection',
  EPIPE: 'closed the connection',
  ENOTFOUND: 'has a name DNS does not know',
  EAI_AGAIN: 'could not be looked up (DNS)',
  EHOSTUNREACH: 'is not reachable (no route)',
  ENETUNREACH: 'is not reachable (no network)',
  ETIMEDOUT: 'did not answer (timed out)',
  UND_ERR_CONNECT_TIMEOUT: 'did not answer (connect timed out)',
  UND_ERR_SOCKET: 'closed the connection',
};

/**
 * A request that got no answer (refused, DNS, TLS, timeout) as serverUnreachable (13); an abort
 * of the caller's own signal (Ctrl-C) as interrupted (130). Other errors are returned unchanged.
 */
export function errorFromFailure(err: unknown, context: { url: string; timeoutMs: number; aborted?: boolean }): unknown {
  if (err instanceof SkiffError) return err;
  if (context.aborted) return new SkiffError('interrupted', 'interrupted');
  const e = err as { name?: string; code?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') {
    return new SkiffError('serverUnreachable', `${context.url} did not answer within ${Math.round(context.timeoutMs / 1000)} s`, { hint: 'check that skiff server runs there and the network is up' });
  }
  const code = e?.cause?.code ?? e?.code;
  if (code && NETWORK_REASONS[code]) {
    return new SkiffError('serverUnreachable', `the server at ${context.url} ${NETWORK_REASONS[code]}`, { hint: 'check the URL (skiff login URL) and that skiff server runs there', cause: err });
  }
  // An https URL to a plain-HTTP server: OpenSSL reads the HTTP answer as a record of an unknown version.
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_HTTP_REQUEST') {
    return new SkiffError('serverUnreachable', `the server at ${context.url} does not speak HTTPS`, { hint: `if it serves plain HTTP, use ${context.url.replace(/^https:/i, 'http:')}`, cause: err });
  }
  if (code && /CERT|SSL|TLS|SELF_SIGNED|HOSTNAME/i.test(code)) {
    // Node's words ("self-signed certificate") are one line; OpenSSL's own text is lines of library internals, where the code says more.
    const said = (e.cause?.message ?? '').split('\n')[0]?.trim() ?? '';
    const reason = said === '' || /^[0-9A-F]+:error:/.test(said) ? code : said;
    return new SkiffError('serverUnreachable', `the TLS connection to ${context.url} failed: ${reason}`, { hint: 'check the server certificate (NODE_EXTRA_CA_CERTS names a private CA)', cause: err });
  }
  if (e?.name === 'TypeError' && /fetch failed/.test(e.message ?? '')) {
    return new SkiffError('serverUnreachable', `the server at ${context.url} cannot be reached${e.cause?.message ? `: ${e.cause.message}` : ''}`, { hint: 'check the URL and that skiff server runs there', cause: err });
  }
  return err;
}

/** A cloud device's uuid (or a 7+ hex prefix of one) rather than a LAN address: hex only, no dots or colon. */
export function isDeviceUuid(arg: string): boolean {
  return /^[0-9a-f]{7,64}$/i.test(arg);
}

/** A client for one server and one token. Each method is one route; see ENDPOINTS for the paths. */
export class CloudClient {
  readonly url: string;
  /** The token sent (deploy hands it to the engine for the registry). */
  readonly token?: string;
  private readonly timeoutMs: number;
  private readonly onDebug?: (line: string) => void;
  private readonly signal?: AbortSignal;

  constructor(options: CloudClientOptions) {
    this.url = options.url.replace(/\/+$/, '');
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.onDebug = options.onDebug;
    this.signal = options.signal;
  }

  /** The same client without the caller's abort signal: for the clean-up a Ctrl-C still needs (marking a release failed). */
  detached(): CloudClient {
    return new CloudClient({ url: this.url, token: this.token, timeoutMs: this.timeoutMs, onDebug: this.onDebug });
  }

  /**
   * One call: fills the route, sends JSON, returns the JSON answer (undefined for 204).
   *
   * @throws SkiffError, see errorFromAnswer / errorFromFailure
   */
  async request<T>(name: EndpointName, options: RequestOptions = {}): Promise<T> {
    const route = ENDPOINTS[name];
    const target = this.target(name, options);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = this.signal ? AbortSignal.any([this.signal, timeout]) : timeout;
    const started = performance.now();
    this.onDebug?.(`→ ${route.method} ${target}${options.body !== undefined && !options.isLogin ? ` ${JSON.stringify(options.body)}` : ''}`);
    let response: Response;
    let text: string;
    try {
      response = await fetch(target, { method: route.method, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body), signal });
      text = await response.text();
    } catch (err) {
      this.onDebug?.(`✗ ${route.method} ${target}: ${(err as Error).message}${(err as { cause?: Error }).cause ? ` (${(err as { cause: Error }).cause.message})` : ''}`);
      throw errorFromFailure(err, { url: this.url, timeoutMs: this.timeoutMs, aborted: this.signal?.aborted === true });
    }
    this.onDebug?.(`← ${response.status} ${route.method} ${target} (${Math.round(performance.now() - started)} ms, ${text.length} bytes)`);
    let body: unknown;
    if (text !== '') {
      try {
        body = JSON.parse(text);
      } catch {
        if (response.ok) throw new SkiffError('serverUnreachable', `${this.url} answered ${route.method} ${route.path} with something that is not JSON`, { hint: 'is this the URL of a skiff server?' });
      }
    }
    if (!response.ok) throw errorFromAnswer(response.status, body, { url: this.url, isLogin: options.isLogin });
    return body as T;
  }

  private target(name: EndpointName, options: Pick<RequestOptions, 'params' | 'query'>): string {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(options.query ?? {})) {
      for (const one of Array.isArray(v) ? v : v === undefined ? [] : [v]) query.append(k, one);
    }
    const qs = query.toString();
    return `${this.url}${endpointPath(name, options.params)}${qs ? `?${qs}` : ''}`;
  }

  /**
   * One call whose body or answer streams (a build upload, server-sent events): sends `body` as
   * given and returns the Response once its status line arrived, for the caller to read. Only the
   * wait for the answer's headers is bounded by the timeout (`headersTimeoutMs`, default the
   * client's), not the transfer; the client's signal (Ctrl-C) and `signal` abort both.
   *
   * @throws SkiffError for a non-2xx answer (its JSON body read, as {@link request}) or a failure
   */
  async stream(name: EndpointName, options: Omit<RequestOptions, 'body'> & {
    body?: ReadableStream<Uint8Array> | Uint8Array;
    headers?: Record<string, string>;
    signal?: AbortSignal;
    headersTimeoutMs?: number;
  } = {}): Promise<Response> {
    const route = ENDPOINTS[name];
    const target = this.target(name, options);
    const headers: Record<string, string> = { ...options.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const controller = new AbortController();
    const signals = [controller.signal, ...(this.signal ? [this.signal] : []), ...(options.signal ? [options.signal] : [])];
    const timeoutMs = options.headersTimeoutMs ?? this.timeoutMs;
    const timer = setTimeout(() => controller.abort(new DOMException('no answer in time', 'TimeoutError')), timeoutMs);
    this.onDebug?.(`→ ${route.method} ${target} (stream)`);
    let response: Response;
    try {
      // duplex 'half' is what fetch needs to send a streamed body (undici; not yet in lib.dom's types).
      const init = { method: route.method, headers, body: options.body, signal: AbortSignal.any(signals), duplex: 'half' } as RequestInit;
      response = await fetch(target, init);
    } catch (err) {
      const reason = controller.signal.aborted ? controller.signal.reason as Error : err;
      this.onDebug?.(`✗ ${route.method} ${target}: ${(err as Error).message}`);
      throw errorFromFailure(reason, { url: this.url, timeoutMs, aborted: this.signal?.aborted === true || options.signal?.aborted === true });
    } finally {
      clearTimeout(timer);
    }
    this.onDebug?.(`← ${response.status} ${route.method} ${target} (stream)`);
    if (!response.ok) {
      const text = await response.text().catch(() => '');
      let body: unknown;
      try {
        body = text === '' ? undefined : JSON.parse(text);
      } catch {
        body = undefined;
      }
      throw errorFromAnswer(response.status, body, { url: this.url });
    }
    return response;
  }

  /**
   * A request whose body is a large stream (a build upload), sent with node's own HTTP client and
   * not fetch: an answer that comes before the whole body was sent (413 too large, 401, 404) is
   * read and becomes its error, where fetch reports only the connection the server then closes.
   * No timeout of its own: `signal` (and the client's) bound it. Resolves with the 2xx JSON answer.
   *
   * @throws SkiffError as {@link request} does
   */
  async upload<T>(name: EndpointName, options: Pick<RequestOptions, 'params' | 'query'> & { body: Readable; headers?: Record<string, string>; signal?: AbortSignal }): Promise<T> {
    const route = ENDPOINTS[name];
    const target = this.target(name, options);
    const url = new URL(target);
    const { request } = url.protocol === 'https:' ? await import('node:https') : await import('node:http');
    const headers: Record<string, string> = { accept: 'application/json', ...options.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const signals = [...(this.signal ? [this.signal] : []), ...(options.signal ? [options.signal] : [])];
    const signal = signals.length > 0 ? AbortSignal.any(signals) : undefined;
    const started = performance.now();
    this.onDebug?.(`→ ${route.method} ${target} (upload)`);
    let answer: { status: number; text: string };
    try {
      answer = await new Promise((resolve, reject) => {
        const req = request(url, { method: route.method, headers, ...(signal ? { signal } : {}) });
        let answered = false;
        req.on('response', (res) => {
          answered = true;
          // An early answer ends the upload: the server reads no more of it.
          options.body.unpipe(req);
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          // 'close' too: the server may close the connection right after an early answer.
          const done = (): void => resolve({ status: res.statusCode ?? 0, text });
          res.on('end', done);
          res.on('close', done);
        });
        req.on('error', (err) => {
          if (!answered) reject(err);
        });
        options.body.on('error', (err) => req.destroy(err));
        options.body.pipe(req);
      });
    } catch (err) {
      this.onDebug?.(`✗ ${route.method} ${target}: ${(err as Error).message}`);
      throw errorFromFailure(err, { url: this.url, timeoutMs: 0, aborted: signal?.aborted === true });
    }
    this.onDebug?.(`← ${answer.status} ${route.method} ${target} (${Math.round(performance.now() - started)} ms)`);
    let body: unknown;
    try {
      body = answer.text === '' ? undefined : JSON.parse(answer.text);
    } catch {
      if (answer.status >= 200 && answer.status < 300) throw new SkiffError('serverUnreachable', `${this.url} answered ${route.method} ${route.path} with something that is not JSON`, { hint: 'is this the URL of a skiff server?' });
    }
    if (answer.status < 200 || answer.status >= 300) throw errorFromAnswer(answer.status, body, { url: this.url });
    return body as T;
  }

  /**
   * A WebSocket session on a route (`deviceExec`, `deviceTunnel`), resolved once the server
   * upgraded. The server checks everything before the upgrade, so a refusal is an HTTP answer
   * (ws's 'unexpected-response'): it becomes the SkiffError {@link errorFromAnswer} gives for it
   * (404 notFound, 409 conflict, 403, 502…); no answer at all is {@link errorFromFailure}'s.
   * Only the wait for the upgrade is bounded by the client's timeout. Node's TLS settings apply
   * (NODE_EXTRA_CA_CERTS names a private CA), as for every other call. The socket comes back
   * **paused**: attach the 'message' and 'close' listeners, then call `resume()`.
   *
   * @throws SkiffError
   */
  async websocket(name: EndpointName, options: Pick<RequestOptions, 'params' | 'query'> & { signal?: AbortSignal } = {}): Promise<WebSocket> {
    const route = ENDPOINTS[name];
    const target = this.target(name, options).replace(/^http/i, 'ws');
    const { WebSocket: Ws } = await import('ws');
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const signals = [...(this.signal ? [this.signal] : []), ...(options.signal ? [options.signal] : [])];
    this.onDebug?.(`→ ${route.method} ${target} (websocket)`);
    const ws = new Ws(target, { headers, handshakeTimeout: this.timeoutMs, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
    ws.binaryType = 'nodebuffer';
    // Terminating a refused upgrade makes ws emit one more 'error' after ours is settled: not news.
    ws.on('error', () => undefined);
    return await new Promise<WebSocket>((resolve, reject) => {
      const aborted = (): void => {
        ws.terminate();
        reject(new SkiffError('interrupted', 'interrupted'));
      };
      for (const s of signals) s.addEventListener('abort', aborted, { once: true });
      const settle = (): void => {
        for (const s of signals) s.removeEventListener('abort', aborted);
        ws.off('open', onOpen);
        ws.off('error', onError);
        ws.off('unexpected-response', onRefusal);
      };
      const onOpen = (): void => {
        settle();
        // Paused until the caller's listeners are on: the server may send at once (a service
        // that speaks first, a command's quick output), and ws reads the socket on the next tick,
        // before an awaiting caller runs; those messages were lost.
        ws.pause();
        this.onDebug?.(`← 101 ${route.method} ${target} (websocket)`);
        resolve(ws);
      };
      const onError = (err: Error): void => {
        settle();
        this.onDebug?.(`✗ ${route.method} ${target}: ${err.message}`);
        const timedOut = /handshake has timed out/i.test(err.message);
        reject(timedOut ? new SkiffError('serverUnreachable', `${this.url} did not answer within ${Math.round(this.timeoutMs / 1000)} s`) : errorFromFailure(err, { url: this.url, timeoutMs: this.timeoutMs }));
      };
      const onRefusal = (_req: unknown, res: import('node:http').IncomingMessage): void => {
        settle();
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk.slice(0, 64 * 1024)));
        const done = (): void => {
          ws.terminate();
          this.onDebug?.(`← ${res.statusCode ?? 0} ${route.method} ${target} (websocket refused)`);
          let body: unknown;
          try {
            body = text === '' ? undefined : JSON.parse(text);
          } catch {
            body = undefined;
          }
          // A 403 here is the device's (or the server's) own reason, e.g. a host shell this device
          // does not allow: the "needs an administrator" hint of the other routes would mislead.
          // So is the server's own 502 (nothing listens on that port of the device): not the
          // "is skiff server running?" of a proxy's 502.
          const b = body as { message?: unknown; statusCode?: unknown } | undefined;
          const status = res.statusCode ?? 0;
          const deviceSaid = typeof b?.message === 'string' && (status === 403 || (status === 502 && b.statusCode === 502));
          reject(deviceSaid ? new SkiffError('deviceRefused', String(b.message).replace(/\.$/, '')) : errorFromAnswer(status, body, { url: this.url }));
        };
        res.once('end', done);
        res.once('error', done);
      };
      ws.on('open', onOpen);
      ws.on('error', onError);
      ws.on('unexpected-response', onRefusal);
    });
  }

  // --- users, sessions, keys
  login(body: LoginRequest): Promise<LoginResponse> { return this.request('login', { body, isLogin: true }); }
  logout(): Promise<void> { return this.request('logout'); }
  whoami(): Promise<WhoAmI> { return this.request('whoami'); }
  users(): Promise<User[]> { return this.request('users'); }
  createUser(body: CreateUserRequest): Promise<User> { return this.request('createUser', { body }); }
  removeUser(email: string): Promise<void> { return this.request('removeUser', { params: { email } }); }
  apiKeys(): Promise<ApiKey[]> { return this.request('apiKeys'); }
  createApiKey(body: CreateApiKeyRequest): Promise<CreatedApiKey> { return this.request('createApiKey', { body }); }
  revokeApiKey(id: number): Promise<void> { return this.request('revokeApiKey', { params: { id } }); }

  // --- fleets
  fleets(): Promise<Fleet[]> { return this.request('fleets'); }
  createFleet(body: CreateFleetRequest): Promise<Fleet> { return this.request('createFleet', { body }); }
  fleet(fleet: string): Promise<Fleet> { return this.request('fleet', { params: { fleet } }); }
  updateFleet(fleet: string, body: UpdateFleetRequest): Promise<Fleet> { return this.request('updateFleet', { params: { fleet }, body }); }
  removeFleet(fleet: string): Promise<void> { return this.request('removeFleet', { params: { fleet } }); }
  fleetConfig(fleet: string, body: FleetConfigRequest): Promise<FleetConfig> { return this.request('fleetConfig', { params: { fleet }, body }); }
  releases(fleet: string): Promise<Release[]> { return this.request('releases', { params: { fleet } }); }
  createRelease(fleet: string, body: CreateReleaseRequest): Promise<CreatedRelease> { return this.request('createRelease', { params: { fleet }, body }); }

  // --- devices
  devices(fleet?: string): Promise<Device[]> { return this.request('devices', { query: { fleet } }); }
  device(uuid: string): Promise<Device> { return this.request('device', { params: { uuid } }); }
  updateDevice(uuid: string, body: UpdateDeviceRequest): Promise<Device> { return this.request('updateDevice', { params: { uuid }, body }); }
  removeDevice(uuid: string): Promise<void> { return this.request('removeDevice', { params: { uuid } }); }

  // --- releases
  release(commit: string): Promise<Release> { return this.request('release', { params: { commit } }); }
  updateRelease(commit: string, body: UpdateReleaseRequest): Promise<Release> { return this.request('updateRelease', { params: { commit }, body }); }

  // --- variables and tags
  variables(scope: VariableScope): Promise<Variable[]> { return this.request('variables', { query: { ...scope } }); }
  setVariable(body: SetVariableRequest): Promise<Variable> { return this.request('setVariable', { body }); }
  removeVariable(scope: VariableScope, name: string): Promise<void> { return this.request('removeVariable', { query: { ...scope, name } }); }
  tags(scope: TagScope): Promise<Tag[]> { return this.request('tags', { query: { ...scope } }); }
  setTag(body: SetTagRequest): Promise<Tag> { return this.request('setTag', { body }); }
  removeTag(scope: TagScope, key: string): Promise<void> { return this.request('removeTag', { query: { ...scope, key } }); }

  // --- cloud builds (the upload and the event stream go through `stream`)
  builds(fleet: string): Promise<Build[]> { return this.request('builds', { params: { fleet } }); }
  build(id: string): Promise<Build> { return this.request('build', { params: { id } }); }
  cancelBuild(id: string): Promise<Build> { return this.request('cancelBuild', { params: { id } }); }

  // --- device logs (history; a follow goes through `stream`) and actions
  deviceLogs(uuid: string, query: DeviceLogsQuery = {}): Promise<DeviceLogLine[]> { return this.request('deviceLogs', { params: { uuid }, query: { ...query } }); }
  deviceAction(uuid: string, body: DeviceActionRequest): Promise<DeviceActionResult> { return this.request('deviceAction', { params: { uuid }, body }); }

  // --- public URLs (enabled: null = follow the fleet)
  devicePublicUrl(uuid: string): Promise<DevicePublicUrl> { return this.request('devicePublicUrl', { params: { uuid } }); }
  setDevicePublicUrl(uuid: string, enabled: boolean | null): Promise<DevicePublicUrl> { return this.request('setDevicePublicUrl', { params: { uuid }, body: { enabled } }); }
  fleetPublicUrl(fleet: string): Promise<FleetPublicUrl> { return this.request('fleetPublicUrl', { params: { fleet } }); }
  setFleetPublicUrl(fleet: string, enabled: boolean): Promise<FleetPublicUrl> { return this.request('setFleetPublicUrl', { params: { fleet }, body: { enabled } }); }

  // --- tunnels (the sessions themselves go through `websocket`)
  deviceSessions(uuid: string, query: DeviceSessionsQuery = {}): Promise<DeviceSession[]> { return this.request('deviceSessions', { params: { uuid }, query: { ...query } }); }
}

/**
 * An expiry as people type it (balena's `--expiry-date`): a date (`2027-01-31`, meaning the end of
 * that day, UTC), an ISO time, or `never`/absent for none. Returns an ISO time or undefined.
 *
 * @throws SkiffError('usage') for anything else, or a time in the past
 */
export function parseExpiryDate(input: string | undefined, now: Date = new Date()): string | undefined {
  if (input === undefined || input.trim() === '' || input.trim().toLowerCase() === 'never') return undefined;
  const text = input.trim();
  const date = /^\d{4}-\d{2}-\d{2}$/.test(text) ? new Date(`${text}T23:59:59.999Z`) : new Date(text);
  if (Number.isNaN(date.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(text)) {
    throw new SkiffError('usage', `'${input}' is not a date`, { hint: "use YYYY-MM-DD (the end of that day, UTC), an ISO time such as 2027-01-31T12:00:00Z, or 'never'" });
  }
  if (date.getTime() <= now.getTime()) throw new SkiffError('usage', `the expiry date '${input}' is in the past`);
  return date.toISOString();
}
