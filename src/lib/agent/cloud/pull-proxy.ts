/**
 * The agent's loopback pull proxy. A device's engine pulls only over TLS or from loopback; rather
 * than make every device trust the server's certificate in its engine (or load images by hand),
 * the engine pulls from this proxy on 127.0.0.1 (an ephemeral port, which the engine treats as an
 * insecure registry by default) and the proxy forwards each registry request to the server's
 * `/v2/` over Node's TLS, with a device-scoped token. The engine keeps doing what it does well:
 * it asks only for the layers it lacks, so a second release pulls only what changed.
 *
 * Tokens follow distribution's token protocol (`docs/spec/auth/token.md`): the registry's 401
 * names the service and scope; the proxy asks the server's token endpoint for them with the
 * device's credentials and retries. Only pulls pass (GET and HEAD on a repository): the proxy is
 * no way for anything on the device to push.
 */
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { CloudClient } from './client.js';

export interface PullProxy {
  /** `127.0.0.1:<port>`: the registry host the engine pulls from. */
  readonly host: string;
  close(): Promise<void>;
}

/** A `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge, parsed. */
export function parseBearerChallenge(header: string | undefined): { realm?: string; service?: string; scope?: string } | undefined {
  if (!header || !/^bearer\s/i.test(header)) return undefined;
  const out: Record<string, string> = {};
  for (const [, key = '', value = ''] of header.slice(header.indexOf(' ') + 1).matchAll(/([a-zA-Z]+)="([^"]*)"/g)) out[key.toLowerCase()] = value;
  return { realm: out.realm, service: out.service, scope: out.scope };
}

/** The repository a registry path is about (`/v2/<name>/manifests|blobs|tags/…`), or undefined. */
export function repositoryOf(path: string): string | undefined {
  const m = /^\/v2\/(.+?)\/(manifests|blobs|tags)\//.exec(path.split('?')[0] ?? '');
  return m?.[1];
}

const TOKEN_MARGIN_MS = 30_000;

/**
 * Starts the proxy for the registry at `upstream` (the server's origin, e.g.
 * `https://cloud.example.com`), getting tokens through `client`. `log` gets one line per refused
 * or failed request.
 */
export async function startPullProxy(upstream: string, client: CloudClient, log: (line: string) => void): Promise<PullProxy> {
  const origin = new URL(upstream);
  const transport = origin.protocol === 'https:' ? https : http;
  const tokens = new Map<string, { token: string; until: number }>();
  const sockets = new Set<net.Socket>();

  const forward = (req: http.IncomingMessage, token: string | undefined): Promise<http.IncomingMessage> => new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = { ...req.headers, host: origin.host };
    delete headers.authorization;
    delete headers.connection;
    if (token) headers.authorization = `Bearer ${token}`;
    const out = transport.request({ protocol: origin.protocol, hostname: origin.hostname, port: origin.port || undefined, method: req.method, path: req.url, headers, timeout: 60_000 }, resolve);
    out.on('timeout', () => out.destroy(new Error('no answer in 60 s')));
    out.on('error', reject);
    out.end();
  });

  const tokenFor = async (scope: string, service: string | undefined, fresh: boolean): Promise<string> => {
    const cached = tokens.get(scope);
    if (!fresh && cached && cached.until > Date.now()) return cached.token;
    const answer = await client.registryToken(service, scope);
    const token = answer.token || answer.access_token;
    tokens.set(scope, { token, until: Date.now() + Math.max(0, (answer.expires_in || 60) * 1000 - TOKEN_MARGIN_MS) });
    return token;
  };

  const server = http.createServer((req, res) => {
    void (async () => {
      const path = req.url ?? '/';
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message: 'this proxy only pulls' }] }));
        return;
      }
      if (path === '/v2/' || path === '/v2') {
        // The engine's first question; answered here so it never sees a challenge it would try to answer itself.
        res.writeHead(200, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' }).end('{}');
        return;
      }
      const repository = repositoryOf(path);
      if (!repository) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: 'not a repository path' }] }));
        return;
      }
      const scope = `repository:${repository}:pull`;
      let upstreamRes = await forward(req, tokens.get(scope)?.token);
      if (upstreamRes.statusCode === 401) {
        const challenge = parseBearerChallenge(upstreamRes.headers['www-authenticate']);
        upstreamRes.resume();
        upstreamRes = await forward(req, await tokenFor(challenge?.scope ?? scope, challenge?.service, true));
      }
      const headers = { ...upstreamRes.headers };
      delete headers['www-authenticate']; // the engine has no credentials to answer it with
      delete headers.connection;
      const location = headers.location;
      if (typeof location === 'string' && location.startsWith(origin.origin)) headers.location = location.slice(origin.origin.length);
      res.writeHead(upstreamRes.statusCode ?? 502, headers);
      upstreamRes.pipe(res);
      upstreamRes.on('error', () => res.destroy());
      if (upstreamRes.statusCode === 401 || upstreamRes.statusCode === 403) log(`Registry refused ${req.method} ${path} (${upstreamRes.statusCode})`);
    })().catch((err: Error) => {
      log(`Registry request ${req.method} ${urlOf(req)} failed: ${err.message}`);
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: err.message }] }));
      else res.destroy();
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    }),
  };
}

function urlOf(req: http.IncomingMessage): string {
  return req.url ?? '/';
}
