/**
 * The agent's engine client against the real engine (/var/run/docker.sock): every call the agent
 * makes, with the status codes and messages agent code relies on. (Stream parsing on its own is in
 * test/unit/engine-lite-streams.test.ts.)
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ExitCode } from '../../src/lib/errors/errors.js';
import { EngineError, connectLiteEngine, networkGateway, type EngineClient, type EngineEvent, type LogFrame } from '../../src/lib/docker/engine-lite.js';
import { BASE_AMD64, TEST_LABEL, cleanupImages, ensureBaseImages } from '../support/engine.js';
import { waitFor } from '../support/wait.js';

function joined(frames: LogFrame[], stream: LogFrame['stream']): string {
  return Buffer.concat(frames.filter((f) => f.stream === stream).map((f) => f.data)).toString('utf8');
}

describe('engine-lite: against the real engine', function () {
  const RUN = randomBytes(3).toString('hex');
  const label = `${TEST_LABEL}=engine-lite-${RUN}`;
  const labels = { [TEST_LABEL]: `engine-lite-${RUN}` };
  let docker: EngineClient;

  before(async () => {
    await ensureBaseImages();
    const engine = await connectLiteEngine({}, {});
    docker = engine.docker;
    assert.equal(engine.arch, 'amd64');
    assert.equal(engine.local, true);
  });
  after(async () => {
    await cleanupImages({ label });
    for (const v of (await docker.listVolumes({ filters: { label: [label] } })).Volumes ?? []) await docker.getVolume(v.Name).remove().catch(() => {});
    for (const n of await docker.listNetworks({ filters: { label: [label] } })) await docker.getNetwork(n.Id).remove().catch(() => {});
  });

  /** Statuses and messages as the engine gives them. */
  async function engineError(call: Promise<unknown>): Promise<EngineError> {
    const err = await call.then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof EngineError, `expected an EngineError, got ${String(err)}`);
    return err;
  }

  it('an engine that is not there is the usual "cannot reach" error (exit 4)', async () => {
    await assert.rejects(connectLiteEngine({ docker: `/tmp/no-engine-${RUN}.sock` }, {}), (err: Error & { exitCode?: number }) => {
      assert.equal(err.exitCode, ExitCode.dockerUnreachable);
      assert.match(err.message, /cannot reach the Docker engine at unix:\/\/\/tmp\/no-engine-.*\(ENOENT\)/);
      return true;
    });
  });

  it('runs a container through its life: create, start, logs, stop, remove (304, 404 and 409 as the engine says)', async () => {
    const script = 'i=0; while [ $i -lt 2000 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done; trap "exit 0" TERM; while :; do sleep 1 & wait $!; done';
    const name = `skiff-lite-${RUN}`;
    const c = await docker.createContainer({ name, Image: BASE_AMD64, Cmd: ['sh', '-c', script], Labels: labels, StopTimeout: 2 });
    const created = await c.inspect();
    assert.equal(created.Name, `/${name}`);
    assert.equal(created.State.Status, 'created');
    assert.equal(created.Config.Tty, false);

    const again = await engineError(docker.createContainer({ name, Image: BASE_AMD64, Labels: labels }));
    assert.equal(again.statusCode, 409);
    assert.match(again.message, /is already in use/);

    await c.start();
    assert.equal((await engineError(c.start())).statusCode, 304);
    const listed = await docker.listContainers({ filters: { label: [label] } });
    assert.deepEqual(listed.map((x) => x.Id), [c.id]);
    assert.equal(listed[0]?.Labels[TEST_LABEL], `engine-lite-${RUN}`);

    // 2000 interleaved lines on each stream: many frames per chunk and frames cut between chunks.
    const expected = (prefix: string) => Array.from({ length: 2000 }, (_, i) => `${prefix} ${i}\n`).join('');
    const frames = await waitFor(async () => {
      const logs = await c.logs({ stdout: true, stderr: true, tty: false });
      const got: LogFrame[] = [];
      logs.on('data', (f: LogFrame) => got.push(f));
      await new Promise((resolve, reject) => logs.on('end', resolve).on('error', reject));
      return joined(got, 'stdout').length >= expected('out').length && joined(got, 'stderr').length >= expected('err').length && got;
    }, 'the container to have written all its lines', 10_000);
    assert.equal(joined(frames, 'stdout'), expected('out'));
    assert.equal(joined(frames, 'stderr'), expected('err'));

    await c.stop();
    assert.equal((await engineError(c.stop())).statusCode, 304);
    assert.equal((await c.inspect()).State.ExitCode, 0);
    await c.remove({ force: true });
    const gone = await engineError(c.inspect());
    assert.equal(gone.statusCode, 404);
    assert.match(gone.message, /^No such container: /);
    assert.equal((await engineError(c.remove())).statusCode, 404);
  });

  it('follows a TTY container\'s output as one raw stream, until destroyed', async () => {
    const c = await docker.createContainer({ Image: BASE_AMD64, Tty: true, Cmd: ['sh', '-c', 'echo tty says hi; echo to stderr >&2; sleep 30'], Labels: labels });
    await c.start();
    const logs = await c.logs({ follow: true, stdout: true, stderr: true, tty: (await c.inspect()).Config.Tty });
    let text = '';
    await new Promise<void>((resolve, reject) => {
      logs.on('data', (f: LogFrame) => {
        assert.equal(f.stream, 'stdout');
        text += f.data.toString();
        if (text.includes('to stderr')) resolve();
      });
      logs.on('error', reject);
    });
    assert.match(text, /^tty says hi\r\nto stderr\r\n/);
    const closed = new Promise((resolve) => logs.on('close', resolve));
    logs.destroy();
    await closed;
    await c.remove({ force: true });
  });

  it('runs a process in a container: exec create, start (hijacked connection), half-close as EOF, inspect; 409 when it does not run', async () => {
    const c = await docker.createContainer({ Image: BASE_AMD64, Cmd: ['sleep', '30'], Labels: labels });
    const notRunning = await engineError(c.exec({ Cmd: ['true'] }));
    assert.equal(notRunning.statusCode, 409);
    assert.match(notRunning.message, /is not running/);
    await c.start();
    const exec = await c.exec({ Cmd: ['sh', '-c', 'wc -c; echo err >&2; exit 3'], AttachStdin: true, AttachStdout: true, AttachStderr: true });
    const socket = await exec.start({ tty: false });
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    const closed = new Promise((resolve) => socket.on('close', resolve));
    socket.end(Buffer.alloc(1000));
    await closed;
    // Docker's frames: [stream, 0, 0, 0, length BE] then the bytes.
    const frames: Array<[number, string]> = [];
    for (let buf = Buffer.concat(chunks); buf.length >= 8; buf = buf.subarray(8 + buf.readUInt32BE(4))) frames.push([buf[0] ?? 0, buf.subarray(8, 8 + buf.readUInt32BE(4)).toString()]);
    // The engine copies stdout and stderr separately: their order between them is not kept.
    const text = (stream: number) => frames.filter(([t]) => t === stream).map(([, x]) => x).join('');
    assert.deepEqual([text(1).trim(), text(2)], ['1000', 'err\n']);
    const info = await waitFor(async () => {
      const i = await exec.inspect();
      return !i.Running && i.ExitCode !== null && i;
    }, 'the exit status', 10_000);
    assert.equal(info.ExitCode, 3);
    assert.ok(info.Pid > 0);
    await c.remove({ force: true });
  });

  it('reads images, and says 404 for one that is not there', async () => {
    const image = await docker.getImage(BASE_AMD64).inspect();
    assert.match(image.Id, /^sha256:/);
    assert.equal(image.Architecture, 'amd64');
    const listed = await docker.listImages({ filters: { reference: [BASE_AMD64] } });
    assert.deepEqual(listed.map((i) => i.Id), [image.Id]);
    const missing = await engineError(docker.getImage(`skiff-test/none-${RUN}:x`).inspect());
    assert.equal(missing.statusCode, 404);
    assert.match(missing.message, /No such image/);
    assert.equal((await engineError(docker.getImage(`skiff-test/none-${RUN}:x`).remove())).statusCode, 404);
  });

  it('a pull the engine refuses before streaming rejects with its status and message', async () => {
    // No registry is reachable here: the engine answers 500 at once. (Error lines inside the
    // progress stream are covered above.)
    const err = await engineError(docker.pull(`skiff-test/never-there-${RUN}:nope`));
    assert.ok(err.statusCode >= 400, String(err.statusCode));
    assert.ok(err.message.length > 0);
  });

  it('creates, lists and removes volumes and networks', async () => {
    const volume = await docker.createVolume({ Name: `skiff-lite-${RUN}`, Labels: labels });
    assert.equal(volume.Name, `skiff-lite-${RUN}`);
    assert.deepEqual(((await docker.listVolumes({ filters: { label: [label] } })).Volumes ?? []).map((v) => v.Name), [volume.Name]);
    await docker.getVolume(volume.Name).remove();
    assert.equal((await engineError(docker.getVolume(volume.Name).remove())).statusCode, 404);

    const network = await docker.createNetwork({ Name: `skiff-lite-${RUN}`, Driver: 'bridge', CheckDuplicate: true, Labels: labels });
    const inspected = await network.inspect();
    assert.equal(inspected.Name, `skiff-lite-${RUN}`);
    assert.ok(inspected.IPAM.Config?.[0]?.Gateway, 'the network has a gateway');
    assert.deepEqual((await docker.listNetworks({ filters: { label: [label] } })).map((n) => n.Id), [network.id]);
    await network.remove();
    assert.equal((await engineError(docker.getNetwork(network.id).remove())).statusCode, 404);
    // Not IPAM.Config[0].Gateway: the engine leaves it out until dockerd restarts on a machine
    // where it made docker0 itself (a fresh machine), so the agent derives it (networkGateway).
    assert.match(networkGateway(await docker.getNetwork('bridge').inspect()) ?? '', /^\d+\.\d+\.\d+\.\d+$/);
  });

  it('talks TLS to a remote engine when given ca, cert and key (and is refused without a client certificate)', async () => {
    // A TLS front for the real engine, as dockerd --tlsverify is: it wants a client certificate from the same CA.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'skiff-lite-tls-'));
    const file = (name: string) => path.join(dir, name);
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=skiff test CA');
    const sign = (name: string, ext: string) => {
      openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
      writeFileSync(file(`${name}.ext`), `${ext}\n`);
      openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', '-extfile', `${name}.ext`);
    };
    sign('server', 'subjectAltName=IP:127.0.0.1');
    sign('client', 'extendedKeyUsage=clientAuth');
    const server = https.createServer({ key: readFileSync(file('server.key')), cert: readFileSync(file('server.pem')), ca: readFileSync(file('ca.pem')), requestCert: true, rejectUnauthorized: true }, (req, res) => {
      const upstream = http.request({ socketPath: '/var/run/docker.sock', method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const engine = await connectLiteEngine({ dockerHost: '127.0.0.1', dockerPort: port, ca: file('ca.pem'), cert: file('client.pem'), key: file('client.key') }, {});
      assert.equal(engine.address, `https://127.0.0.1:${port}`);
      assert.equal(engine.arch, 'amd64');
      assert.equal((await engine.docker.listImages({ filters: { reference: [BASE_AMD64] } })).length, 1);
      await assert.rejects(connectLiteEngine({ dockerHost: '127.0.0.1', dockerPort: port, ca: file('ca.pem') }, {}), /cannot reach the Docker engine at https:\/\/127\.0\.0\.1/);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('streams the engine\'s events, filtered by label', async () => {
    const events = await docker.getEvents({ filters: { type: ['container'], label: [label] } });
    const seen: EngineEvent[] = [];
    const started = new Promise<void>((resolve, reject) => {
      events.on('data', (e: EngineEvent) => {
        seen.push(e);
        if (e.Action === 'start') resolve();
      });
      events.on('error', reject);
    });
    const c = await docker.createContainer({ Image: BASE_AMD64, Cmd: ['sleep', '30'], Labels: labels });
    await c.start();
    await started;
    assert.deepEqual(seen.map((e) => e.Action), ['create', 'start']);
    assert.equal(seen[0]?.Actor.ID, c.id);
    const closed = new Promise((resolve) => events.on('close', resolve));
    events.destroy();
    await closed;
    await c.remove({ force: true });
  });
});
