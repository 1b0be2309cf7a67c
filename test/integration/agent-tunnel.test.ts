/**
 * The agent's side of tunnel sessions (src/lib/agent/cloud/tunnel.ts) against the real engine:
 * a WebSocket pair in the test stands for the event socket, the server's DeviceMuxClient on one
 * end and the agent's serveDeviceMux(tunnelHandler) on the other, so each session is the multiplexed
 * stream the server would open. The services are real containers labelled as the agent labels
 * its own. (The whole path through `skiff server` and the CLI is in the e2e tests.)
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { WebSocket, WebSocketServer } from 'ws';
import { EXEC_FRAME, type ExecControl, type ExecFrame, type TunnelOpen } from '../../src/lib/api/tunnel.js';
import { tunnelHandler } from '../../src/lib/agent/cloud/tunnel.js';
import { LABEL, type EngineContext } from '../../src/lib/agent/engine-state.js';
import { createEngineClient, type EngineClient } from '../../src/lib/docker/engine-lite.js';
import { DeviceMuxClient, RESET_CODE, serveDeviceMux, TunnelRefused, type MuxStream } from '../../src/lib/tunnel/mux.js';
import { encodeControl, encodeFrame, FrameDecoder, parseControl } from '../../src/lib/tunnel/frames.js';
import { BASE_AMD64, TEST_LABEL, cleanupImages, docker as dockerode, ensureBaseImages } from '../support/engine.js';
import { waitFor } from '../support/wait.js';

const RUN = randomBytes(3).toString('hex');
const TEST_VALUE = `agent-tunnel-${RUN}`;
const IMAGE = `skiff-test/busybox-full:${RUN}`;
const UUID = randomBytes(16).toString('hex');

/** What a session gave back: output by stream, and how it ended. */
interface Outcome {
  stdout: string;
  stderr: string;
  stdoutBytes: number;
  control: ExecControl[];
}

/** Reads a session's frames to its end; `onStdout` sees each stdout payload as it comes. */
function collect(stream: MuxStream, onStdout?: (text: string) => void): Promise<Outcome> {
  const out: Outcome = { stdout: '', stderr: '', stdoutBytes: 0, control: [] };
  const decoder = new FrameDecoder();
  stream.pipe(decoder);
  return new Promise((resolve, reject) => {
    decoder.on('data', (frame: ExecFrame) => {
      if (frame.type === EXEC_FRAME.stdout) {
        out.stdoutBytes += frame.payload.length;
        // Large outputs are counted, not kept.
        if (out.stdout.length < 1_000_000) out.stdout += frame.payload.toString('utf8');
        onStdout?.(frame.payload.toString('utf8'));
      } else if (frame.type === EXEC_FRAME.stderr) out.stderr += frame.payload.toString('utf8');
      else if (frame.type === EXEC_FRAME.control) {
        const message = parseControl(frame.payload);
        if (message) out.control.push(message);
      }
    });
    decoder.on('end', () => resolve(out));
    decoder.on('error', reject);
    stream.on('error', reject);
  });
}

/** Writes stdin frames with the stream's back-pressure, then half-closes. */
async function sendStdin(stream: MuxStream, chunks: Iterable<Buffer>): Promise<void> {
  for (const chunk of chunks) {
    if (!stream.write(encodeFrame(EXEC_FRAME.stdin, chunk))) await new Promise((r) => stream.once('drain', r));
  }
  stream.end();
}

/** Reads all bytes of a raw (TCP) session stream. */
function readAll(stream: MuxStream): Promise<string> {
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString('utf8')));
  return new Promise((resolve, reject) => {
    stream.on('end', () => resolve(text));
    stream.on('error', reject);
  });
}

/** Processes in the container whose command line is `command` (ps inside it, as a user would look). */
async function containerProcesses(containerId: string, command: string): Promise<number> {
  // With a TTY the engine sends ps's output raw, no frame headers in the lines.
  const exec = await dockerode.getContainer(containerId).exec({ Cmd: ['ps', '-o', 'args'], AttachStdout: true, Tty: true });
  const stream = await exec.start({ hijack: true, stdin: false, Tty: true });
  const chunks: Buffer[] = [];
  stream.on('data', (d: Buffer) => chunks.push(d));
  await new Promise((r) => stream.on('end', r));
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/).filter((l) => l.trim() === command).length;
}

/** Host processes whose command line (NUL-separated in /proc) is `args`. */
function hostProcesses(args: string[]): number {
  const want = `${args.join('\0')}\0`;
  return readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'latin1') === want;
    } catch {
      return false;
    }
  }).length;
}

