/**
 * The agent's HTTP client for its server: registration, target state, reports, log batches and
 * registry tokens, with the wire types of src/lib/api/device-state.ts and the paths of
 * endpoints.ts. Every call has a deadline, so a server that accepts a connection and never answers
 * cannot hold the agent's loops.
 *
 * node:http/https, not fetch: fetch loads undici, which cost the agent about 9 MB of resident memory
 * for as long as it runs (measured: 5 MB more of node's binary paged in, 4 MB more heap), while the
 * event channel's `ws` loads node:http/https anyway. TLS is node's either way (NODE_EXTRA_CA_CERTS
 * applies), and connections are kept alive between calls as fetch kept them.
 */
import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import type { RegisterRequest, RegisterResponse, RegistryTokenResponse, StateReportV3 } from '../../api/device-state.js';
import type { DeviceLogBatch } from '../../api/logs.js';
import type { DeltaAnswer, DeltaPending } from '../../api/deltas.js';
import { endpointPath } from '../../api/endpoints.js';
import { retryAfterMs } from './schedule.js';

/** How long one request may take, in ms (a target state of a few KB; reports smaller). */
export const REQUEST_TIMEOUT_MS = 30_000;

/** The server answered with a status the call does not expect. */
export class CloudHttpError extends Error {
  constructor(readonly status: number, message: string, readonly retryAfterMs?: number) {
    super(message);
    this.name = 'CloudHttpError';
  }
}

/** The server could not be reached (refused, DNS, TLS, timeout): the device keeps running what it runs. */
export class CloudUnreachableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CloudUnreachableError';
  }
}

/** How long a delta layer download may go without a byte, in ms (its whole length has no deadline: it may be large). */
export const DOWNLOAD_IDLE_TIMEOUT_MS = 60_000;

/** `GET /api/v3/delta`'s answer: the server's {@link DeltaAnswer}, or "being made, ask again in `retryAfterMs`" (its 504). */
export type DeltaReply = DeltaAnswer | { status: 'pending'; retryAfterMs: number };

export type TargetAnswer = { changed: true; etag?: string; body: unknown } | { changed: false };

export interface CloudClient {
  readonly apiEndpoint: string;
  /** `POST /device/register` with the provisioning key; 201 → the answer. @throws CloudHttpError (409 duplicate, 401/403 key refused), CloudUnreachableError */
  register(provisioningKey: string, body: RegisterRequest): Promise<RegisterResponse>;
  /** `GET /device/v3/:uuid/state` with `If-None-Match`. @throws CloudHttpError, CloudUnreachableError */
  target(etag?: string): Promise<TargetAnswer>;
  /** `PATCH /device/v3/state`. @throws CloudHttpError, CloudUnreachableError */
  report(body: StateReportV3): Promise<void>;
  /** `POST /device/v2/:uuid/logs` (204). @throws CloudHttpError, CloudUnreachableError */
  logs(batch: DeviceLogBatch): Promise<void>;
  /** `GET /auth/v1/token` with basic auth `d_<uuid>:<device key>`. @throws CloudHttpError, CloudUnreachableError */
  registryToken(service: string | undefined, scope: string): Promise<RegistryTokenResponse>;
  /**
   * `GET /api/v3/delta?src=&dest=` on the delta endpoint (config.json's `deltaEndpoint`, else the
   * API). 504 → pending with the server's Retry-After (its body's `retryAfter` when the header is
   * missing; 10 s when both are).
   * @throws CloudHttpError (404: an image outside the device's fleet), CloudUnreachableError
   */
  delta(src: string, dest: string): Promise<DeltaReply>;
  /**
   * `GET /api/v3/delta/:id/layers/:index` from byte `offset` (a `Range` request when above 0): the
   * body as a stream, which errors when no byte comes for {@link DOWNLOAD_IDLE_TIMEOUT_MS}.
   * @throws CloudHttpError (a status other than 200, or 206 for a range), CloudUnreachableError
   */
  deltaLayer(id: string, index: number, offset: number, signal: AbortSignal): Promise<Readable>;
}

