/**
 * The tunnel multiplexer (tunnel/mux.ts): HTTP/2 over the binary messages of a real WebSocket on
 * loopback, the server's DeviceMuxClient on one end and the agent's serveDeviceMux on the other,
 * each stream a real TCP connection to a server in this test. What it must hold: many streams at
 * once, a stalled reader that holds back only its own stream (with its unread bytes bounded by its
 * window), refusals as statuses, and every stream ending when the socket drops.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import type { ClientHttp2Stream, ServerHttp2Stream } from 'node:http2';
import WebSocket, { WebSocketServer, type RawData } from 'ws';
import type { TunnelOpen } from '../../src/lib/api/tunnel.js';
import { DeviceMuxClient, refuse, serveDeviceMux, STREAM_WINDOW_BYTES, TunnelRefused } from '../../src/lib/tunnel/mux.js';
import { waitFor } from '../support/wait.js';

const bytes = (d: RawData): Buffer => (Buffer.isBuffer(d) ? d : Array.isArray(d) ? Buffer.concat(d) : Buffer.from(d));

describe('tunnel multiplexer: HTTP/2 over a device WebSocket (real sockets on loopback)', function () {
  this.timeout(60_000);
  let wss: WebSocketServer;
  let echo: net.Server;
  let echoPort: number;
  let client: DeviceMuxClient;
  let deviceSocket: WebSocket;
  let serverSocket: WebSocket;
  const echoSockets = new Set<net.Socket>();

  // The device side: TCP to 127.0.0.1:<port>, as the agent's host sessions do.
  const handler = (open: TunnelOpen, stream: ServerHttp2Stream): void => {
    if (open.kind !== 'tcp') return refuse(stream, 400, 'tcp only here');
    const socket = net.connect(open.port, '127.0.0.1');
    socket.once('connect', () => {
      stream.respond({ ':status': 200 });
      stream.pipe(socket);
      socket.pipe(stream);
      stream.once('close', () => socket.destroy());
    });
    socket.once('error', () => refuse(stream, 502, `nothing listens on port ${open.port}`));
  };

  beforeEach(async () => {
    echo = net.createServer((s) => {
      echoSockets.add(s);
      s.once('close', () => echoSockets.delete(s));
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    echoPort = (echo.address() as net.AddressInfo).port;
    wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise<void>((r) => wss.once('listening', r));
    const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve));
    deviceSocket = new WebSocket(`ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}`);
    const mux = serveDeviceMux(deviceSocket, handler);
    deviceSocket.on('message', (d, binary) => binary && mux.receive(bytes(d)));
    deviceSocket.on('close', () => mux.socketClosed());
    serverSocket = await accepted;
    client = new DeviceMuxClient(serverSocket);
    serverSocket.on('message', (d, binary) => binary && client.receive(bytes(d)));
    serverSocket.on('close', () => client.socketClosed());
  });

  afterEach(async () => {
    deviceSocket.terminate();
    for (const s of echoSockets) s.destroy();
    await new Promise<void>((r) => wss.close(() => r()));
    await new Promise<void>((r) => echo.close(() => r()));
  });

  /** Sends `size` bytes on `stream` and resolves with what came back once `size` bytes did. */
  const roundTrip = (stream: ClientHttp2Stream, size: number): Promise<number> => new Promise((resolve, reject) => {
    let got = 0;
    stream.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= size) resolve(got);
    });
    stream.once('error', reject);
    const chunk = Buffer.alloc(64 * 1024, 0x5a);
    let sent = 0;
    const pump = (): void => {
      while (sent < size) {
        sent += chunk.length;
        if (!stream.write(chunk)) {
          stream.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });

  it('carries 50 streams at once while one reader stalls; the stalled one holds at most about its window', async () => {
    const stalled = await client.open({ kind: 'tcp', port: echoPort });
    stalled.pause();
    // The stalled stream's writer keeps writing until back-pressure stops it.
    let written = 0;
    const chunk = Buffer.alloc(64 * 1024, 1);
    await new Promise<void>((resolve) => {
      const pump = (): void => {
        while (stalled.write(chunk)) written += chunk.length;
        written += chunk.length;
        resolve();
      };
      pump();
    });
    const others = await Promise.all(Array.from({ length: 49 }, () => client.open({ kind: 'tcp', port: echoPort })));
    const results = await Promise.all(others.map((s) => roundTrip(s, 2 * 1024 * 1024)));
    for (const got of results) assert.ok(got >= 2 * 1024 * 1024);
    // Echoed bytes of the stalled stream wait unread in its own buffer: bounded by its window, and
    // the 49 others went through meanwhile.
    await waitFor(() => stalled.readableLength > 0, 'echoed bytes reaching the paused stream', 5000);
    assert.ok(stalled.readableLength <= STREAM_WINDOW_BYTES + 64 * 1024, `${stalled.readableLength} bytes unread on the stalled stream`);
    // Resumed, it carries on.
    stalled.resume();
    for (const s of others) s.close();
    stalled.close();
    assert.ok(written > 0);
  });

  it('answers a refused connection with its status and line, and the multiplexer stays usable', async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    await assert.rejects(client.open({ kind: 'tcp', port }), (err: unknown) => err instanceof TunnelRefused && err.status === 502 && err.message === `nothing listens on port ${port}`);
    await assert.rejects(client.open({ kind: 'exec', tty: false }), (err: unknown) => err instanceof TunnelRefused && err.status === 400);
    const s = await client.open({ kind: 'tcp', port: echoPort });
    assert.ok((await roundTrip(s, 1000)) >= 1000);
    s.close();
  });

  it('passes half-closes: the TCP server sees our end, and its end reaches us', async () => {
    const s = await client.open({ kind: 'tcp', port: echoPort });
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    const ended = new Promise<void>((r) => s.once('end', r));
    s.end('last words');
    await ended;
    assert.equal(Buffer.concat(chunks).toString(), 'last words');
  });

  it('ends every stream when the device socket drops, and refuses new ones', async () => {
    const streams = await Promise.all([1, 2, 3].map(() => client.open({ kind: 'tcp', port: echoPort })));
    const ends = streams.map((s) => new Promise<void>((r) => s.once('close', () => r())));
    deviceSocket.terminate();
    await Promise.all(ends);
    await waitFor(() => echoSockets.size === 0, 'the device-side TCP connections to close', 5000);
    await assert.rejects(client.open({ kind: 'tcp', port: echoPort }), /connection to the server closed/);
  });
});