describe('agent tunnel sessions: against the real engine', function () {
  this.timeout(60_000);
  let engine: EngineClient;
  let wss: WebSocketServer;
  const clients: WebSocket[] = [];
  /** A mux client per host-shell setting (the agent's --host-shell / --no-host-shell). */
  const mux: Record<'allowed' | 'refused', DeviceMuxClient | undefined> = { allowed: undefined, refused: undefined };
  let web: string;
  let hostnetPort: number;
  const logged: string[] = [];

  async function connect(hostShell: boolean): Promise<DeviceMuxClient> {
    const ws = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/?hostShell=${hostShell ? 1 : 0}`);
    clients.push(ws);
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const client = new DeviceMuxClient(ws);
    ws.on('message', (data: Buffer, isBinary) => {
      if (isBinary) client.receive(data);
    });
    ws.on('close', () => client.socketClosed());
    return client;
  }

  const open = (request: TunnelOpen, hostShell = false): Promise<MuxStream> => (hostShell ? mux.allowed : mux.refused)?.open(request) ?? Promise.reject(new Error('not connected'));

  before(async function () {
    this.timeout(120_000);
    await ensureBaseImages();
    // The shared base image has few applets; these sessions need nc, ps, stty, head and kill.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'skiff-tunnel-img-'));
    try {
      writeFileSync(path.join(dir, 'Dockerfile'), `FROM ${BASE_AMD64}\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n`);
      const tar = await import('tar-fs');
      const build = await dockerode.buildImage(tar.pack(dir) as unknown as NodeJS.ReadableStream, { t: IMAGE, labels: { [TEST_LABEL]: TEST_VALUE } });
      await new Promise<void>((resolve, reject) => dockerode.modem.followProgress(build, (err: Error | null, out: Array<{ error?: string }>) => {
        const failed = out.find((o) => o.error);
        if (err || failed) reject(err ?? new Error(failed?.error));
        else resolve();
      }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    engine = createEngineClient({ socketPath: '/var/run/docker.sock' });
    const labels = (service: string) => ({ [TEST_LABEL]: TEST_VALUE, [LABEL.agent]: UUID, [LABEL.serviceName]: service, [LABEL.appId]: '1' });
    // web: a TCP echo on port 7000 (each connection is `cat`).
    const w = await engine.createContainer({ name: `skiff-tunnel-web-${RUN}`, Image: IMAGE, Cmd: ['nc', '-ll', '-p', '7000', '-e', 'cat'], Labels: labels('web') });
    await w.start();
    web = w.id;
    // hostnet: the same echo on the host's network, on a port free now.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    hostnetPort = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const h = await engine.createContainer({ name: `skiff-tunnel-hostnet-${RUN}`, Image: IMAGE, Cmd: ['nc', '-ll', '-p', String(hostnetPort), '-e', 'cat'], Labels: labels('hostnet'), HostConfig: { NetworkMode: 'host' } });
    await h.start();
    // worker: created, never started.
    await engine.createContainer({ name: `skiff-tunnel-worker-${RUN}`, Image: IMAGE, Cmd: ['sleep', '1000'], Labels: labels('worker') });

    const ctx: EngineContext = {
      docker: engine, uuid: UUID, deviceType: 'generic-amd64', arch: 'amd64', deviceName: 'tunnel-test', apiAddress: 'http://127.0.0.1:48484',
      apiKey: 'k', locksDir: path.join(os.tmpdir(), `skiff-tunnel-locks-${RUN}`), engineSocket: '/var/run/docker.sock', hostPaths: new Set(),
    };
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    wss.on('connection', (ws, req) => {
      const hostShell = new URL(req.url ?? '/', 'http://x').searchParams.get('hostShell') === '1';
      const server = serveDeviceMux(ws, tunnelHandler({ docker: engine, agent: { ctx }, hostShell, log: (m) => logged.push(m) }));
      ws.on('message', (data: Buffer, isBinary) => {
        if (isBinary) server.receive(data);
      });
      ws.on('close', () => server.socketClosed());
    });
    await new Promise((resolve) => wss.once('listening', resolve));
    mux.refused = await connect(false);
    mux.allowed = await connect(true);
    // The echo listens once nc is up.
    await waitFor(async () => (await engine.getContainer(web).inspect()).State.Running, 'the web container to run', 10_000);
  });

  after(async () => {
    for (const ws of clients) ws.terminate();
    wss?.close();
    await cleanupImages({ label: `${TEST_LABEL}=${TEST_VALUE}` });
  });

  it('runs a command in a service: stdout, stderr and its exit status 3', async () => {
    const stream = await open({ kind: 'exec', service: 'web', command: 'echo to out; echo to err >&2; exit 3', tty: false });
    stream.end();
    const out = await collect(stream);
    assert.equal(out.stdout, 'to out\n');
    assert.equal(out.stderr, 'to err\n');
    assert.deepEqual(out.control, [{ type: 'exit', code: 3 }]);
  });

  it('pipes stdin to the command; the half-close is its EOF and no output after it is lost', async () => {
    for (let i = 0; i < 5; i++) {
      const stream = await open({ kind: 'exec', service: 'web', command: 'wc -c; echo after eof', tty: false });
      const done = collect(stream);
      await sendStdin(stream, [Buffer.alloc(70_000, 'a'), Buffer.alloc(30_000, 'b')]);
      const out = await done;
      assert.equal(out.stdout.trim().split(/\s+/).join(' '), '100000 after eof');
      assert.deepEqual(out.control, [{ type: 'exit', code: 0 }]);
    }
  });

  it('gives a terminal shell its size, resizes it, and keeps its exit status', async () => {
    const stream = await open({ kind: 'exec', service: 'web', tty: true, cols: 91, rows: 27, term: 'xterm-256color' });
    let screen = '';
    const done = collect(stream, (text) => (screen += text));
    const type = (text: string) => stream.write(encodeFrame(EXEC_FRAME.stdin, Buffer.from(text)));
    type('stty size; echo "term=$TERM"\n');
    await waitFor(() => /27 91/.test(screen) && /term=xterm-256color/.test(screen), 'the first size and TERM', 10_000);
    // The resize lands before the keys typed after it.
    stream.write(encodeControl({ type: 'resize', cols: 120, rows: 40 }));
    type('stty size\n');
    await waitFor(() => /40 120/.test(screen), 'the new size', 10_000);
    type('echo h""i; exit 5\n');
    const out = await done;
    assert.match(out.stdout, /\r\nhi\r\n/);
    assert.deepEqual(out.control, [{ type: 'exit', code: 5 }]);
  });

  it('ends the process and its children in the container when the session is reset (no orphan)', async () => {
    const stream = await open({ kind: 'exec', service: 'web', command: 'sleep 1001 & sleep 1000; wait', tty: false });
    stream.on('error', () => undefined);
    await waitFor(async () => (await containerProcesses(web, 'sleep 1000')) === 1 && (await containerProcesses(web, 'sleep 1001')) === 1, 'the sleeps to start', 10_000);
    stream.close(RESET_CODE.cancel);
    await waitFor(async () => (await containerProcesses(web, 'sleep 1000')) + (await containerProcesses(web, 'sleep 1001')) === 0, 'no sleep left in the container', 10_000);
  });

  it("delivers a signal to the command's process group", async () => {
    const stream = await open({ kind: 'exec', service: 'web', command: 'trap "echo got TERM; exit 7" TERM; sleep 1005 & wait', tty: false });
    const done = collect(stream);
    await waitFor(async () => (await containerProcesses(web, 'sleep 1005')) === 1, 'the sleep to start', 10_000);
    stream.write(encodeControl({ type: 'signal', signal: 'SIGTERM' }));
    const out = await done;
    assert.equal(out.stdout, 'got TERM\n');
    assert.deepEqual(out.control, [{ type: 'exit', code: 7 }]);
    assert.equal(await containerProcesses(web, 'sleep 1005'), 0);
  });

  it("delivers a signal on a terminal to the shell's foreground command, not the shell", async () => {
    const stream = await open({ kind: 'exec', service: 'web', tty: true, cols: 80, rows: 24 });
    let screen = '';
    const done = collect(stream, (text) => (screen += text));
    stream.write(encodeFrame(EXEC_FRAME.stdin, Buffer.from('sleep 1007\n')));
    await waitFor(async () => (await containerProcesses(web, 'sleep 1007')) === 1, 'the sleep to start', 10_000);
    stream.write(encodeControl({ type: 'signal', signal: 'SIGINT' }));
    await waitFor(async () => (await containerProcesses(web, 'sleep 1007')) === 0, 'the sleep to end by SIGINT', 10_000);
    stream.write(encodeFrame(EXEC_FRAME.stdin, Buffer.from('echo still "here"; exit 3\n')));
    const out = await done;
    assert.match(screen, /\r\nstill here\r\n/);
    assert.deepEqual(out.control, [{ type: 'exit', code: 3 }]);
  });

  it('ends a terminal shell in the container when the device socket drops', async () => {
    const client = await connect(false);
    const stream = await client.open({ kind: 'exec', service: 'web', tty: true, cols: 80, rows: 24 });
    stream.on('error', () => undefined);
    stream.write(encodeFrame(EXEC_FRAME.stdin, Buffer.from('sleep 1002\n')));
    await waitFor(async () => (await containerProcesses(web, 'sleep 1002')) === 1, 'the sleep to start', 10_000);
    clients.at(-1)?.terminate();
    await waitFor(async () => (await containerProcesses(web, 'sleep 1002')) === 0, 'no sleep left in the container', 10_000);
  });

  it('moves 1 GiB of output and 1 GiB of input without the agent holding it (memory stays flat)', async function () {
    this.timeout(180_000);
    const MB = 1024 * 1024;
    const GiB = 1024 * MB;
    // The test process is both ends, and its RSS also holds garbage not yet collected (the
    // buffers of the bytes passing through), so RSS alone says little. The measure is the live
    // memory (heap and buffers right after a full collection), sampled through the transfer. With
    // back-pressure it sits near its start, with short bursts (a read in flight, buffers not yet
    // swept); a side reading faster than the other drains would keep the difference alive, and
    // the samples would climb with the bytes moved.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const live = (): number => {
      gc();
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    const rssBefore = process.memoryUsage().rss;
    const liveBefore = live();
    const samples: number[] = [];
    let rssPeak = rssBefore;
    const sampler = setInterval(() => {
      rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
      samples.push((live() - liveBefore) / MB);
    }, 250);
    try {
      const down = await open({ kind: 'exec', service: 'web', command: `head -c ${GiB} /dev/zero`, tty: false });
      down.end();
      const out = await collect(down);
      assert.equal(out.stdoutBytes, GiB);
      assert.deepEqual(out.control, [{ type: 'exit', code: 0 }]);
      const up = await open({ kind: 'exec', service: 'web', command: 'wc -c', tty: false });
      const result = collect(up);
      // 64 KiB frames, as the CLI reads its stdin.
      const chunk = Buffer.alloc(64 * 1024);
      await sendStdin(up, (function* () {
        for (let sent = 0; sent < GiB; sent += chunk.length) yield chunk;
      })());
      assert.equal((await result).stdout.trim(), String(GiB));
    } finally {
      clearInterval(sampler);
    }
    const sorted = [...samples].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)] ?? 0;
    const peak = sorted.at(-1) ?? 0;
    const lastQuarter = samples.slice(Math.floor((samples.length * 3) / 4));
    const described = `live memory over the transfer (MB above the start): median ${median.toFixed(1)}, peak ${peak.toFixed(1)}, last quarter's median ${(lastQuarter.sort((a, b) => a - b)[Math.floor(lastQuarter.length / 2)] ?? 0).toFixed(1)}`;
    assert.ok(samples.length > 8, `too few samples (${samples.length})`);
    assert.ok(median < 8, described);
    assert.ok(peak < 48, described);
    const rssGrew = (rssPeak - rssBefore) / MB;
    assert.ok(rssGrew < 100, `RSS grew by ${rssGrew.toFixed(0)} MB while moving 2 GiB`);
  });

  it('refuses a service the device does not run (404, naming its services)', async () => {
    await assert.rejects(open({ kind: 'exec', service: 'db', tty: false }), (err: unknown) => {
      assert.ok(err instanceof TunnelRefused);
      assert.equal(err.status, 404);
      assert.equal(err.message, "the device runs no service 'db'; services: hostnet, web, worker");
      return true;
    });
    await assert.rejects(open({ kind: 'tcp', port: 80, service: 'db' }), { status: 404, message: "the device runs no service 'db'; services: hostnet, web, worker" });
  });

  it('refuses a service that is not running (404)', async () => {
    await assert.rejects(open({ kind: 'exec', service: 'worker', command: 'true', tty: false }), { status: 404, message: "service 'worker' is not running (created)" });
  });

  it('connects to a port of a service container (its address on its network), half-closes both ways', async () => {
    const stream = await open({ kind: 'tcp', port: 7000, service: 'web' });
    const text = readAll(stream);
    stream.end('ping over the tunnel\n');
    assert.equal(await text, 'ping over the tunnel\n');
  });

  it('connects to a host-network service on the host', async () => {
    const stream = await waitFor(() => open({ kind: 'tcp', port: hostnetPort, service: 'hostnet' }), 'the host-network echo to listen', 10_000);
    const text = readAll(stream);
    stream.end('ping on the host network\n');
    assert.equal(await text, 'ping on the host network\n');
  });

  it('refuses a port nothing listens on, on the host and in a service (502)', async () => {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const free = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    await assert.rejects(open({ kind: 'tcp', port: free }), { status: 502, message: `nothing listens on port ${free} of the device` });
    await assert.rejects(open({ kind: 'tcp', port: 7001, service: 'web' }), { status: 502, message: "nothing listens on port 7001 of service 'web'" });
  });

  it('refuses a host shell when the agent does not allow one (403)', async () => {
    await assert.rejects(open({ kind: 'exec', command: 'id', tty: false }), { status: 403, message: 'this device does not allow a host shell (start the agent with --host-shell)' });
    await assert.rejects(open({ kind: 'exec', tty: true }), { status: 403 });
  });

  it('runs a command on the host when allowed, with its exit status', async () => {
    const stream = await open({ kind: 'exec', command: 'echo $((2+3)); echo oops >&2; exit 4', tty: false }, true);
    stream.end();
    const out = await collect(stream);
    assert.equal(out.stdout, '5\n');
    assert.equal(out.stderr, 'oops\n');
    assert.deepEqual(out.control, [{ type: 'exit', code: 4 }]);
  });

  it('pipes stdin to a host command', async () => {
    const stream = await open({ kind: 'exec', command: 'wc -c', tty: false }, true);
    const done = collect(stream);
    await sendStdin(stream, [Buffer.alloc(12345)]);
    assert.equal((await done).stdout.trim(), '12345');
  });

  it('gives a host shell a terminal (script), its size, a resize and its exit status', async () => {
    const stream = await open({ kind: 'exec', tty: true, cols: 77, rows: 21 }, true);
    let screen = '';
    const done = collect(stream, (text) => (screen += text));
    const type = (text: string) => stream.write(encodeFrame(EXEC_FRAME.stdin, Buffer.from(text)));
    type('stty size; tty\n');
    await waitFor(() => /21 77/.test(screen) && /\/dev\/pts\/\d+/.test(screen), 'the size on a real terminal', 10_000);
    stream.write(encodeControl({ type: 'resize', cols: 101, rows: 33 }));
    // The resize lands before the keys typed after it.
    type('stty size\n');
    await waitFor(() => /33 101/.test(screen), 'the new size', 10_000);
    type('echo h""i; exit 5\n');
    const out = await done;
    assert.match(out.stdout, /\r\nhi\r\n/);
    assert.deepEqual(out.control, [{ type: 'exit', code: 5 }]);
  });

  it("refuses a host terminal on a device without util-linux's script (502)", async () => {
    const saved = process.env.PATH;
    const empty = mkdtempSync(path.join(os.tmpdir(), 'skiff-no-script-'));
    process.env.PATH = empty;
    try {
      await assert.rejects(open({ kind: 'exec', tty: true }, true), { status: 502, message: "this device has no 'script' (util-linux), which a host terminal needs; run a command without a terminal instead" });
    } finally {
      process.env.PATH = saved;
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('ends a host command and its children when the session is reset', async () => {
    const stream = await open({ kind: 'exec', command: 'sleep 1003 & sleep 1004; wait', tty: false }, true);
    stream.on('error', () => undefined);
    await waitFor(() => hostProcesses(['sleep', '1003']) === 1 && hostProcesses(['sleep', '1004']) === 1, 'the sleeps to start', 10_000);
    stream.close(RESET_CODE.cancel);
    await waitFor(() => hostProcesses(['sleep', '1003']) + hostProcesses(['sleep', '1004']) === 0, 'no sleep left on the host', 10_000);
  });

  it('ends a host terminal shell and what it runs when the session is reset', async () => {
    const stream = await open({ kind: 'exec', tty: true, cols: 80, rows: 24 }, true);
    stream.on('error', () => undefined);
    stream.write(encodeFrame(EXEC_FRAME.stdin, Buffer.from('sleep 1006\n')));
    await waitFor(() => hostProcesses(['sleep', '1006']) === 1, 'the sleep to start', 10_000);
    stream.close(RESET_CODE.cancel);
    await waitFor(() => hostProcesses(['sleep', '1006']) === 0, 'no sleep left on the host', 10_000);
  });
});
