/**
 * The device API (port 48484), compatible with the balena supervisor endpoints that balena-cli's
 * local mode and our CLI use. A tiny typed router over node:http: one HttpError type mapped to a
 * status, handlers return JSON or text, and `handle()` runs a request without a socket for tests.
 */
import http from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import type {
  AppActionRequest, ApplicationsStateResponse, ContainerIdResponse, DeviceInfoResponse, DeviceV1Response, FailedResponse, LogLine, PurgeResponse,
  ServiceActionRequest, StateStatusResponse, SuccessResponse, TargetStateResponse, VersionResponse,
} from '../device-api/wire.js';
import type { Agent, AgentStatus, FailureKind } from './agent.js';
import { InvalidTargetError } from './target-state.js';

export const AGENT_VERSION = '17.0.0'; // the supervisor API level we speak (>= 9.7 for live push)

/**
 * The largest request body the API reads (1 MiB); beyond it the answer is 413. A target state is
 * a few kilobytes (images are referred to by name), so this leaves room without letting one
 * request hold the device's memory.
 */
export const MAX_BODY_BYTES = 1024 * 1024;

/**
 * Which failures make the agent unhealthy (`GET /v1/healthy` answers 500), per kind: only those a
 * restart of the agent or its engine could cure, as a watchdog would do. A release that failed, a
 * step that keeps failing or containers that cannot be adopted are reported in the status, and
 * the agent itself is working on them.
 */
const UNHEALTHY_WHEN = {
  'engine-unreachable': true,
  'engine-error': true,
  'adoption-failed': false,
  'step-failed': false,
  'release-failed': false,
} satisfies { [K in FailureKind]: boolean };

/** The `/v1/healthy` decision: false while the agent is Failed for a kind a restart could cure. */
export function isHealthy(status: AgentStatus, failure: FailureKind | undefined): boolean {
  return !(status === 'Failed' && failure !== undefined && UNHEALTHY_WHEN[failure]);
}

export class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export interface ApiOptions {
  agent: Agent;
  developmentMode: boolean;
  apiKey: string;
  deviceType: string;
  arch: string;
  listenPort: number;
}

interface Request {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: unknown;
}

type Reply = { status?: number; json?: unknown; text?: string } | { stream: (res: http.ServerResponse) => void };
type Handler = (req: Request) => Promise<Reply> | Reply;

function authorised(req: Request, opts: ApiOptions): boolean {
  if (opts.developmentMode) return true;
  const header = req.headers.authorization;
  const given = header?.startsWith('Bearer ') ? header.slice(7) : req.query.get('apikey') ?? '';
  const a = Buffer.from(given);
  const b = Buffer.from(opts.apiKey);
  return a.length === b.length && timingSafeEqual(a, b);
}

async function appState(opts: ApiOptions) {
  const { agent } = opts;
  const current = await agent.freshState().catch(() => agent.currentState);
  return { current, apps: agent.targetState.local.apps ?? {} };
}

function containerStatus(state: string): string {
  return state === 'running' ? 'Running' : state === 'exited' ? 'Exited' : state === 'created' ? 'Installed' : state.charAt(0).toUpperCase() + state.slice(1);
}