/** A whole answer: calls are small (a target state of a few KB), so the body is read before it is looked at. */
interface Answer {
  status: number;
  /** A response header by its lower-case name; the first of repeated ones. */
  header: (name: string) => string | undefined;
  body: Buffer;
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * config.json's `apiEndpoint` checked: an http(s) URL, returned without a trailing slash.
 * @throws Error naming the value when it is not one
 */
export function checkApiEndpoint(value: string): string {
  let url: URL;
  try {
    url = new URL(value.trim());
  } catch {
    throw new Error(`apiEndpoint '${value}' is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`apiEndpoint '${value}' must be an http:// or https:// URL`);
  return url.href.replace(/\/+$/, '');
}

/**
 * A client for `apiEndpoint` (e.g. `https://cloud.example.com`) as device `uuid` with its device
 * key. `signal` ends every call in flight (the agent stopping must not wait for a server that hangs).
 */
export function createCloudClient(apiEndpoint: string, uuid: string, deviceApiKey: string, signal?: AbortSignal, options: { deltaEndpoint?: string } = {}): CloudClient {
  const base = apiEndpoint.replace(/\/+$/, '');
  const deltaBase = (options.deltaEndpoint ?? apiEndpoint).replace(/\/+$/, '');
  const secure = base.startsWith('https:');
  // A few sockets kept open between calls (a poll, a report and a log batch may overlap); the
  // agent stopping closes them, so they never hold the process.
  const agent = new (secure ? https.Agent : http.Agent)({ keepAlive: true, maxSockets: 4, maxFreeSockets: 2 });
  signal?.addEventListener('abort', () => agent.destroy(), { once: true });
  const call = (path: string, init: { method?: string; headers?: Record<string, string>; body?: string; origin?: string } = {}): Promise<Answer> => new Promise<Answer>((resolve, reject) => {
    const origin = init.origin ?? base;
    const fail = (why: string): void => reject(new CloudUnreachableError(`cannot reach ${origin} (${why})`));
    if (signal?.aborted) {
      fail('stopped');
      return;
    }
    const body = init.body === undefined ? undefined : Buffer.from(init.body);
    const req = (origin.startsWith('https:') ? https : http).request(`${origin}${path}`, {
      agent: origin === base ? agent : undefined, method: init.method ?? 'GET',
      headers: { ...init.headers, ...(body ? { 'content-length': String(body.length) } : {}) },
    });
    /** Why the request was cut short by us (the socket's own error says less). */
    let cut: string | undefined;
    // The deadline covers the answer's body too, as fetch's signal did.
    const deadline = setTimeout(() => {
      cut = `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`;
      req.destroy();
    }, REQUEST_TIMEOUT_MS);
    const onAbort = (): void => {
      cut = 'stopped';
      req.destroy();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    const done = (): void => {
      clearTimeout(deadline);
      signal?.removeEventListener('abort', onAbort);
    };
    const failed = (err: NodeJS.ErrnoException): void => {
      done();
      fail(cut ?? err.code ?? err.message);
    };
    req.on('error', failed);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', failed);
      res.on('close', () => {
        if (res.complete) return;
        done();
        fail(cut ?? 'the answer was cut short');
      });
      res.on('end', () => {
        done();
        resolve({ status: res.statusCode ?? 0, header: (name) => headerValue(res.headers[name]), body: Buffer.concat(chunks) });
      });
    });
    req.end(body);
  });
  const json = (answer: Answer, what: string): unknown => {
    try {
      return JSON.parse(answer.body.toString('utf8'));
    } catch (err) {
      throw new CloudHttpError(answer.status, `${what}: the answer is not JSON (${(err as Error).message})`);
    }
  };
  const ok = (answer: Answer): boolean => answer.status >= 200 && answer.status < 300;
  const refuse = (res: Answer, what: string): never => {
    const text = res.body.toString('utf8');
    let detail = text.slice(0, 300);
    try {
      const json = JSON.parse(text) as { message?: unknown; error?: unknown };
      if (typeof json.message === 'string') detail = json.message;
      else if (typeof json.error === 'string') detail = json.error;
    } catch {
      // not JSON: the text as it is
    }
    throw new CloudHttpError(res.status, `${what}: the server answered ${res.status}${detail ? ` (${detail.trim()})` : ''}`, retryAfterMs(res.header('retry-after') ?? null, Date.now()));
  };
  const bearer = { authorization: `Bearer ${deviceApiKey}` };
  return {
    apiEndpoint: base,
    async register(provisioningKey, body) {
      const res = await call(endpointPath('register'), { method: 'POST', headers: { authorization: `Bearer ${provisioningKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (res.status !== 201 && res.status !== 200) return refuse(res, 'registration');
      return json(res, 'registration') as RegisterResponse;
    },
    async target(etag) {
      const res = await call(endpointPath('targetState', { uuid }), { headers: { ...bearer, ...(etag ? { 'if-none-match': etag } : {}) } });
      if (res.status === 304) return { changed: false };
      if (res.status !== 200) return refuse(res, 'target state');
      return { changed: true, etag: res.header('etag'), body: json(res, 'target state') };
    },
    async report(body) {
      const res = await call(endpointPath('report'), { method: 'PATCH', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (!ok(res)) refuse(res, 'report');
    },
    async logs(batch) {
      const res = await call(endpointPath('logBatch', { uuid }), { method: 'POST', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify(batch) });
      if (!ok(res)) refuse(res, 'log batch');
    },
    async registryToken(service, scope) {
      const query = new URLSearchParams({ ...(service ? { service } : {}), scope });
      const basic = Buffer.from(`d_${uuid}:${deviceApiKey}`).toString('base64');
      const res = await call(`${endpointPath('registryToken')}?${query.toString()}`, { headers: { authorization: `Basic ${basic}` } });
      if (!ok(res)) return refuse(res, 'registry token');
      return json(res, 'registry token') as RegistryTokenResponse;
    },
    async delta(src, dest) {
      const query = new URLSearchParams({ src, dest });
      const res = await call(`${endpointPath('delta')}?${query.toString()}`, { headers: bearer, origin: deltaBase });
      if (res.status === 504) {
        const header = retryAfterMs(res.header('retry-after') ?? null, Date.now());
        let body: number | undefined;
        try {
          const pending = JSON.parse(res.body.toString('utf8')) as Partial<DeltaPending>;
          if (typeof pending.retryAfter === 'number' && pending.retryAfter > 0) body = pending.retryAfter * 1000;
        } catch {
          // a proxy's 504 page: the header or the default
        }
        return { status: 'pending', retryAfterMs: header ?? body ?? 10_000 };
      }
      if (res.status !== 200) return refuse(res, 'delta');
      const answer = json(res, 'delta') as Partial<DeltaAnswer>;
      if (answer.status !== 'ready' && answer.status !== 'none') throw new CloudHttpError(res.status, `delta: the answer's status '${String(answer.status)}' is neither ready nor none`);
      return answer as DeltaAnswer;
    },
    deltaLayer(id, index, offset, layerSignal) {
      return new Promise<Readable>((resolve, reject) => {
        const url = `${deltaBase}${endpointPath('deltaLayer', { id, index: String(index) })}`;
        const req = (url.startsWith('https:') ? https : http).request(url, {
          signal: layerSignal,
          headers: { ...bearer, ...(offset > 0 ? { range: `bytes=${offset}-` } : {}) },
          timeout: DOWNLOAD_IDLE_TIMEOUT_MS,
        });
        req.on('timeout', () => req.destroy(new Error(`no byte for ${DOWNLOAD_IDLE_TIMEOUT_MS / 1000} s`)));
        req.on('error', (err: NodeJS.ErrnoException) => reject(new CloudUnreachableError(`cannot reach ${deltaBase} (${err.code ?? err.message})`)));
        req.on('response', (res) => {
          const expected = offset > 0 ? 206 : 200;
          if (res.statusCode === expected) {
            resolve(res);
            return;
          }
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', () => reject(new CloudHttpError(res.statusCode ?? 0, `delta layer ${index}: the server answered ${res.statusCode ?? 0}`)));
          res.on('end', () => {
            try {
              refuse({ status: res.statusCode ?? 0, header: (name) => headerValue(res.headers[name]), body: Buffer.concat(chunks) }, `delta layer ${index}`);
            } catch (err) {
              reject(err as Error);
            }
          });
        });
        req.end();
      });
    },
  };
}
