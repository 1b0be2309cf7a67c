/**
 * Two `skiff server` replicas on one PostgreSQL database and one registry, behind haproxy
 * (round-robin, loopback ports, config written here): what one replica writes the other serves.
 * A fleet made through one is seen through the other; a device registered through one polls
 * through both with the same ETags (304 across replicas); a release whose image is pushed through
 * one and finished through the other reaches the device through either, and its image pulls.
 *
 * The one registry is a `docker-registry` this test starts with its own config; both replicas use
 * it as an external registry (`--registry-url`) and sign tokens with the same key (made here with
 * openssl, put in each replica's `<data dir>/registry/`), which the registry trusts.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../support/cli.js';
import { ADMIN, freePort, pushTinyImage, startServer, type StartedServer } from '../support/server.js';
import { dropPostgresDatabases, postgresDatabase } from '../support/postgres.js';
import { requireOrSkip } from '../support/prerequisites.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';

interface Proc {
  name: string;
  child: ChildProcess;
  output: () => string;
  stop: () => Promise<void>;
}

/** Starts a process whose output is kept for failure messages; stop() is SIGTERM, then SIGKILL after 10 s. */
function startProc(name: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(command, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-100_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  };
  return { name, child, output: () => `--- ${name} ---\n${out}`, stop };
}

const has = (command: string): boolean => spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: <T>() => T;
}

