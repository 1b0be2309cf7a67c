/**
 * The registry part with its real components: Debian's docker-registry (distribution 2.8) as the
 * child startRegistry supervises, and this machine's Docker engine pushing and pulling through the
 * proxy. The Fastify app below only mounts the registry routes; its `authenticate` callback and
 * `access` rule are the two inputs the server core gives the registry part (who asks, and what
 * they may do), written here as plain rules over a few fixed users and devices. They are the
 * core's inputs, not a fake of the server, the registry or the engine.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import type { RegistryAccessCheck, RegistryAuthenticate, RegistryPrincipal } from '../../src/lib/server/registry/contract.js';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { RegistrySupervisor } from '../../src/lib/server/registry/child.js';
import { registryConfig, writeRegistryConfig } from '../../src/lib/server/registry/config.js';
import { startRegistry, registerRegistryRoutes, type SupervisedRegistry } from '../../src/lib/server/registry/index.js';
import { loadOrCreateSigningKey } from '../../src/lib/server/registry/signing-key.js';
import { BASE_AMD64, cleanupImages, docker, ensureBaseImages, makeProject } from '../support/engine.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';

const RUN_ID = randomBytes(3).toString('hex');
const LABEL_KEY = 'io.skiff.test.run';
const LABEL = `${LABEL_KEY}=${RUN_ID}`;
const SERVICE = 'skiff-registry-test';

// Fleets are 32 hex characters, as the core makes them; each run has its own.
const FLEET_A = randomBytes(16).toString('hex');
const FLEET_B = randomBytes(16).toString('hex');

interface Account {
  password: string;
  principal: RegistryPrincipal;
}
const ALICE: Account = { password: 'alice-password', principal: { kind: 'user', userId: 1, email: 'alice@example.com' } };
const BOB: Account = { password: 'bob-password', principal: { kind: 'user', userId: 2, email: 'bob@example.com' } };
const DEVICE_UUID = randomBytes(16).toString('hex');
const DEVICE: Account = { password: randomBytes(16).toString('hex'), principal: { kind: 'device', deviceId: 10, uuid: DEVICE_UUID } };
const ACCOUNTS: Record<string, Account> = { 'alice@example.com': ALICE, 'bob@example.com': BOB, [`d_${DEVICE_UUID}`]: DEVICE };
/** Fleet owner (user id) and the fleet each device is in. */
const FLEET_OWNER: Record<string, number> = { [FLEET_A]: 1, [FLEET_B]: 2 };
const DEVICE_FLEET: Record<number, string> = { 10: FLEET_A };

/** The core's first input: basic auth against the accounts above. */
const authenticate: RegistryAuthenticate = async (request: FastifyRequest) => {
  const header = request.headers.authorization ?? '';
  if (!header.startsWith('Basic ')) return undefined;
  const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const account = ACCOUNTS[decoded.slice(0, colon)];
  return account && account.password === decoded.slice(colon + 1) ? account.principal : undefined;
};

/** The core's second input, as contract.ts states the rule: users push and pull their fleets' repositories, devices pull their own fleet's. */
const access: RegistryAccessCheck = async (principal, repository, actions) => {
  const fleet = repository.split('/')[0] ?? '';
  if (principal.kind === 'user') return FLEET_OWNER[fleet] === principal.userId ? actions : [];
  return DEVICE_FLEET[principal.deviceId] === fleet ? actions.filter((a) => a === 'pull') : [];
};

interface Progress {
  error?: string;
  aux?: { Digest?: string; Size?: number };
}

async function follow(stream: NodeJS.ReadableStream): Promise<Progress[]> {
  return new Promise((resolve, reject) => docker.modem.followProgress(stream, (err: Error | null, out: Progress[]) => (err ? reject(err) : resolve(out))));
}

/** The engine's push; resolves with the manifest digest, rejects with the engine's error line. */
async function push(repo: string, tag: string, account: Account, username: string, serveraddress: string): Promise<string> {
  const stream = await docker.getImage(`${repo}:${tag}`).push({ tag, authconfig: { username, password: account.password, serveraddress } });
  const out = await follow(stream);
  const failed = out.find((o) => o.error);
  if (failed) throw new Error(failed.error);
  const digest = out.find((o) => o.aux?.Digest)?.aux?.Digest;
  assert.ok(digest, 'the engine reported no digest');
  return digest;
}

