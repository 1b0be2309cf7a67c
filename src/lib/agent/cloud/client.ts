/**
 * The agent's HTTP client for its server: registration, target state, reports and registry
 * tokens, with the wire types of src/lib/api/device-state.ts and the paths of endpoints.ts. Node's
 * fetch does the TLS. Every call has a deadline, so a server that accepts a connection and never
 * answers cannot hold the agent's loops.
 */
import type { RegisterRequest, RegisterResponse, RegistryTokenResponse, StateReportV3 } from '../../api/device-state.js';
import type { DeviceLogBatch } from '../../api/logs.js';
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
export function createCloudClient(apiEndpoint: string, uuid: string, deviceApiKey: string, signal?: AbortSignal): CloudClient {
  const base = apiEndpoint.replace(/\/+$/, '');
  const call = async (path: string, init: RequestInit): Promise<Response> => {
    try {
      const deadline = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
      return await fetch(`${base}${path}`, { ...init, signal: signal ? AbortSignal.any([deadline, signal]) : deadline });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new CloudUnreachableError(`cannot reach ${base} (${cause?.code ?? cause?.message ?? (err as Error).message})`);
    }
  };
  const refuse = async (res: Response, what: string): Promise<never> => {
    const text = await res.text().catch(() => '');
    let detail = text.slice(0, 300);
    try {
      const json = JSON.parse(text) as { message?: unknown; error?: unknown };
      if (typeof json.message === 'string') detail = json.message;
      else if (typeof json.error === 'string') detail = json.error;
    } catch {
      // not JSON: the text as it is
    }
    throw new CloudHttpError(res.status, `${what}: the server answered ${res.status}${detail ? ` (${detail.trim()})` : ''}`, retryAfterMs(res.headers.get('retry-after'), Date.now()));
  };
  const bearer = { authorization: `Bearer ${deviceApiKey}` };
  return {
    apiEndpoint: base,
    async register(provisioningKey, body) {
      const res = await call(endpointPath('register'), { method: 'POST', headers: { authorization: `Bearer ${provisioningKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (res.status !== 201 && res.status !== 200) return refuse(res, 'registration');
      return (await res.json()) as RegisterResponse;
    },
    async target(etag) {
      const res = await call(endpointPath('targetState', { uuid }), { headers: { ...bearer, ...(etag ? { 'if-none-match': etag } : {}) } });
      if (res.status === 304) return { changed: false };
      if (res.status !== 200) return refuse(res, 'target state');
      let body: unknown;
      try {
        body = await res.json();
      } catch (err) {
        throw new CloudHttpError(200, `target state: the answer is not JSON (${(err as Error).message})`);
      }
      return { changed: true, etag: res.headers.get('etag') ?? undefined, body };
    },
    async report(body) {
      const res = await call(endpointPath('report'), { method: 'PATCH', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (!res.ok) return refuse(res, 'report');
      await res.arrayBuffer().catch(() => undefined);
    },
    async logs(batch) {
      const res = await call(endpointPath('logBatch', { uuid }), { method: 'POST', headers: { ...bearer, 'content-type': 'application/json' }, body: JSON.stringify(batch) });
      if (!res.ok) return refuse(res, 'log batch');
      await res.arrayBuffer().catch(() => undefined);
    },
    async registryToken(service, scope) {
      const query = new URLSearchParams({ ...(service ? { service } : {}), scope });
      const basic = Buffer.from(`d_${uuid}:${deviceApiKey}`).toString('base64');
      const res = await call(`${endpointPath('registryToken')}?${query.toString()}`, { headers: { authorization: `Basic ${basic}` } });
      if (!res.ok) return refuse(res, 'registry token');
      return (await res.json()) as RegistryTokenResponse;
    },
  };
}