function routes(opts: ApiOptions): Record<string, Handler> {
  const { agent } = opts;
  return {
    'GET /ping': () => ({ text: 'OK' }),
    // balena's supervisor answers with the status's text (express sendStatus): OK, Internal Server Error.
    'GET /v1/healthy': () => (isHealthy(agent.status, agent.failure) ? { text: 'OK' } : { status: 500, text: 'Internal Server Error' }),
    'GET /v2/version': () => ({ json: { status: 'success', version: AGENT_VERSION } satisfies VersionResponse }),
    'GET /v2/local/device-info': () => ({ json: { status: 'success', info: { arch: opts.arch, deviceType: opts.deviceType } } satisfies DeviceInfoResponse }),
    'GET /v2/local/target-state': () => ({ json: { status: 'success', state: agent.targetState } satisfies TargetStateResponse }),
    'POST /v2/local/target-state': async (req) => {
      try {
        await agent.setTarget(req.body, { force: req.query.get('force') === 'true' });
      } catch (err) {
        if (err instanceof InvalidTargetError) throw new HttpError(400, err.message);
        throw err;
      }
      return { json: { status: 'success', message: 'OK' } satisfies SuccessResponse };
    },
    'GET /v2/local/logs': (req) => ({
      stream: (res) => {
        const send = (line: LogLine) => res.write(`${JSON.stringify(line)}\n`);
        res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-cache' });
        for (const e of agent.logs.history()) send(e);
        // ?follow=false: the history only (skiff logs without --tail).
        if (req.query.get('follow') === 'false') {
          res.end();
          return;
        }
        const unsubscribe = agent.logs.subscribe(send);
        res.on('close', unsubscribe);
      },
    }),
    'GET /v2/containerId': async (req) => {
      const containers = (await appState(opts)).current?.containers ?? [];
      const name = req.query.get('serviceName') ?? req.query.get('service');
      if (name) {
        const c = containers.find((x) => x.serviceName === name);
        if (!c) throw new HttpError(503, `could not find service '${name}'`);
        return { json: { status: 'success', containerId: c.containerId } satisfies ContainerIdResponse };
      }
      return { json: { status: 'success', services: Object.fromEntries(containers.map((c) => [c.serviceName, c.containerId])) } satisfies ContainerIdResponse };
    },
    'GET /v2/state/status': async () => {
      const containers = (await appState(opts)).current?.containers ?? [];
      return {
        json: {
          status: 'success',
          appState: agent.status === 'Idle' ? 'applied' : agent.status === 'Applying' ? 'applying' : 'failed',
          overallDownloadProgress: null,
          containers: containers.map((c) => ({ status: containerStatus(c.state), serviceName: c.serviceName, appId: c.appId, serviceId: c.serviceId, containerId: c.containerId, createdAt: c.createdAt })),
          release: agent.appliedCommit ?? null,
          ...(agent.failedRelease ? { failedRelease: agent.failedRelease } : {}),
          ...(agent.lastError ? { error: agent.lastError } : {}),
        } satisfies StateStatusResponse,
      };
    },
    'GET /v2/applications/state': async () => {
      const { current, apps } = await appState(opts);
      const out: ApplicationsStateResponse = {};
      for (const [appId, app] of Object.entries(apps)) {
        const services: ApplicationsStateResponse[string]['services'] = {};
        for (const s of Object.values(app.services ?? {})) {
          const name = String(s.serviceName ?? '');
          const c = current?.containers.find((x) => x.appId === Number(appId) && x.serviceName === name);
          services[name] = { status: c ? containerStatus(c.state) : 'Downloading', releaseId: app.releaseId ?? null, downloadProgress: null };
        }
        out[app.name ?? appId] = { appId: Number(appId), commit: app.commit ?? '', services };
      }
      return { json: out };
    },
    'GET /v1/device': () => ({
      json: {
        api_port: opts.listenPort,
        commit: agent.appliedCommit ?? null,
        status: agent.status === 'Idle' ? 'Idle' : agent.status === 'Applying' ? 'Installing' : 'Failed',
        download_progress: null,
        os_version: `${process.platform} ${process.arch}`,
        supervisor_version: AGENT_VERSION,
        update_pending: agent.status === 'Applying',
        update_downloaded: false,
        update_failed: agent.status === 'Failed',
      } satisfies DeviceV1Response,
    }),
    'POST /v1/restart': async (req) => {
      const appId = Number((req.body as Partial<AppActionRequest> | undefined)?.appId);
      if (!Number.isInteger(appId)) throw new HttpError(400, 'appId is required');
      await agent.restartApp(appId);
      return { text: 'OK' };
    },
    'POST /v1/purge': async (req) => {
      const appId = Number((req.body as Partial<AppActionRequest> | undefined)?.appId);
      if (!Number.isInteger(appId)) throw new HttpError(400, 'appId is required');
      await agent.purgeApp(appId);
      return { json: { Data: 'OK', Error: '' } satisfies PurgeResponse };
    },
  };
}

const SERVICE_ACTION = /^\/v2\/applications\/(\d+)\/(restart-service|stop-service|start-service)$/;

