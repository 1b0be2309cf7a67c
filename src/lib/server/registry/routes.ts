/**
 * The registry's routes on the server's own port: `/v2/*`, a streaming reverse proxy to the
 * distribution child (one port to open; blobs of gigabytes pass as streams both ways), and
 * `GET /auth/v1/token`, distribution's token endpoint (`docs/spec/auth/token.md`).
 */
import http from 'node:http';
import https from 'node:https';
import { pipeline, Transform } from 'node:stream';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
// For the OpenAPI fields (summary, description) of route schemas.
import type {} from '@fastify/swagger';
import { RegistryTokenResponse } from '../../api/device-state.js';
import { ApiError } from '../../api/resources.js';
import type { RegistryAction, RegistryRouteDeps, RunningRegistry } from './contract.js';
import { grantableActions, mergeGrants, parseScopes } from './scope.js';
import { DEFAULT_TOKEN_LIFETIME } from './token.js';

/** Path of the token endpoint (ENDPOINTS.registryToken); the realm the proxy announces. */
export const TOKEN_PATH = '/auth/v1/token';

/** A token request asking for more is refused: each scope costs an access check. */
const MAX_SCOPES = 64;

/** Headers of one hop only (RFC 9110 §7.6.1): never forwarded. Node frames the body itself. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
/** Also kept to this hop: the client's `Expect: 100-continue` was already answered by this server. */
const NOT_FORWARDED = new Set([...HOP_BY_HOP, 'expect']);

/** `rawHeaders` (name, value, name, value…) without hop-by-hop ones, each value passed through `map`. */
function forwardHeaders(raw: readonly string[], map: (name: string, value: string) => string = (_n, v) => v): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    const value = raw[i + 1] ?? '';
    if (NOT_FORWARDED.has(name.toLowerCase())) continue;
    out.push(name, map(name.toLowerCase(), value));
  }
  return out;
}

/** `<scheme>://<Host>/auth/v1/token` as the client reached this server (behind a proxy, Fastify's trustProxy decides the scheme). */
export function publicRealm(request: FastifyRequest): string {
  const host = request.headers.host ?? request.hostname;
  return `${request.protocol}://${host}${TOKEN_PATH}`;
}

/** Replaces the realm of a `WWW-Authenticate: Bearer …` challenge, leaving service and scope as they are. */
export function rewriteRealm(challenge: string, realm: string): string {
  return challenge.replace(/realm="[^"]*"/i, `realm="${realm}"`);
}

/** An absolute Location into the child (it should be relative: `http.relativeurls`) made relative, so it never leaks the loopback URL. */
function relativeLocation(location: string, childUrl: string): string {
  return location.startsWith(childUrl) ? location.slice(childUrl.length) || '/' : location;
}

/** distribution's error body (`docs/spec/api.md` "Errors"), which docker prints. */
function registryError(code: string, message: string): string {
  return JSON.stringify({ errors: [{ code, message, detail: null }] });
}

/** Keep-alive connections to the registry: loopback HTTP for our child, maybe HTTPS for an external one. */
interface Agents {
  http: http.Agent;
  https: https.Agent;
}

/** A device's blob download, counted and logged when its response ends (deltas: the bytes a device saved). */
interface BlobCount {
  device: string;
  log: (line: string) => void;
}

/** `GET /v2/<name>/blobs/sha256:…`: the downloads that are counted. */
const BLOB_PATH = /^\/v2\/.+\/blobs\/sha256:[0-9a-f]{64}$/;

function proxy(registry: RunningRegistry, agents: Agents, request: FastifyRequest, reply: FastifyReply, count?: BlobCount): void {
  // From here on the response is ours to write: Fastify must neither serialise nor end it.
  reply.hijack();
  const req = request.raw;
  const res = reply.raw;
  const childUrl = registry.url;
  // Joined as text, never resolved as a URL: a request target such as `//elsewhere/v2/` must not
  // pick the host, and an external registry's URL may have a path of its own.
  const pathAndQuery = req.url ?? '';
  if (!pathAndQuery.startsWith('/v2/') && pathAndQuery !== '/v2') {
    const body = registryError('NAME_INVALID', 'not a registry path');
    res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  const target = new URL(`${childUrl}${pathAndQuery}`);
  // The registry's own host, not ours: an external one may be a virtual host behind a proxy.
  const options = { method: req.method, headers: forwardHeaders(req.rawHeaders, (name, value) => (name === 'host' ? target.host : value)) };
  const upstream = target.protocol === 'https:' ? https.request(target, { ...options, agent: agents.https }) : http.request(target, { ...options, agent: agents.http });
  upstream.on('response', (answer) => {
    const realm = publicRealm(request);
    const headers = forwardHeaders(answer.rawHeaders, (name, value) => {
      if (name === 'www-authenticate') return rewriteRealm(value, realm);
      if (name === 'location') return relativeLocation(value, childUrl);
      return value;
    });
    res.writeHead(answer.statusCode ?? 502, answer.statusMessage, headers);
    if (count && answer.statusCode !== undefined && answer.statusCode < 300) {
      let sent = 0;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, done) {
          sent += chunk.length;
          done(null, chunk);
        },
      });
      res.once('close', () => count.log(`[download] device ${count.device} blob ${sent} ${pathAndQuery.split('?')[0] ?? ''}`));
      pipeline(answer, counter, res, () => undefined);
      return;
    }
    pipeline(answer, res, () => {
      // A client gone mid-download: pipeline already destroyed both ends.
    });
  });
  upstream.on('error', (err) => {
    if (!res.headersSent) {
      // The child is restarting (or gone): a 503 docker retries, not a hang.
      const body = registryError('UNAVAILABLE', `the registry is not answering: ${err.message}`);
      res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'retry-after': '2' });
      res.end(body);
    } else {
      res.destroy(err);
    }
  });
  pipeline(req, upstream, (err) => {
    if (err) upstream.destroy(err);
  });
}

