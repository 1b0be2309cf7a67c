/**
 * An HTTP proxy on loopback in front of a real server that forwards every plain request (bodies
 * streamed both ways, so registry pulls work through it) and refuses every WebSocket upgrade with
 * a 403, as a corporate proxy that blocks WebSockets does: a device behind it has no event
 * channel and must get its changes by polling.
 */
import http from 'node:http';
import type net from 'node:net';

export interface NoUpgradeProxy {
  /** e.g. `http://127.0.0.1:40123` */
  url: string;
  /** Upgrade requests refused so far. */
  refused(): number;
  close(): Promise<void>;
}

export async function noUpgradeProxy(target: string): Promise<NoUpgradeProxy> {
  const upstream = new URL(target);
  let refused = 0;
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    const forward = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('upgrade', (_req, socket: net.Socket) => {
    refused++;
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${address.port}`,
    refused: () => refused,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
