/**
 * The public URL proxy (issue 11; api/tunnel.ts): `/d/<uuid>/<rest>` (or any path on
 * `<uuid>.<--public-url-domain>`) forwarded to port 80 of the device, through a tunnel stream on
 * its event socket — here, or relayed once to the replica holding that socket.
 *
 * It runs beside Fastify, not inside it: bodies stream both ways unparsed and unbounded by the
 * API's body limit, and WebSocket upgrades are proxied raw while every other upgrade still reaches
 * @fastify/websocket. Answers are for browsers: a status and one line of text.
 *
 * One tunnel stream per request, with `Connection: close` towards the device: a stream costs one
 * round trip on the device's multiplexed connection that is already open, while reusing a device connection
 * would replay a request the device's server closed under us (not safe for a POST), and each
 * device server closes idle connections on its own terms. The client's own connection to us stays
 * keep-alive; the session log counts per client connection and device.
 */
import http, { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { PUBLIC_URL_PORT, PUBLIC_URL_PREFIX } from '../../api/tunnel.js';
import { SkiffError } from '../../errors/errors.js';
import { TunnelRefused } from '../../tunnel/mux.js';
import type { DeviceChannels } from '../events/channel.js';
import type { ServiceContext } from '../services/context.js';
import { isOpenPublicSession, publicDevice, PUBLIC_UUID } from '../services/public-url.js';
import { locateDevice } from '../services/tunnel-locate.js';
import { startSession, type SessionRecorder } from '../services/tunnel-sessions.js';

/** Set on a request one replica relays to the replica holding the device's socket: the relaying replica's open session id. */
export const RELAYED_HEADER = 'x-skiff-relayed';

/** What a public request names: the device, the path on it, and the prefix the device's pages live under for the client. */
export interface PublicTarget {
  uuid: string;
  /** Path and query on the device, starting with `/`. */
  path: string;
  /** `/d/<uuid>` in path mode, '' on a subdomain. */
  prefix: string;
  /** `/d/<uuid>` without the slash: where to send the client instead. */
  redirect?: string;
}

/**
 * The device and path a request names, or undefined when it is not a public-URL request (the API
 * answers it). On `domain`, a Host `<uuid>.<domain>` is the same as `/d/<uuid>/<path>`.
 */
export function publicTarget(url: string, host: string | undefined, domain: string | undefined): PublicTarget | undefined {
  if (domain !== undefined && host !== undefined) {
    const name = host.toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
    if (name.endsWith(`.${domain}`)) {
      const label = name.slice(0, -domain.length - 1);
      if (PUBLIC_UUID.test(label)) return { uuid: label, path: url.startsWith('/') ? url : `/${url}`, prefix: '' };
    }
  }
  if (!url.startsWith(PUBLIC_URL_PREFIX)) return undefined;
  const m = /^([^/?#]*)(.*)$/s.exec(url.slice(PUBLIC_URL_PREFIX.length));
  const uuid = (m?.[1] ?? '').toLowerCase();
  const tail = m?.[2] ?? '';
  const prefix = `${PUBLIC_URL_PREFIX}${uuid}`;
  if (!tail.startsWith('/')) return { uuid, path: '/', prefix, redirect: `${prefix}/${tail}` };
  return { uuid, path: tail, prefix };
}

// RFC 9110 §7.6.1, plus the non-standard ones proxies still meet.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings']);

/** `headers` without hop-by-hop ones (and those the Connection header names); `keepUpgrade` keeps Connection/Upgrade for a WebSocket. */
export function endToEnd(headers: IncomingHttpHeaders, keepUpgrade = false): OutgoingHttpHeaders {
  const named = new Set(String(headers.connection ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean));
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    if (keepUpgrade && (name === 'upgrade' || name === 'connection')) continue;
    if (HOP_BY_HOP.has(name) || named.has(name)) continue;
    out[name] = value;
  }
  if (keepUpgrade && headers.upgrade !== undefined) Object.assign(out, { connection: 'Upgrade', upgrade: headers.upgrade });
  return out;
}

function clientAddress(req: IncomingMessage): string {
  return (req.socket.remoteAddress ?? 'unknown').replace(/^::ffff:/, '');
}

/** A request head as bytes, for the raw (WebSocket) path. */
function requestHead(method: string, path: string, headers: OutgoingHttpHeaders): Buffer {
  const lines = [`${method} ${path} HTTP/1.1`];
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${String(v).replace(/[\r\n]/g, ' ')}`);
  }
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
}

/** Why a request could not reach the device, as the client is told. */
class Unreachable extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

function unreachable(err: unknown): Unreachable {
  if (err instanceof Unreachable) return err;
  if (err instanceof TunnelRefused) {
    if (err.status === 502) return new Unreachable(502, `nothing listens on port ${PUBLIC_URL_PORT} of the device`);
    if (err.status === 503) return new Unreachable(503, 'the device is offline (its agent is stopping)');
    return new Unreachable(err.status === 504 ? 504 : 502, err.message);
  }
  if (err instanceof SkiffError && err.code === 'conflict') return new Unreachable(503, 'the device is offline');
  return new Unreachable(502, `cannot reach the device: ${(err as Error).message}`);
}

type Route =
  | { kind: 'device'; deviceId: number; uuid: string; headers: OutgoingHttpHeaders; session: SessionRecorder | undefined }
  | { kind: 'relay'; replicaUrl: string; uuid: string; headers: OutgoingHttpHeaders; session: SessionRecorder };

/**
 * Serves public URLs on a Node server Fastify owns: {@link attach} puts it in front of the
 * server's `request` and `upgrade` listeners, passing on everything that is not `/d/…` (or a
 * device subdomain).
 */
export class PublicUrlProxy {
  private readonly sessions = new WeakMap<net.Socket, Map<number, Promise<SessionRecorder>>>();
  /** Proxied connections (upgraded sockets, and answers in flight), ended when the server stops. */
  private readonly active = new Set<{ destroy(): unknown }>();

  constructor(private readonly ctx: ServiceContext, private readonly channels: DeviceChannels) {}

  /** Dispatches `/d/…` requests and upgrades here, the rest to the listeners the server had. */
  attach(server: Server): void {
    const domain = this.ctx.options.publicUrlDomain;
    const requestListeners = server.listeners('request') as Array<(req: IncomingMessage, res: ServerResponse) => void>;
    const upgradeListeners = server.listeners('upgrade') as Array<(req: IncomingMessage, socket: Duplex, head: Buffer) => void>;
    server.removeAllListeners('request');
    server.removeAllListeners('upgrade');
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const target = publicTarget(req.url ?? '/', req.headers.host, domain);
      if (target) void this.handleRequest(req, res, target);
      else for (const l of requestListeners) l.call(server, req, res);
    });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const target = publicTarget(req.url ?? '/', req.headers.host, domain);
      if (target) void this.handleUpgrade(req, socket, head, target);
      else for (const l of upgradeListeners) l.call(server, req, socket, head);
    });
  }

  /** Ends every proxied WebSocket and answer in flight (the server is stopping: it would wait for them). */
  close(): void {
    for (const s of this.active) s.destroy();
    this.active.clear();
  }

  /** The session of this client connection with this device, opened on its first request. */
  private session(req: IncomingMessage, deviceId: number, target: string): Promise<SessionRecorder> {
    const socket = req.socket;
    let byDevice = this.sessions.get(socket);
    if (!byDevice) {
      const map = new Map<number, Promise<SessionRecorder>>();
      byDevice = map;
      this.sessions.set(socket, map);
      socket.once('close', () => {
        for (const s of map.values()) void s.then((r) => r.end('closed'), () => undefined);
      });
    }
    let found = byDevice.get(deviceId);
    if (!found) {
      const ip = clientAddress(req);
      found = startSession(this.ctx, { deviceId, userId: null, kind: 'public-url', actor: `public ${ip}`, target, clientAddress: ip });
      byDevice.set(deviceId, found);
      // A failed insert is not remembered: the next request tries again.
      found.catch(() => byDevice.delete(deviceId));
    }
    return found;
  }

  /** Where the request goes, checked before anything reaches the device. @throws Unreachable */
  private async route(req: IncomingMessage, target: PublicTarget, upgrade: boolean): Promise<Route> {
    const device = await publicDevice(this.ctx, target.uuid);
    if (!device) throw new Unreachable(404, 'no public URL for this device');
    const relayed = req.headers[RELAYED_HEADER];
    const trusted = typeof relayed === 'string' && await isOpenPublicSession(this.ctx, device.id, relayed);
    // Expect: Node answered 100-continue already.
    const { [RELAYED_HEADER]: _relayed, expect: _expect, ...headers } = endToEnd(req.headers, upgrade);
    // A replica that relayed the request already said who asked; a client is told who it is.
    if (!trusted) {
      const ip = clientAddress(req);
      const prior = req.headers['x-forwarded-for'];
      headers['x-forwarded-for'] = prior ? `${String(prior)}, ${ip}` : ip;
      headers['x-forwarded-proto'] = (req.socket as Partial<tls.TLSSocket>).encrypted ? 'https' : new URL(this.ctx.options.publicUrl).protocol.replace(':', '');
      headers['x-forwarded-host'] = req.headers.host ?? '';
      if (target.prefix !== '') headers['x-forwarded-prefix'] = target.prefix;
      else delete headers['x-forwarded-prefix'];
    } else if (typeof req.headers['x-forwarded-host'] === 'string') headers.host = req.headers['x-forwarded-host'];
    // Relayed once at most: the replica that relayed asked the bus already.
    const location = trusted ? (this.channels.has(device.id) ? { here: true as const } : undefined) : await locateDevice(this.ctx, this.channels, device.id);
    if (!location) throw new Unreachable(503, 'the device is offline');
    const first = `${req.method ?? 'GET'} ${target.path.split('?')[0] ?? '/'}`;
    const session = trusted ? undefined : await this.session(req, device.id, first);
    if (location.here) return { kind: 'device', deviceId: device.id, uuid: device.uuid, headers, session };
    return { kind: 'relay', replicaUrl: location.replicaUrl, uuid: device.uuid, headers, session: session as SessionRecorder };
  }

  private async handleRequest(req: IncomingMessage, res: ServerResponse, target: PublicTarget): Promise<void> {
    this.active.add(res);
    res.once('close', () => this.active.delete(res));
    try {
      if (target.redirect !== undefined) {
        res.writeHead(308, { location: target.redirect, 'content-type': 'text/plain; charset=utf-8' }).end(`${target.redirect}\n`);
        return;
      }
      const route = await this.route(req, target, false);
      const method = req.method ?? 'GET';
      let outgoing: http.ClientRequest;
      if (route.kind === 'device') {
        const stream = await this.channels.openStream(route.deviceId, { kind: 'tcp', port: PUBLIC_URL_PORT });
        stream.on('data', (chunk: Buffer) => route.session?.addOut(chunk.length));
        stream.on('error', () => undefined);
        res.once('close', () => stream.destroy());
        outgoing = http.request({ createConnection: () => stream, method, path: target.path, headers: { ...route.headers, connection: 'close' }, setHost: false });
      } else {
        const url = new URL(`${PUBLIC_URL_PREFIX}${route.uuid}${target.path}`, route.replicaUrl);
        const { host: _host, ...headers } = route.headers;
        outgoing = (url.protocol === 'https:' ? https : http).request(url, { method, headers: { ...headers, [RELAYED_HEADER]: route.session.uuid }, agent: false });
      }
      route.session?.addIn(requestHead(method, target.path, route.headers).length);
      req.on('data', (chunk: Buffer) => route.session?.addIn(chunk.length));
      outgoing.on('response', (answer) => {
        if (route.kind === 'relay') answer.on('data', (chunk: Buffer) => route.session.addOut(chunk.length));
        try {
          res.writeHead(answer.statusCode ?? 502, answer.statusMessage, endToEnd(answer.headers));
        } catch (err) {
          // A header Node's parser let through but its writer refuses: the device's answer is not passed on.
          answer.destroy();
          this.answer(res, 502, `the device's answer cannot be passed on: ${(err as Error).message}`);
          return;
        }
        answer.pipe(res);
        answer.once('error', () => res.destroy());
      });
      outgoing.on('error', (err) => {
        if (!res.headersSent) this.answer(res, 502, route.kind === 'relay' ? `cannot reach the replica holding the device: ${err.message}` : `the device closed the connection (${err.message})`);
        else res.destroy();
      });
      res.once('close', () => {
        if (!res.writableFinished) outgoing.destroy();
      });
      req.pipe(outgoing);
    } catch (err) {
      const u = unreachable(err);
      if (!(err instanceof Unreachable) && !(err instanceof TunnelRefused) && !(err instanceof SkiffError)) this.ctx.log(`public URL ${target.uuid}: ${(err as Error).stack ?? String(err)}`);
      // The request's body is not wanted: drain it so the answer reaches the client.
      req.resume();
      this.answer(res, u.status, u.message);
    }
  }

  private answer(res: ServerResponse, status: number, message: string): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = `${message}\n`;
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...(status === 503 ? { 'retry-after': '5' } : {}) }).end(body);
  }

  private async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, target: PublicTarget): Promise<void> {
    socket.on('error', () => socket.destroy());
    this.active.add(socket);
    socket.once('close', () => this.active.delete(socket));
    try {
      if (target.redirect !== undefined) throw new Unreachable(404, `no public URL here: use ${target.redirect}`);
      const route = await this.route(req, target, true);
      const method = req.method ?? 'GET';
      let upstream: Duplex;
      let bytes: Buffer;
      if (route.kind === 'device') {
        const stream = await this.channels.openStream(route.deviceId, { kind: 'tcp', port: PUBLIC_URL_PORT });
        upstream = stream;
        bytes = requestHead(method, target.path, route.headers);
      } else {
        const url = new URL(`${PUBLIC_URL_PREFIX}${route.uuid}${target.path}`, route.replicaUrl);
        const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
        upstream = await new Promise<Duplex>((resolve, reject) => {
          const s = url.protocol === 'https:' ? tls.connect({ host: url.hostname, port, servername: url.hostname }, () => resolve(s)) : net.connect({ host: url.hostname, port }, () => resolve(s));
          s.once('error', reject);
        }).catch((err: Error) => {
          throw new Unreachable(502, `cannot reach the replica holding the device: ${err.message}`);
        });
        bytes = requestHead(method, `${url.pathname}${url.search}`, { ...route.headers, host: url.host, [RELAYED_HEADER]: route.session.uuid });
      }
      if (socket.destroyed) {
        upstream.destroy();
        return;
      }
      const session = route.session;
      session?.addIn(bytes.length + head.length);
      upstream.write(bytes);
      if (head.length > 0) upstream.write(head);
      upstream.on('data', (chunk: Buffer) => session?.addOut(chunk.length));
      socket.on('data', (chunk: Buffer) => session?.addIn(chunk.length));
      upstream.on('error', () => socket.destroy());
      upstream.once('close', () => socket.destroy());
      socket.once('close', () => upstream.destroy());
      upstream.pipe(socket);
      socket.pipe(upstream);
    } catch (err) {
      const u = unreachable(err);
      if (!(err instanceof Unreachable) && !(err instanceof TunnelRefused) && !(err instanceof SkiffError)) this.ctx.log(`public URL ${target.uuid}: ${(err as Error).stack ?? String(err)}`);
      const body = `${u.message}\n`;
      socket.end(`HTTP/1.1 ${u.status} ${STATUS_CODES[u.status] ?? 'Error'}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    }
  }
}