async function pull(ref: string, account: Account, username: string, serveraddress: string): Promise<void> {
  const stream = await docker.pull(ref, { authconfig: { username, password: account.password, serveraddress } });
  const out = await follow(stream);
  const failed = out.find((o) => o.error);
  if (failed) throw new Error(failed.error);
}

async function removeLocal(ref: string): Promise<void> {
  await docker.getImage(ref).remove({ noprune: false }).catch(() => undefined);
}

function basic(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
}

describe('registry (real docker-registry child, real engine)', function () {
  let registry: SupervisedRegistry;
  let app: FastifyInstance;
  let base: string;
  let host: string;
  let dataDir: string;
  const logs: string[] = [];
  let image: string;

  async function tokenFor(username: string, password: string, ...scopes: string[]): Promise<Response> {
    const q = new URLSearchParams({ service: SERVICE });
    for (const s of scopes) q.append('scope', s);
    return fetch(`${base}/auth/v1/token?${q}`, { headers: { authorization: basic(username, password) } });
  }

  async function grantedAccess(username: string, password: string, ...scopes: string[]): Promise<unknown> {
    const res = await tokenFor(username, password, ...scopes);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { token: string };
    const payload = JSON.parse(Buffer.from(body.token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { access: unknown };
    return payload.access;
  }

  before(async () => {
    await ensureBaseImages();
    dataDir = path.join(scratchDir('skiff-registry-'), 'registry');
    registry = await startRegistry({ dataDir, service: SERVICE, log: (line) => logs.push(line) });
    // As the server core builds its app: no type coercion, unknown fields kept (docker sends account, client_id…).
    app = Fastify({ ajv: { customOptions: { removeAdditional: false, coerceTypes: false } } });
    registerRegistryRoutes(app, registry, { authenticate, access, subjectExists: async () => true });
    base = await app.listen({ host: '127.0.0.1', port: 0 });
    host = new URL(base).host;
    // A tiny image of our own, labelled for clean-up.
    const dir = makeProject({ Dockerfile: `FROM ${BASE_AMD64}\nCOPY stamp /stamp\n`, stamp: `${RUN_ID}\n` });
    const tar = await import('tar-fs');
    image = `${host}/${FLEET_A}/web`;
    const stream = await docker.buildImage(tar.pack(dir) as unknown as NodeJS.ReadableStream, { t: `${image}:src`, labels: { [LABEL_KEY]: RUN_ID } });
    const out = await follow(stream);
    assert.equal(out.find((o) => o.error), undefined);
  });

  // Each test tags the image it pushes from `src`, which only the first test removes (and restores).
  beforeEach(async () => {
    await docker.getImage(`${image}:src`).tag({ repo: image, tag: 'v1' });
  });

  after(async () => {
    await app?.close();
    await registry?.stop();
    await cleanupImages({ label: LABEL });
  });

  it('a user pushes an image through the proxy with the engine, and pulls it back after removing it', async () => {
    const digest = await push(image, 'v1', ALICE, 'alice@example.com', host);
    assert.match(digest, /^sha256:[a-f0-9]{64}$/);
    const id = (await docker.getImage(`${image}:v1`).inspect()).Id;
    await removeLocal(`${image}:v1`);
    await removeLocal(`${image}:src`);
    await assert.rejects(docker.getImage(id).inspect(), 'the image is gone from the engine');
    await pull(`${image}:v1`, ALICE, 'alice@example.com', host);
    assert.equal((await docker.getImage(`${image}:v1`).inspect()).Id, id);
    await docker.getImage(`${image}:v1`).tag({ repo: image, tag: 'src' });
    // The blobs are in the data dir, as distribution stores them.
    assert.ok(existsSync(path.join(dataDir, 'storage/docker/registry/v2/repositories', FLEET_A, 'web')));
  });

  it('docker login through the engine works with the right password and fails with a wrong one', async () => {
    const ok = (await docker.checkAuth({ username: 'alice@example.com', password: ALICE.password, serveraddress: host })) as { Status?: string };
    assert.equal(ok.Status, 'Login Succeeded');
    await assert.rejects(docker.checkAuth({ username: 'alice@example.com', password: 'wrong', serveraddress: host }), /unauthorized|401/i);
  });

  it('manifest() gives the pushed digest, the bytes of config + layers, and the layers; undefined when absent', async () => {
    const digest = await push(image, 'v1', ALICE, 'alice@example.com', host);
    const m = await registry.manifest(`${FLEET_A}/web`, digest);
    assert.ok(m);
    assert.equal(m.digest, digest);
    // Check the size against the registry's own answers for each blob (HEAD through the proxy).
    const token = ((await (await tokenFor('alice@example.com', ALICE.password, `repository:${FLEET_A}/web:pull`)).json()) as { token: string }).token;
    const manifest = (await (await fetch(`${base}/v2/${FLEET_A}/web/manifests/${digest}`, { headers: { authorization: `Bearer ${token}`, accept: 'application/vnd.docker.distribution.manifest.v2+json' } })).json()) as { config: { digest: string } };
    let total = 0;
    for (const blob of [manifest.config.digest, ...m.layers]) {
      const head = await fetch(`${base}/v2/${FLEET_A}/web/blobs/${blob}`, { method: 'HEAD', headers: { authorization: `Bearer ${token}` } });
      assert.equal(head.status, 200);
      assert.equal(head.headers.get('docker-content-digest'), blob);
      total += Number(head.headers.get('content-length'));
    }
    assert.equal(m.size, total);
    assert.ok(m.layers.length >= 2, 'the busybox base layer and the stamp layer');
    assert.equal(await registry.manifest(`${FLEET_A}/web`, `sha256:${'0'.repeat(64)}`), undefined);
    assert.equal(await registry.manifest(`${FLEET_B}/nothing`, digest), undefined);
    await assert.rejects(registry.manifest(`${FLEET_A}/web`, 'sha256:xyz'), /not a sha256 digest/);
    await assert.rejects(registry.manifest('Not/A/Repo', digest), /not a repository name/);
  });

  it('a device can pull its fleet\'s image but not push', async () => {
    await push(image, 'v1', ALICE, 'alice@example.com', host);
    await removeLocal(`${image}:v1`);
    await removeLocal(`${image}:src`);
    // The whole image comes down with the device's token (layers too: none is left locally).
    await pull(`${image}:v1`, DEVICE, `d_${DEVICE_UUID}`, host);
    await docker.getImage(`${image}:v1`).tag({ repo: image, tag: 'src' });
    await docker.getImage(`${image}:v1`).tag({ repo: image, tag: 'from-device' });
    await assert.rejects(push(image, 'from-device', DEVICE, `d_${DEVICE_UUID}`, host), /denied|unauthorized|insufficient/i);
    assert.deepEqual(await grantedAccess(`d_${DEVICE_UUID}`, DEVICE.password, `repository:${FLEET_A}/web:pull,push`), [{ type: 'repository', name: `${FLEET_A}/web`, actions: ['pull'] }]);
  });

  it('another fleet\'s repository is refused: left out of the token, push denied, pull denied', async () => {
    const other = `${host}/${FLEET_B}/web`;
    await docker.getImage(`${image}:v1`).tag({ repo: other, tag: 'v1' });
    await assert.rejects(push(other, 'v1', ALICE, 'alice@example.com', host), /denied|unauthorized/i);
    // Bob owns fleet B: his push works, and neither Alice nor her device can pull it.
    await push(other, 'v1', BOB, 'bob@example.com', host);
    await removeLocal(`${other}:v1`);
    await assert.rejects(pull(`${other}:v1`, ALICE, 'alice@example.com', host), /denied|unauthorized|not found|does not exist/i);
    await assert.rejects(pull(`${other}:v1`, DEVICE, `d_${DEVICE_UUID}`, host), /denied|unauthorized|not found|does not exist/i);
    assert.deepEqual(await grantedAccess('alice@example.com', ALICE.password, `repository:${FLEET_B}/web:pull,push`, `repository:${FLEET_A}/web:pull`), [
      { type: 'repository', name: `${FLEET_A}/web`, actions: ['pull'] },
    ]);
    // A token for fleet B's repository signed for Alice carries no access: the registry refuses it.
    const token = ((await (await tokenFor('alice@example.com', ALICE.password, `repository:${FLEET_B}/web:pull`)).json()) as { token: string }).token;
    const res = await fetch(`${base}/v2/${FLEET_B}/web/tags/list`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(res.status, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', new RegExp(`realm="${base}/auth/v1/token".*scope="repository:${FLEET_B}/web:pull"`));
  });

  it('wrong credentials: 401 with WWW-Authenticate Basic, and the engine cannot pull', async () => {
    for (const [user, password] of [
      ['alice@example.com', 'wrong'],
      ['nobody@example.com', 'x'],
      [`d_${DEVICE_UUID}`, 'not-the-key'],
    ] as const) {
      const res = await tokenFor(user, password, `repository:${FLEET_A}/web:pull`);
      assert.equal(res.status, 401, user);
      assert.match(res.headers.get('www-authenticate') ?? '', /^Basic /);
      assert.equal(((await res.json()) as { message: string }).message, 'wrong credentials for the registry');
    }
    const anonymous = await fetch(`${base}/auth/v1/token?service=${SERVICE}`);
    assert.equal(anonymous.status, 401);
    await removeLocal(`${image}:v1`);
    await assert.rejects(pull(`${image}:v1`, { ...ALICE, password: 'wrong' }, 'alice@example.com', host), /unauthorized|401|denied/i);
  });

  it('a bad scope or another service is a 400 naming the field; docker login\'s extra parameters are ignored', async () => {
    const cases: Array<[string, string, RegExp]> = [
      [`service=${SERVICE}&scope=repository:${FLEET_A}/Web:pull`, 'scope', /is not a repository name/],
      [`service=${SERVICE}&scope=repository:${FLEET_A}/web`, 'scope', /is not type:name:actions/],
      [`service=${SERVICE}&scope=repository:${FLEET_A}/web:`, 'scope', /asks for no action/],
      ['service=another&scope=repository:a/b:pull', 'service', /issues tokens for service 'skiff-registry-test', not 'another'/],
      [`service=${SERVICE}&${Array.from({ length: 65 }, (_, i) => `scope=repository:a/r${i}:pull`).join('&')}`, 'scope', /at most 64 scopes/],
    ];
    for (const [query, field, message] of cases) {
      const res = await fetch(`${base}/auth/v1/token?${query}`, { headers: { authorization: basic('alice@example.com', ALICE.password) } });
      assert.equal(res.status, 400, query);
      const body = (await res.json()) as { field?: string; message: string };
      assert.equal(body.field, field);
      assert.match(body.message, message);
    }
    // docker login's extra parameters are taken and ignored (the credentials say who asks).
    const login = await fetch(`${base}/auth/v1/token?account=someone-else&client_id=docker&offline_token=true&service=${SERVICE}`, { headers: { authorization: basic('alice@example.com', ALICE.password) } });
    assert.equal(login.status, 200);
    const body = (await login.json()) as { token: string; access_token: string; expires_in: number; issued_at: string };
    assert.equal(body.access_token, body.token);
    assert.equal(body.expires_in, 600);
    assert.ok(Math.abs(Date.parse(body.issued_at) - Date.now()) < 60_000);
    assert.equal(login.headers.get('cache-control'), 'no-store');
    // Scopes asking for what is never granted (delete, the catalog) are left out, not refused.
    assert.deepEqual(await grantedAccess('alice@example.com', ALICE.password, `repository:${FLEET_A}/web:delete,*`, 'registry:catalog:*'), []);
  });

  it('the registry killed with SIGKILL is restarted, says so, and a pull works again', async () => {
    await push(image, 'v1', ALICE, 'alice@example.com', host);
    await removeLocal(`${image}:v1`);
    const pid = registry.pid;
    assert.ok(pid);
    const before = logs.length;
    process.kill(pid, 'SIGKILL');
    await waitFor(() => logs.slice(before).some((l) => /^\[registry\] exited with signal SIGKILL; restarting in \d+ ms$/.test(l)), 'the exit in the log', 10_000);
    // Meanwhile the proxy answers at once with distribution's UNAVAILABLE, which clients retry.
    const down = await fetch(`${base}/v2/`);
    if (!logs.slice(before).includes('[registry] running again')) {
      assert.equal(down.status, 503);
      assert.equal(((await down.json()) as { errors: Array<{ code: string }> }).errors[0]?.code, 'UNAVAILABLE');
    }
    await waitFor(() => logs.slice(before).includes('[registry] running again'), 'the restart in the log', 30_000);
    assert.notEqual(registry.pid, pid);
    await pull(`${image}:v1`, ALICE, 'alice@example.com', host);
  });

  it('a child that stops answering (SIGSTOP, not dead) is killed and restarted, saying so', async () => {
    const dir = scratchDir('skiff-registry-hung-');
    const key = await loadOrCreateSigningKey(dir);
    const lines: string[] = [];
    // The supervisor as startRegistry makes it, with checks 200 ms apart instead of 10 s.
    const supervisor = new RegistrySupervisor({
      runDir: path.join(dir, 'run'),
      log: (l) => lines.push(l),
      health: { intervalMs: 200, timeoutMs: 300, misses: 3 },
      writeConfig: (port, file) => writeRegistryConfig(file, registryConfig({ dataDir: dir, port, service: SERVICE, certFile: key.certFile, user: {} })),
    });
    await supervisor.start();
    try {
      const pid = supervisor.pid;
      assert.ok(pid);
      process.kill(pid, 'SIGSTOP');
      await waitFor(() => lines.includes('[registry] not answering for 3 checks in a row; killing it'), 'the hung child to be noticed', 10_000);
      await waitFor(() => lines.some((l) => /^\[registry\] exited with signal SIGKILL; restarting in \d+ ms$/.test(l)), 'the kill in the log', 10_000);
      await waitFor(() => lines.includes('[registry] running again'), 'the restart', 30_000);
      assert.notEqual(supervisor.pid, pid);
      assert.equal((await fetch(`${supervisor.url}/v2/`)).status, 401);
    } finally {
      await supervisor.stop();
    }
  });

  it('a 200 MB blob streams through the proxy both ways (Range too): the server\'s RSS grows under 50 MB once warm, under 100 MB the first time', async function () {
    this.timeout(300_000);
    const dir = scratchDir('skiff-registry-blob-');
    const file = path.join(dir, 'blob');
    const size = 200 * 1024 * 1024;
    const chunk = randomBytes(1024 * 1024);
    const hash = createHash('sha256');
    const fd = openSync(file, 'w');
    for (let i = 0; i < size / chunk.length; i++) {
      writeSync(fd, chunk);
      hash.update(chunk);
    }
    closeSync(fd);
    const digest = `sha256:${hash.digest('hex')}`;
    // The server in a process of its own, as `skiff server` runs, and curl as the client: the
    // kernel's peak RSS of that process (VmHWM, reset first) is the server's memory alone.
    const server = await serverProcess(dir, `${FLEET_A}/big`);
    try {
      const auth = `Authorization: Bearer ${server.token}`;
      // Up with a monolithic PUT (curl -T streams the file), then back down into a file.
      const upAndDown = async (source: string, blobDigest: string, blobSize: number): Promise<void> => {
        const upload = await curl(['-X', 'POST', '-D', '-', '-o', '/dev/null', '-H', auth, `${server.url}/v2/${FLEET_A}/big/blobs/uploads/`]);
        const location = /^location: (.*?)\r?$/im.exec(upload)?.[1] ?? '';
        assert.ok(location.startsWith('/v2/'), `a relative Location: ${location}`);
        const url = new URL(location, server.url);
        url.searchParams.set('digest', blobDigest);
        assert.equal(await curl(['-X', 'PUT', '-T', source, '-H', auth, '-H', 'Content-Type: application/octet-stream', '-o', '/dev/null', '-w', '%{http_code}', url.toString()]), '201');
        const got = await curl(['-D', path.join(dir, 'headers'), '-H', auth, '-o', path.join(dir, 'back'), '-w', '%{http_code} %{size_download}', `${server.url}/v2/${FLEET_A}/big/blobs/${blobDigest}`]);
        assert.equal(got, `200 ${blobSize}`);
      };
      // A first small blob warms the server up (code compiled, pools made) before the measure.
      const warm = path.join(dir, 'warm');
      writeFileSync(warm, chunk);
      await upAndDown(warm, `sha256:${createHash('sha256').update(chunk).digest('hex')}`, chunk.length);

      // Peak RSS over the idle size, per transfer. The first one also pays for V8 growing its young
      // generation and letting up to ~32-64 MB of spent chunks wait for a collection (its external
      // memory trigger); later ones reuse that memory. Buffering would show as 200 MB each time.
      const peaks: number[] = [];
      for (let i = 0; i < 2; i++) {
        const idle = procStatus(server.pid, 'VmRSS');
        writeFileSync(`/proc/${server.pid}/clear_refs`, '5');
        await upAndDown(file, digest, size);
        peaks.push((procStatus(server.pid, 'VmHWM') - idle) / 1024);
      }
      const [first = 0, second = 0] = peaks;
      process.stderr.write(`      (server RSS peaked ${first.toFixed(1)} MB, then ${second.toFixed(1)} MB, over idle while 200 MB went up and down)\n`);
      assert.ok(first < 100, `the first 200 MB grew RSS by ${first.toFixed(1)} MB`);
      assert.ok(second < 50, `the second 200 MB grew RSS by ${second.toFixed(1)} MB`);
      assert.match(readFileSync(path.join(dir, 'headers'), 'utf8'), new RegExp(`^docker-content-digest: ${digest}\\r$`, 'im'));
      assert.equal(`sha256:${(await curl(['-o', '-', `file://${path.join(dir, 'back')}`], 'sha256sum')).split(' ')[0]}`, digest);

      const range = await fetch(`${server.url}/v2/${FLEET_A}/big/blobs/${digest}`, { headers: { authorization: `Bearer ${server.token}`, range: 'bytes=1048576-1048675' } });
      assert.equal(range.status, 206);
      assert.equal(range.headers.get('content-length'), '100');
      assert.deepEqual(Buffer.from(await range.arrayBuffer()), chunk.subarray(0, 100));
    } finally {
      await server.stop();
    }
  });

  it('--registry-config puts storage where it says, and refuses http/auth it would lose', async () => {
    const dir = scratchDir('skiff-registry-config-');
    const elsewhere = path.join(dir, 'elsewhere');
    const configFile = path.join(dir, 'distribution.yml');
    writeFileSync(configFile, `storage:\n  filesystem:\n    rootdirectory: ${elsewhere}\n`);
    const own = await startRegistry({ dataDir: path.join(dir, 'registry'), configFile, service: SERVICE, log: () => undefined });
    try {
      const token = await own.issueToken(ALICE.principal, [{ repository: `${FLEET_A}/cfg`, actions: ['pull', 'push'] }]);
      const res = await fetch(`${own.url}/v2/${FLEET_A}/cfg/blobs/uploads/`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 202);
      assert.ok(readdirSync(path.join(elsewhere, 'docker/registry/v2/repositories', FLEET_A)).includes('cfg'));
      assert.equal(existsSync(path.join(dir, 'registry', 'storage')), false);
    } finally {
      await own.stop();
    }
    writeFileSync(configFile, 'http:\n  addr: 0.0.0.0:5000\n');
    await assert.rejects(startRegistry({ dataDir: path.join(dir, 'registry2'), configFile, service: SERVICE, log: () => undefined }), /sets http, which skiff server sets itself/);
  });

  it('a registry that will not start is an error with its last lines, and no restart is announced', async () => {
    const dir = scratchDir('skiff-registry-bad-');
    const configFile = path.join(dir, 'distribution.yml');
    // distribution 2.8 stops at once on S3 storage without a region.
    writeFileSync(configFile, 'storage:\n  s3:\n    bucket: b\n');
    const lines: string[] = [];
    await assert.rejects(startRegistry({ dataDir: path.join(dir, 'registry'), configFile, service: SERVICE, log: (l) => lines.push(l) }), (err: unknown) => {
      assert.ok(err instanceof SkiffError);
      assert.match(err.message, /^the registry did not start \(exited with code \d+\)$/);
      assert.ok(err.details.some((l) => /region/i.test(l)), err.details.join('\n'));
      return true;
    });
    assert.equal(lines.filter((l) => /restarting/.test(l)).length, 0);
    assert.deepEqual(readdirSync(path.join(dir, 'registry', 'run')), [], 'its config and pid file are gone');
  });

  it('two servers sharing one data dir run a child each on the same storage and key, and leave each other\'s child alone', async () => {
    const dir = scratchDir('skiff-registry-replicas-');
    const a = await serverProcess(dir, `${FLEET_A}/shared`);
    const b = await startRegistry({ dataDir: path.join(dir, 'registry'), service: SERVICE, log: () => undefined });
    try {
      assert.ok(alive(a.registryPid), "the other server's child runs on");
      assert.notEqual(b.url, new URL(a.url).origin);
      // A blob uploaded through one server is read through the other's child with the first's token.
      const blob = randomBytes(1000);
      const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
      const auth = { authorization: `Bearer ${a.token}` };
      const start = await fetch(`${a.url}/v2/${FLEET_A}/shared/blobs/uploads/`, { method: 'POST', headers: auth });
      const url = new URL(start.headers.get('location') ?? '', a.url);
      url.searchParams.set('digest', digest);
      assert.equal((await fetch(url, { method: 'PUT', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: blob })).status, 201);
      const back = await fetch(`${b.url}/v2/${FLEET_A}/shared/blobs/${digest}`, { headers: auth });
      assert.equal(back.status, 200);
      assert.deepEqual(Buffer.from(await back.arrayBuffer()), blob);
    } finally {
      await b.stop();
      await a.stop();
    }
    assert.equal(alive(a.registryPid), false, 'the server stopped its child on SIGTERM');
  });

  it('with externalUrl nothing is started: the routes proxy to that registry, which trusts the key in the data dir', async () => {
    const dir = scratchDir('skiff-registry-external-');
    // The "external" registry is one of ours on the same data dir, so it trusts the same key.
    const external = await startRegistry({ dataDir: dir, service: SERVICE, log: () => undefined });
    const lines: string[] = [];
    const viaUrl = await startRegistry({ dataDir: dir, service: SERVICE, externalUrl: `${external.url}/`, log: (l) => lines.push(l) });
    const other = Fastify();
    registerRegistryRoutes(other, viaUrl, { authenticate, access, subjectExists: async () => true });
    try {
      assert.equal(viaUrl.url, external.url);
      assert.equal(viaUrl.pid, undefined);
      assert.match(lines.join('\n'), new RegExp(`using ${external.url}; its auth.token must name service and issuer '${SERVICE}' and trust ${dir}/token-signing.crt`));
      const url = await other.listen({ host: '127.0.0.1', port: 0 });
      const token = await viaUrl.issueToken(ALICE.principal, [{ repository: `${FLEET_A}/ext`, actions: ['pull', 'push'] }]);
      const res = await fetch(`${url}/v2/${FLEET_A}/ext/blobs/uploads/`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 202);
      assert.ok(res.headers.get('location')?.startsWith('/v2/'));
      assert.equal(await viaUrl.manifest(`${FLEET_A}/ext`, `sha256:${'1'.repeat(64)}`), undefined);
    } finally {
      await other.close();
      await viaUrl.stop();
      await external.stop();
    }
  });

  it('without docker-registry on PATH, start says how to install it', async () => {
    const dir = scratchDir('skiff-registry-missing-');
    const saved = process.env.PATH;
    process.env.PATH = dir;
    try {
      await assert.rejects(startRegistry({ dataDir: path.join(dir, 'registry'), service: SERVICE, log: () => undefined }), (err: unknown) => {
        assert.ok(err instanceof SkiffError);
        assert.equal(err.message, 'cannot run docker-registry: it is not installed');
        assert.equal(err.hint, 'install it with: apt-get install docker-registry');
        return true;
      });
    } finally {
      process.env.PATH = saved;
    }
  });

  it('stop() ends the child with SIGTERM, and a start after a killed server ends the child it left', async () => {
    const dir = scratchDir('skiff-registry-stop-');
    // A server process of its own, killed with SIGKILL once its registry runs: the child outlives it.
    const server = await serverProcess(dir, `${FLEET_A}/x`);
    server.process.kill('SIGKILL');
    await waitFor(() => server.process.exitCode !== null || server.process.signalCode !== null, 'the first server to die');
    assert.ok(alive(server.registryPid), 'the orphaned child still runs');

    const second = await startRegistry({ dataDir: path.join(dir, 'registry'), service: SERVICE, log: () => undefined });
    const pid = second.pid;
    try {
      assert.equal(alive(server.registryPid), false, 'the orphan was ended');
      assert.equal((await fetch(`${second.url}/v2/`)).status, 401);
    } finally {
      const t0 = Date.now();
      await second.stop();
      assert.ok(Date.now() - t0 < 10_000, 'SIGTERM was enough');
    }
    assert.ok(pid !== undefined && !alive(pid));
  });
});

/** True while `pid` runs (a zombie waiting for its reaper counts as ended). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Runs curl (optionally piped into `then`, e.g. sha256sum) and resolves with its stdout, trimmed. */
function curl(args: string[], then?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn('curl', ['-sS', '--fail-with-body', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const sink = then ? spawn(then, [], { stdio: ['pipe', 'pipe', 'inherit'] }) : undefined;
    let out = '';
    let err = '';
    if (sink) {
      c.stdout.pipe(sink.stdin);
      sink.stdout.on('data', (d: Buffer) => (out += d.toString()));
    } else c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const done = sink ? new Promise<void>((r) => sink.on('close', () => r())) : Promise.resolve();
    c.on('close', (code) => {
      void done.then(() => (code === 0 ? resolve(out.trim()) : reject(new Error(`curl ${args.join(' ')}: exit ${code}: ${err}${out}`))));
    });
  });
}

interface ServerProcess {
  process: ChildProcess;
  pid: number;
  url: string;
  registryPid: number;
  /** A push and pull token for the repository asked for. */
  token: string;
  stop: () => Promise<void>;
}

/**
 * startRegistry and the routes in a node process of their own, with `<dir>/registry` as data dir
 * (its authenticate and access inputs refuse everyone: the test uses the token it prints).
 */
async function serverProcess(dir: string, repository: string): Promise<ServerProcess> {
  const script = path.join(dir, 'server.mts');
  const index = JSON.stringify(path.resolve('src/lib/server/registry/index.ts'));
  writeFileSync(
    script,
    [
      // The script lives in a temp folder: fastify is imported by its path in this checkout.
      `import Fastify from ${JSON.stringify(pathToFileURL(createRequire(import.meta.url).resolve('fastify')).href)};`,
      `import { startRegistry, registerRegistryRoutes } from ${index};`,
      `const registry = await startRegistry({ dataDir: ${JSON.stringify(path.join(dir, 'registry'))}, service: ${JSON.stringify(SERVICE)}, log: () => undefined });`,
      'const app = Fastify();',
      'registerRegistryRoutes(app, registry, { authenticate: async () => undefined, access: async () => [], subjectExists: async () => true });',
      "const url = await app.listen({ host: '127.0.0.1', port: 0 });",
      `const token = await registry.issueToken({ kind: 'user', userId: 1, email: 'a' }, [{ repository: ${JSON.stringify(repository)}, actions: ['pull', 'push'] }]);`,
      "process.on('SIGTERM', () => void app.close().then(() => registry.stop()).then(() => process.exit(0)));",
      'console.log(JSON.stringify({ url, token, registryPid: registry.pid }));',
      '',
    ].join('\n'),
  );
  const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'], cwd: path.resolve('.') });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const line = await waitFor(() => {
    if (child.exitCode !== null) throw new Error(`the server process exited with code ${child.exitCode}`);
    return out.split('\n').find((l) => l.startsWith('{'));
  }, 'the server process to start', 30_000);
  const { url, token, registryPid } = JSON.parse(line) as { url: string; token: string; registryPid: number };
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    process: child,
    pid: child.pid ?? 0,
    url,
    token,
    registryPid,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** A `/proc/<pid>/status` figure in KiB (VmRSS: now; VmHWM: peak since start or the last reset). */
function procStatus(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m?.[1], `${field} of ${pid}`);
  return Number(m[1]);
}