/**
 * The `sub` of a `Bearer <JWT>` header, read without checking the signature: it only ever denies
 * (distribution checks every token it is given), so a forged one gains nothing.
 */
export function bearerSubject(authorization: string | undefined): string | undefined {
  const jwt = /^Bearer\s+([\w-]+)\.([\w-]+)\.([\w-]*)\s*$/i.exec(authorization ?? '');
  if (!jwt?.[2]) return undefined;
  try {
    const sub = (JSON.parse(Buffer.from(jwt[2], 'base64url').toString('utf8')) as { sub?: unknown }).sub;
    return typeof sub === 'string' ? sub : undefined;
  } catch {
    return undefined;
  }
}

/** `scope` as the query gave it: absent, once (a string) or repeated (an array). */
function scopeValues(value: unknown): string[] | undefined {
  if (value === undefined) return [];
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.every((v): v is string => typeof v === 'string')) return value;
  return undefined;
}

const TokenQuery = Type.Object({
  service: Type.Optional(Type.String({ description: 'The registry service the token is for; must be this server\'s.' })),
  scope: Type.Optional(Type.Unknown({ description: 'repository:<fleet uuid>/<service>:pull[,push]; repeated for several, or space-separated.' })),
  account: Type.Optional(Type.String({ description: 'Ignored: the credentials say who asks.' })),
});

function apiError(reply: FastifyReply, statusCode: number, error: string, message: string, field?: string): FastifyReply {
  return reply.code(statusCode).send({ statusCode, error, message, ...(field ? { field } : {}) });
}

/**
 * Mounts `/v2/*` and the token endpoint (see contract.ts RegisterRegistryRoutes). Inside its own
 * plugin scope the proxy has no body parser at all, so request bodies stay unread streams there
 * (and no body limit applies to them) while the rest of the app parses JSON as usual.
 */
export function registerRoutes(app: FastifyInstance, registry: RunningRegistry, deps: RegistryRouteDeps): void {
  const agents: Agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
  app.addHook('onClose', async () => {
    agents.http.destroy();
    agents.https.destroy();
  });

  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null, undefined));
    const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
      const subject = bearerSubject(request.headers.authorization);
      if (subject !== undefined && !(await deps.subjectExists(subject))) {
        // Its holder was removed since the token was made: refused now, not when it expires.
        const body = registryError('UNAUTHORIZED', 'the holder of this token no longer exists');
        await reply.code(401).header('content-type', 'application/json').header('www-authenticate', `Bearer realm="${publicRealm(request)}",service="${registry.service}"`).send(body);
        return;
      }
      const path = (request.raw.url ?? '').split('?')[0] ?? '';
      const counted = deps.log && request.method === 'GET' && subject?.startsWith('device:') && BLOB_PATH.test(path) ? { device: subject.slice(7), log: deps.log } : undefined;
      proxy(registry, agents, request, reply, counted);
    };
    const methods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'];
    const schema = { summary: 'The Docker Registry HTTP API V2 (CNCF distribution), proxied to the registry', description: 'Bearer tokens from GET /auth/v1/token.' };
    scope.route({ method: methods, url: '/v2/', handler, schema });
    scope.route({ method: methods, url: '/v2/*', handler, schema });
  });

  app.get(
    TOKEN_PATH,
    {
      schema: {
        summary: "Distribution's token endpoint: a registry token for the scopes the caller may use",
        querystring: TokenQuery,
        response: { 200: RegistryTokenResponse, 400: ApiError, 401: ApiError },
      },
    },
    async (request, reply) => {
      const query = request.query as Record<string, unknown>;
      const service = query['service'];
      if (typeof service === 'string' && service !== registry.service) return apiError(reply, 400, 'Bad Request', `this server issues tokens for service '${registry.service}', not '${service}'`, 'service');
      const values = scopeValues(query['scope']);
      if (values === undefined) return apiError(reply, 400, 'Bad Request', 'scope must be a string', 'scope');
      const scopes = parseScopes(values);
      if (typeof scopes === 'string') return apiError(reply, 400, 'Bad Request', scopes, 'scope');
      if (scopes.length > MAX_SCOPES) return apiError(reply, 400, 'Bad Request', `at most ${MAX_SCOPES} scopes per token request`, 'scope');

      const principal = await deps.authenticate(request);
      if (!principal) {
        void reply.header('www-authenticate', 'Basic realm="skiff registry"');
        return apiError(reply, 401, 'Unauthorized', 'wrong credentials for the registry');
      }
      const grants: Array<{ repository: string; actions: RegistryAction[] }> = [];
      for (const s of scopes) {
        const asked = grantableActions(s);
        if (asked.length === 0) continue;
        // Unknown repositories and denied actions are left out, never an error (docs/spec/auth/token.md).
        const allowed = await deps.access(principal, s.name, asked);
        grants.push({ repository: s.name, actions: asked.filter((a) => allowed.includes(a)) });
      }
      const issuedAt = new Date();
      const token = await registry.issueToken(principal, mergeGrants(grants), DEFAULT_TOKEN_LIFETIME);
      void reply.header('cache-control', 'no-store');
      return { token, access_token: token, expires_in: DEFAULT_TOKEN_LIFETIME, issued_at: issuedAt.toISOString() };
    },
  );
}