export type RequestHandler = (method: string, url: string, headers: http.IncomingHttpHeaders, body: unknown) => Promise<Reply & { status?: number }>;

/** The router, built once: runs one request without a socket (the server uses it; so can tests). */
export function createHandler(opts: ApiOptions): RequestHandler {
  const table = routes(opts);
  return (method, url, headers, body) => handle(opts, table, method, url, headers, body);
}

/** The service a service action names: by `serviceName`, or by `imageId` as balena's supervisor also accepts (docs/API.md). */
function serviceNamed(opts: ApiOptions, appId: number, body: unknown): string {
  const b = (body ?? {}) as Partial<Record<keyof ServiceActionRequest, unknown>>;
  if (b.serviceName !== undefined) {
    if (typeof b.serviceName !== 'string' || b.serviceName === '') throw new HttpError(400, 'serviceName must be a service name');
    return b.serviceName;
  }
  if (b.imageId !== undefined) {
    if (typeof b.imageId !== 'number' || !Number.isInteger(b.imageId)) throw new HttpError(400, 'imageId must be a whole number');
    const services = opts.agent.targetState.local.apps?.[String(appId)]?.services ?? {};
    const found = Object.values(services).find((s) => s.imageId === b.imageId);
    if (!found) throw new HttpError(404, `no service with imageId ${b.imageId} in app ${appId}`);
    return found.serviceName;
  }
  throw new HttpError(400, 'serviceName or imageId is required');
}

async function handle(opts: ApiOptions, table: Record<string, Handler>, method: string, url: string, headers: http.IncomingHttpHeaders, body: unknown): Promise<Reply & { status?: number }> {
  const u = new URL(url, 'http://device');
  const req: Request = { method, path: u.pathname.replace(/\/+$/, '') || '/', query: u.searchParams, headers, body };
  try {
    if (req.path !== '/ping' && !authorised(req, opts)) throw new HttpError(401, 'Unauthorized');
    const action = SERVICE_ACTION.exec(req.path);
    if (action && method === 'POST') {
      const service = serviceNamed(opts, Number(action[1]), body);
      const found = await opts.agent.serviceAction(Number(action[1]), service, action[2] as 'restart-service' | 'stop-service' | 'start-service');
      if (!found) throw new HttpError(404, `service '${service}' not found`);
      return { text: 'OK' };
    }
    const handler = table[`${method} ${req.path}`];
    if (!handler) throw new HttpError(404, `${method} ${req.path} not found`);
    return await handler(req);
  } catch (err) {
    if (err instanceof HttpError) return { status: err.status, json: { status: 'failed', message: err.message } satisfies FailedResponse };
    return { status: 503, json: { status: 'failed', message: (err as Error).message } satisfies FailedResponse };
  }
}

/** Starts the HTTP server. */
export function serve(opts: ApiOptions, address: string): Promise<http.Server> {
  const handle = createHandler(opts);
  const server = http.createServer((req, res) => {
    const tooLarge = () => {
      // Answered at once; the socket closes after it, so the rest of the body is never read.
      res.writeHead(413, { 'Content-Type': 'application/json', Connection: 'close' })
        .end(JSON.stringify({ status: 'failed', message: `the request body is over the API's limit of ${MAX_BODY_BYTES} bytes` } satisfies FailedResponse));
    };
    if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) return tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        if (!res.headersSent) tooLarge();
        chunks.length = 0;
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (size > MAX_BODY_BYTES) return;
      let body: unknown;
      const text = Buffer.concat(chunks).toString('utf8');
      if (text) {
        try {
          body = JSON.parse(text);
        } catch {
          res.writeHead(400, { 'Content-Type': 'application/json' }).end(JSON.stringify({ status: 'failed', message: 'the body is not valid JSON' } satisfies FailedResponse));
          return;
        }
      }
      void handle(req.method ?? 'GET', req.url ?? '/', req.headers, body).then((reply) => {
        if ('stream' in reply) return reply.stream(res);
        const status = reply.status ?? 200;
        if (reply.json !== undefined) res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(reply.json));
        else res.writeHead(status, { 'Content-Type': 'text/plain' }).end(reply.text ?? '');
      });
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listenPort, address, () => resolve(server));
  });
}