async function call(base: string, method: string, route: string, options: { token?: string; basic?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers['authorization'] = `Bearer ${options.token}`;
  if (options.basic) headers['authorization'] = `Basic ${Buffer.from(options.basic).toString('base64')}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(options.body);
  }
  const r = await fetch(`${base}${route}`, { method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(30_000) });
  const text = await r.text();
  return { status: r.status, headers: r.headers, text, json: <T>() => JSON.parse(text) as T };
}

function expectStatus(a: Answer, status: number, what: string): Answer {
  assert.equal(a.status, status, `${what}: ${a.status} ${a.text.slice(0, 500)}`);
  return a;
}

const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The `service` a registry's 401 names (`WWW-Authenticate: Bearer realm=…,service=…`). */
async function registryService(base: string): Promise<string> {
  const a = await call(base, 'GET', '/v2/');
  assert.equal(a.status, 401, `GET /v2/ without a token: ${a.status} ${a.text}`);
  const service = /service="([^"]+)"/.exec(a.headers.get('www-authenticate') ?? '')?.[1];
  assert.ok(service, `no service in WWW-Authenticate: ${a.headers.get('www-authenticate')}`);
  return service;
}

async function registryToken(base: string, service: string, scope: string, basic: string): Promise<string> {
  const a = expectStatus(await call(base, 'GET', `/auth/v1/token?service=${encodeURIComponent(service)}&scope=${encodeURIComponent(scope)}`, { basic }), 200, `token for ${scope}`);
  return a.json<{ token: string }>().token;
}

describe('skiff server: two replicas on one PostgreSQL and one registry, behind haproxy', function () {
  this.timeout(180_000);
  const procs: Proc[] = [];
  const replicas: StartedServer[] = [];
  const { email, password } = ADMIN;
  let lb: string;
  let a: string;
  let b: string;
  let token: string;
  let fleet: { id: number; uuid: string; name: string };

  const dump = (): string => procs.map((p) => p.output()).join('\n');

  before(async function () {
    requireOrSkip(this, has('docker-registry'), "Debian's docker-registry (run scripts/setup-host.sh)");
    requireOrSkip(this, has('haproxy'), "Debian's haproxy (run scripts/setup-host.sh)");
    requireOrSkip(this, has('openssl'), 'openssl (run scripts/setup-host.sh)');
    const db = await postgresDatabase(this);
    const work = scratchDir('skiff-replicas-');
    const [portA, portB, portLb, portRegistry] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    lb = `http://127.0.0.1:${portLb}`;
    a = `http://127.0.0.1:${portA}`;
    b = `http://127.0.0.1:${portB}`;

    // The key both replicas sign registry tokens with, and the certificate the registry trusts.
    const keys = path.join(work, 'keys');
    mkdirSync(keys);
    const key = path.join(keys, 'token-signing.key');
    const cert = path.join(keys, 'token-signing.crt');
    const ssl = (args: string[]): void => {
      const r = spawnSync('openssl', args, { encoding: 'utf8' });
      assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
    };
    ssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
    ssl(['req', '-x509', '-new', '-key', key, '-subj', '/CN=skiff-replicas-test', '-days', '2', '-out', cert]);

    // The one registry (the replicas' --registry-url), with the service name the replicas' tokens
    // carry: each replica names its --public-url's host, the load balancer's.
    const service = `127.0.0.1:${portLb}`;
    const registryConfig = path.join(work, 'registry.yml');
    writeFileSync(registryConfig, [
      'version: 0.1',
      'log: { level: warn, accesslog: { disabled: true } }',
      `storage: { filesystem: { rootdirectory: ${JSON.stringify(path.join(work, 'registry-storage'))} }, delete: { enabled: true } }`,
      `http: { addr: "127.0.0.1:${portRegistry}", relativeurls: true, secret: "${randomBytes(16).toString('hex')}" }`,
      `auth: { token: { realm: "${lb}/auth/v1/token", service: "${service}", issuer: "${service}", rootcertbundle: ${JSON.stringify(cert)} } }`,
      '',
    ].join('\n'));
    procs.push(startProc('registry', 'docker-registry', ['serve', registryConfig]));
    await waitFor(async () => (await fetch(`http://127.0.0.1:${portRegistry}/v2/`)).status === 401, `the registry on ${portRegistry}\n${dump()}`, 30_000);

    // One after the other: the first runs the migrations and makes the admin, the second finds both done.
    for (const [name, port] of [['a', portA], ['b', portB]] as const) {
      const dataDir = path.join(work, name);
      mkdirSync(path.join(dataDir, 'registry'), { recursive: true, mode: 0o700 });
      copyFileSync(key, path.join(dataDir, 'registry', 'token-signing.key'));
      copyFileSync(cert, path.join(dataDir, 'registry', 'token-signing.crt'));
      const server = await startServer({ database: db.url, dataDir, port, args: ['--registry-url', `http://127.0.0.1:${portRegistry}`, '--public-url', lb] });
      replicas.push(server);
      procs.push({ name: `replica ${name}`, child: server.child, output: () => `--- replica ${name} ---\n${server.output()}`, stop: async () => void (await server.kill()) });
    }

    const haproxyConfig = path.join(work, 'haproxy.cfg');
    writeFileSync(haproxyConfig, [
      'global',
      '  maxconn 256',
      'defaults',
      '  mode http',
      '  timeout connect 2s',
      '  timeout client 30s',
      '  timeout server 30s',
      'frontend skiff',
      `  bind 127.0.0.1:${portLb}`,
      '  default_backend replicas',
      'backend replicas',
      '  balance roundrobin',
      '  option httpchk GET /ping',
      '  http-response set-header X-Skiff-Replica %s',
      `  server a 127.0.0.1:${portA} check inter 500ms`,
      `  server b 127.0.0.1:${portB} check inter 500ms`,
      '',
    ].join('\n'));
    procs.push(startProc('haproxy', 'haproxy', ['-db', '-f', haproxyConfig]));
    // Both replicas in rotation: consecutive requests through the balancer answer from each.
    await waitFor(async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 4; i++) seen.add((await call(lb, 'GET', '/ping')).headers.get('x-skiff-replica') ?? '');
      return seen.has('a') && seen.has('b');
    }, `haproxy on ${lb} with both replicas up\n${dump()}`, 30_000);

    token = expectStatus(await call(a, 'POST', '/auth/login', { body: { email, password } }), 200, 'login through a').json<{ token: string }>().token;
  });

  after(async function () {
    if (this.currentTest?.state === 'failed') console.error(dump());
    for (const p of procs.reverse()) await p.stop();
    await dropPostgresDatabases();
  });

  it('a session made through one replica works through the other', async () => {
    const me = expectStatus(await call(b, 'GET', '/whoami', { token }), 200, 'whoami through b').json<{ user: { email: string } }>();
    assert.equal(me.user.email, email);
  });

  it('a fleet created through one replica is seen through the other and through the balancer', async () => {
    fleet = expectStatus(await call(a, 'POST', '/fleets', { token, body: { name: 'replicated', deviceType: 'generic-amd64' } }), 201, 'fleet create through a').json();
    const seen = expectStatus(await call(b, 'GET', '/fleets/replicated', { token }), 200, 'fleet info through b').json<{ uuid: string; id: number }>();
    assert.equal(seen.uuid, fleet.uuid);
    for (let i = 0; i < 4; i++) {
      const list = expectStatus(await call(lb, 'GET', '/fleets', { token }), 200, 'fleet list through the balancer').json<Array<{ uuid: string }>>();
      assert.ok(list.some((f) => f.uuid === fleet.uuid));
    }
    // Its name is taken on both: the uniqueness lives in the shared database, not in a replica.
    expectStatus(await call(b, 'POST', '/fleets', { token, body: { name: 'replicated', deviceType: 'generic-amd64' } }), 409, 'the same fleet name through b');
  });

  const device = { uuid: randomBytes(16).toString('hex'), key: randomBytes(16).toString('hex') };

  it('a device registered through one replica polls through both with the same ETags', async () => {
    const pk = expectStatus(await call(a, 'POST', `/fleets/${fleet.name}/provisioning-keys`, { token, body: {} }), 201, 'provisioning key through a').json<{ key: string }>();
    expectStatus(await call(b, 'POST', '/device/register', { token: pk.key, body: { application: fleet.id, uuid: device.uuid, device_type: 'generic-amd64', api_key: device.key } }), 201, 'register through b');
    // Through the other replica the same uuid with another key is the duplicate it is, and the
    // same device asking again (its first answer lost) gets its 201 again.
    expectStatus(await call(a, 'POST', '/device/register', { token: pk.key, body: { application: fleet.id, uuid: device.uuid, device_type: 'generic-amd64', api_key: randomBytes(16).toString('hex') } }), 409, 'the same uuid with another key through a');
    expectStatus(await call(a, 'POST', '/device/register', { token: pk.key, body: { application: fleet.id, uuid: device.uuid, device_type: 'generic-amd64', api_key: device.key } }), 201, 'the same registration again through a');

    const state = `/device/v3/${device.uuid}/state`;
    const fromA = expectStatus(await call(a, 'GET', state, { token: device.key }), 200, 'state through a');
    const fromB = expectStatus(await call(b, 'GET', state, { token: device.key }), 200, 'state through b');
    const etag = fromA.headers.get('etag');
    assert.ok(etag, 'an ETag');
    assert.equal(fromB.headers.get('etag'), etag);
    assert.deepEqual(fromB.json(), fromA.json());
    expectStatus(await call(b, 'GET', state, { token: device.key, headers: { 'if-none-match': etag } }), 304, "a's ETag through b");

    // A change made through one replica is a new ETag on both, the same one.
    expectStatus(await call(a, 'PUT', '/variables', { token, body: { fleet: fleet.name, name: 'GREETING', value: 'from a' } }), 200, 'variable through a');
    const changed = expectStatus(await call(b, 'GET', state, { token: device.key, headers: { 'if-none-match': etag } }), 200, 'state through b after the change');
    const newEtag = changed.headers.get('etag');
    assert.notEqual(newEtag, etag);
    const changedA = expectStatus(await call(a, 'GET', state, { token: device.key }), 200, 'state through a after the change');
    assert.equal(changedA.headers.get('etag'), newEtag);
    // Polling through the balancer lands on both replicas, and both know the ETag.
    const served = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = expectStatus(await call(lb, 'GET', state, { token: device.key, headers: { 'if-none-match': newEtag ?? '' } }), 304, 'poll through the balancer');
      served.add(r.headers.get('x-skiff-replica') ?? '');
    }
    assert.deepEqual([...served].sort(), ['a', 'b']);

    // A report through one replica is what the other shows.
    expectStatus(await call(lb, 'PATCH', '/device/v3/state', { token: device.key, body: { [device.uuid]: { status: 'Idle', ip_address: '192.0.2.7', os_version: 'replicas 1' } } }), 200, 'report through the balancer');
    for (const base of [a, b]) {
      const info = expectStatus(await call(base, 'GET', `/devices/${device.uuid}`, { token }), 200, `device info through ${base}`).json<{ ipAddresses: string[]; osVersion: string | null }>();
      assert.deepEqual(info.ipAddresses, ['192.0.2.7']);
      assert.equal(info.osVersion, 'replicas 1');
    }

    // Each replica keeps its fleet's shared part of the target per fleet version, and both have
    // the current one: a change through one replica still reaches a device polling the other,
    // the new value itself (not only a new ETag), both ways.
    const interval = async (via: string, value: string, etag: string): Promise<string> => {
      const put = via === a ? b : a;
      expectStatus(await call(put, 'PUT', '/variables', { token, body: { fleet: fleet.name, name: 'SKIFF_AGENT_POLL_INTERVAL', value } }), 200, `config variable through ${put}`);
      const r = expectStatus(await call(via, 'GET', state, { token: device.key, headers: { 'if-none-match': etag } }), 200, `state through ${via} after a change through ${put}`);
      assert.equal(r.json<Record<string, { config: Record<string, string> }>>()[device.uuid]?.config.SKIFF_AGENT_POLL_INTERVAL, value);
      return r.headers.get('etag') ?? '';
    };
    let current = await interval(b, '30000', newEtag ?? '');
    current = await interval(a, '40000', current);
    await interval(b, '30000', current);
  });

  it('a release made through one replica is served by the other, and its image pulls through either', async () => {
    const created = expectStatus(await call(a, 'POST', `/fleets/${fleet.name}/releases`, { token, body: { composition: { services: { main: { command: ['/hello'] } } } } }), 201, 'release create through a')
      .json<{ release: { commit: string }; repositories: Record<string, string> }>();
    const commit = created.release.commit;
    const reference = created.repositories['main'];
    assert.ok(reference, `a repository for main: ${JSON.stringify(created.repositories)}`);
    const repository = reference.slice(reference.indexOf('/') + 1);

    // Push through the balancer: blob uploads and the manifest go to whichever replica comes next.
    const digest = await pushTinyImage(lb, token, repository);
    const service = await registryService(lb);

    // Devices see nothing until the release is finished, through the other replica.
    const state = `/device/v3/${device.uuid}/state`;
    const before = expectStatus(await call(a, 'GET', state, { token: device.key }), 200, 'state before the release').json<Record<string, { apps: Record<string, { releases: Record<string, unknown> }> }>>();
    assert.equal(Object.keys(before[device.uuid]?.apps[fleet.uuid]?.releases ?? {}).length, 0);
    expectStatus(await call(b, 'PATCH', `/releases/${commit}`, { token, body: { status: 'success', images: { main: digest } } }), 200, 'release finished through b');

    for (const base of [a, b]) {
      const target = expectStatus(await call(base, 'GET', state, { token: device.key }), 200, `state through ${base}`)
        .json<Record<string, { apps: Record<string, { releases: Record<string, { services: Record<string, { image: string; environment: Record<string, string> }> }> }> }>>();
      const release = target[device.uuid]?.apps[fleet.uuid]?.releases[commit];
      assert.ok(release, `release ${commit} in the target through ${base}: ${JSON.stringify(target)}`);
      assert.match(release.services['main']?.image ?? '', new RegExp(`/${repository}@${digest}$`));
      assert.equal(release.services['main']?.environment['GREETING'], 'from a');
    }

    // The device pulls it with its own token through each replica.
    const manifestType = 'application/vnd.docker.distribution.manifest.v2+json';
    for (const base of [a, b]) {
      const pull = await registryToken(base, service, `repository:${repository}:pull`, `d_${device.uuid}:${device.key}`);
      const manifest = expectStatus(await call(base, 'GET', `/v2/${repository}/manifests/${digest}`, { token: pull, headers: { accept: manifestType } }), 200, `manifest pull through ${base}`);
      assert.equal(sha256(manifest.text), digest);
      const layer = manifest.json<{ layers: Array<{ digest: string }> }>().layers[0]?.digest ?? '';
      const blob = await fetch(`${base}/v2/${repository}/blobs/${layer}`, { headers: { authorization: `Bearer ${pull}` } });
      assert.equal(blob.status, 200, `layer pull through ${base}`);
      assert.equal(sha256(Buffer.from(await blob.arrayBuffer())), layer);
    }
  });
});
