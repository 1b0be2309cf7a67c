/**
 * The cloud CLI as a user and CI run it: `skiff` as a subprocess against a real `skiff server`
 * (SQLite, then PostgreSQL; its own registry, on a free loopback port) and this machine's engine.
 * Each bad input of issue 9's CLI part has a test: wrong password, a fleet name that exists, an
 * unknown device type, a revoked API key, another user's fleet, a project that does not build, a
 * deploy interrupted during the push, a confirmation without a terminal.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli, startCli, type CliResult } from '../support/cli.js';
import { ADMIN as ADMIN_USER, api, freshPostgresDatabase, startServer, type StartedServer } from '../support/server.js';
import { BASE_AMD64, TEST_LABEL, cleanupImages, ensureBaseImages, makeProject } from '../support/engine.js';
import { scratchDir } from '../support/tmp.js';
import { KEYS, startTty } from '../support/tty.js';
import { makeFatImage } from '../support/os-images.js';
import { waitFor } from '../support/wait.js';
import type { CreatedApiKey, Device, Fleet, Release, Tag, User, Variable } from '../../src/lib/api/resources.js';

const LABEL = `${TEST_LABEL}=cloud-cli`;
const ADMIN = ADMIN_USER.email;
const ADMIN_PASSWORD = ADMIN_USER.password;

interface Envelope<T> { status: 'ok' | 'error'; result?: T; error?: { code: string; exitCode: number; message: string } }
function json<T>(r: CliResult): T {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  const doc = JSON.parse(r.stdout) as Envelope<T>;
  assert.equal(doc.status, 'ok');
  return doc.result as T;
}

function project(name: string, dockerfile: string, extra: Record<string, string> = {}): string {
  return makeProject({
    'docker-compose.yml': 'services:\n  main:\n    build: .\n    environment:\n      GREETING: hi\n',
    Dockerfile: `FROM ${BASE_AMD64}\nLABEL ${TEST_LABEL}=cloud-cli\n${dockerfile}`,
    ...extra,
  }, name);
}

for (const dialect of ['sqlite', 'postgres'] as const) describe(`cloud CLI against a real skiff server (${dialect})`, function () {
  this.timeout(300_000);
  let server: StartedServer | undefined;
  let url = '';
  let home = '';
  const suffix = randomBytes(3).toString('hex');
  const fleetName = `kiosks-${suffix}`;
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}, h = home) => runCli(args, { env: { HOME: h, SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined, ...env } });

  before(async () => {
    await ensureBaseImages();
    server = await startServer(dialect === 'postgres' ? { database: freshPostgresDatabase() } : {});
    url = server.url;
    home = scratchDir('skiff-home-');
  });

  after(async () => {
    await server?.kill('SIGTERM');
    await cleanupImages({ label: LABEL });
  });

  it('login with a wrong password is exit 11 naming skiff login, and saves nothing', async () => {
    const r = await cli(['login', url, '--email', ADMIN, '--password', 'not-the-password']);
    assert.equal(r.code, 11, r.stderr);
    assert.match(r.stderr, /skiff login/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    const who = await cli(['whoami']);
    assert.equal(who.code, 11);
  });

  it('login with a password file saves a 0600 token; whoami shows the admin', async () => {
    const pw = path.join(scratchDir('skiff-pw-'), 'pw');
    writeFileSync(pw, `${ADMIN_PASSWORD}\n`);
    const r = await cli(['login', url, '--email', ADMIN, '--password-file', pw, '--json']);
    const login = json<{ url: string; user: { email: string; isAdmin: boolean }; credentialsFile: string }>(r);
    assert.equal(login.user.email, ADMIN);
    assert.equal(statSync(login.credentialsFile).mode & 0o777, 0o600);
    const who = json<{ user: { email: string }; url: string; auth: string }>(await cli(['whoami', '--json']));
    assert.deepEqual([who.user.email, who.url, who.auth], [ADMIN, url, 'session']);
  });

  it('fleet create: created, then the same name is exit 14, an unknown type a did-you-mean (exit 2)', async () => {
    const fleet = json<Fleet>(await cli(['fleet', 'create', fleetName, '--type', 'intel-nuc', '--json']));
    assert.deepEqual([fleet.name, fleet.deviceType, fleet.arch, fleet.targetRelease], [fleetName, 'intel-nuc', 'amd64', null]);
    const again = await cli(['fleet', 'create', fleetName, '--type', 'intel-nuc']);
    assert.equal(again.code, 14, again.stderr);
    const typo = await cli(['fleet', 'create', `other-${suffix}`, '--type', 'raspberrypi4-46']);
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /did you mean 'raspberrypi4-64'\?/);
    const list = json<Fleet[]>(await cli(['fleet', 'list', '--json']));
    assert.ok(list.some((f) => f.name === fleetName));
    const info = await cli(['fleet', 'info', fleetName]);
    assert.match(info.stdout, /intel-nuc \(amd64\)/);
  });

  it('fleet rm without a terminal and without --yes is exit 6 naming --yes, and removes nothing', async () => {
    const r = await cli(['fleet', 'rm', fleetName]);
    assert.equal(r.code, 6, r.stderr);
    assert.match(r.stderr, /--yes/);
    json<Fleet>(await cli(['fleet', 'info', fleetName, '--json']));
  });

  it('deploy of a project that does not build creates no release (exit 5)', async () => {
    const dir = project(`broken${suffix}`, 'RUN false\n');
    const r = await cli(['deploy', fleetName, '--source', dir, '--build']);
    assert.equal(r.code, 5, r.stderr);
    assert.deepEqual(json<Release[]>(await cli(['release', 'list', fleetName, '--json'])), []);
  });

  let v1 = '';
  it('deploy v1 builds, pushes to the server registry and makes the final release (--json prints it)', async () => {
    const dir = project(`app${suffix}`, 'CMD ["sleep", "3600"]\n');
    const r = await cli(['deploy', fleetName, '--source', dir, '--release-tag', 'version', '1', '--note', 'first', '--json']);
    const release = json<Release>(r);
    assert.equal(release.status, 'success');
    assert.equal(release.isFinal, true);
    assert.deepEqual(release.tags, { version: '1' });
    assert.equal(release.services.length, 1);
    assert.match(release.services[0]!.image ?? '', /@sha256:[0-9a-f]{64}$/);
    v1 = release.commit;
    const list = json<Release[]>(await cli(['release', 'list', fleetName, '--json']));
    assert.deepEqual(list.map((x) => x.commit), [v1]);
    assert.equal(json<Fleet>(await cli(['fleet', 'info', fleetName, '--json'])).targetRelease, v1);
    const info = await cli(['release', 'info', v1.slice(0, 7)]);
    assert.match(info.stdout, new RegExp(v1));
  });

  it('deploy --draft leaves a draft until release finalize', async () => {
    const dir = project(`app${suffix}`, 'CMD ["sleep", "3601"]\n');
    const draft = json<Release>(await cli(['deploy', fleetName, '--source', dir, '--build', '--draft', '--json']));
    assert.equal(draft.isFinal, false);
    assert.equal(json<Fleet>(await cli(['fleet', 'info', fleetName, '--json'])).targetRelease, v1);
    const final = json<Release>(await cli(['release', 'finalize', draft.commit, '--json']));
    assert.equal(final.isFinal, true);
    assert.equal(json<Fleet>(await cli(['fleet', 'info', fleetName, '--json'])).targetRelease, draft.commit);
    // Back to v1 for what follows.
    assert.equal(json<Fleet>(await cli(['fleet', 'pin', fleetName, v1, '--json'])).pinnedRelease, v1);
    assert.equal(json<Fleet>(await cli(['fleet', 'track-latest', fleetName, '--json'])).pinnedRelease, null);
  });

  it('env set/list/rm on the fleet and one service', async () => {
    json<Variable>(await cli(['env', 'set', 'GREETING', 'hello', '--fleet', fleetName, '--json']));
    json<Variable>(await cli(['env', 'set', 'PORT', '8080', '--fleet', fleetName, '--service', 'main', '--json']));
    let vars = json<Variable[]>(await cli(['env', 'list', '--fleet', fleetName, '--json']));
    assert.deepEqual(vars.map((v) => [v.name, v.value, v.service]).sort(), [['GREETING', 'hello', null], ['PORT', '8080', 'main']]);
    json(await cli(['env', 'rm', 'GREETING', '--fleet', fleetName, '--json']));
    vars = json<Variable[]>(await cli(['env', 'list', '--fleet', fleetName, '--json']));
    assert.deepEqual(vars.map((v) => v.name), ['PORT']);
    const none = await cli(['env', 'list']);
    assert.equal(none.code, 2);
    const bad = await cli(['env', 'set', '1BAD', 'x', '--fleet', fleetName]);
    assert.equal(bad.code, 2, bad.stderr);
  });

  it('tag set/list/rm on the fleet and on a release', async () => {
    json<Tag>(await cli(['tag', 'set', 'location', 'lobby', '--fleet', fleetName, '--json']));
    json<Tag>(await cli(['tag', 'set', 'qa', 'passed', '--release', v1, '--json']));
    assert.deepEqual(json<Tag[]>(await cli(['tag', 'list', '--fleet', fleetName, '--json'])).map((t) => [t.key, t.value]), [['location', 'lobby']]);
    assert.deepEqual(json<Tag[]>(await cli(['tag', 'list', '--release', v1, '--json'])).map((t) => [t.key, t.value]).sort(), [['qa', 'passed'], ['version', '1']]);
    json(await cli(['tag', 'rm', 'location', '--fleet', fleetName, '--json']));
    assert.deepEqual(json<Tag[]>(await cli(['tag', 'list', '--fleet', fleetName, '--json'])), []);
  });

  it('an API key works through SKIFF_API_TOKEN (no login), and once revoked is exit 11', async () => {
    const key = json<CreatedApiKey>(await cli(['api-key', 'generate', `ci-${suffix}`, '--json']));
    assert.ok(key.key.length >= 20);
    const plain = await cli(['api-key', 'generate', `ci2-${suffix}`]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout.trim().split('\n').length, 1, 'the key alone on stdout');
    const ci = { SKIFF_API_URL: url, SKIFF_API_TOKEN: key.key };
    const empty = scratchDir('skiff-ci-home-');
    const fleets = json<Fleet[]>(await cli(['fleet', 'list', '--json'], ci, empty));
    assert.ok(fleets.some((f) => f.name === fleetName));
    const listed = await cli(['api-key', 'list']);
    assert.match(listed.stdout, new RegExp(`ci-${suffix}`));
    assert.doesNotMatch(listed.stdout, new RegExp(key.key));
    json(await cli(['api-key', 'revoke', String(key.id), '--json']));
    const after = await cli(['fleet', 'list'], ci, empty);
    assert.equal(after.code, 11, after.stderr);
    assert.match(after.stderr, /skiff login/);
  });

  it("another user's fleet is not found (exit 12), never forbidden", async () => {
    const pw = path.join(scratchDir('skiff-pw-'), 'pw');
    writeFileSync(pw, 'second-user-password\n');
    json(await cli(['user', 'create', `second-${suffix}@example.com`, '--password-file', pw, '--json']));
    const home2 = scratchDir('skiff-home2-');
    json(await cli(['login', url, '--email', `second-${suffix}@example.com`, '--password-file', pw, '--json'], {}, home2));
    for (const args of [['fleet', 'info', fleetName], ['release', 'list', fleetName], ['release', 'info', v1], ['env', 'list', '--fleet', fleetName], ['deploy', fleetName, '--source', '.']]) {
      const r = await cli(args, {}, home2);
      assert.equal(r.code, 12, `${args.join(' ')}: ${r.stderr}`);
    }
    const users = await cli(['user', 'list'], {}, home2);
    assert.notEqual(users.code, 0);
  });

  it('deploy interrupted (Ctrl-C) during the push: exit 130, the release failed, nothing visible to devices', async () => {
    const dir = project(`big${suffix}`, 'COPY big.bin /big.bin\nCMD ["sleep", "3600"]\n');
    // Random bytes do not compress: the push takes long enough to be interrupted half-way.
    writeFileSync(path.join(dir, 'big.bin'), randomBytes(256 * 1024 * 1024));
    const before = json<Fleet>(await cli(['fleet', 'info', fleetName, '--json'])).targetRelease;
    const run = startCli(['deploy', fleetName, '--source', dir, '--build'], { env: { HOME: home, SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined } });
    let stderr = '';
    run.child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    await waitFor(() => /main: pushing /.test(stderr), `the push to start (${stderr.slice(-300)})`, 240_000, 20);
    run.child.kill('SIGINT');
    const r = await run.done;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /marked failed/);
    const releases = json<Release[]>(await cli(['release', 'list', fleetName, '--json']));
    const newest = releases[0]!;
    assert.equal(newest.status, 'failed');
    assert.equal(json<Fleet>(await cli(['fleet', 'info', fleetName, '--json'])).targetRelease, before);
  });

  it('config generate writes a 0600 config.json with a provisioning key and the endpoint', async () => {
    const file = path.join(scratchDir('skiff-config-'), 'config.json');
    const config = json<Record<string, unknown>>(await cli(['config', 'generate', '--fleet', fleetName, '--output', file, '--json']));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(typeof config.apiKey, 'string');
    assert.equal(config.deviceType, 'intel-nuc');
    assert.match(String(config.apiEndpoint), /^https?:\/\//);
  });

  it('os configure IMAGE --fleet writes the server-made config.json (provisioning key, endpoint) into the image', async () => {
    const image = path.join(scratchDir('skiff-image-'), 'boot.img');
    makeFatImage(image, { fat: 32, sizeMiB: 40, label: 'resin-boot' });
    const r = await cli(['os', 'configure', image, '--fleet', fleetName, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const config = json<Record<string, unknown>>(await cli(['config', 'read', '--drive', image, '--json']));
    assert.equal(config.applicationName, fleetName);
    assert.equal(config.deviceType, 'intel-nuc');
    assert.equal(typeof config.apiKey, 'string');
    assert.match(String(config.apiEndpoint), /^https?:\/\//);
    // Not logged in: the image names the fleet, and the warning says it cannot register.
    const offline = await cli(['os', 'configure', image, '--fleet', fleetName], {}, scratchDir('skiff-nohome-'));
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(offline.stderr, /not logged in.*provisioning key/);
  });

  it('device list/info/rename/pin/track-fleet/move/rm on a device that registered itself', async () => {
    const config = json<Record<string, unknown>>(await cli(['config', 'generate', '--fleet', fleetName, '--json']));
    const uuid = randomBytes(16).toString('hex');
    // What a device does with its config.json: register with the provisioning key (balena's shape).
    const registered = await api(url, 'POST', '/device/register', {
      token: String(config.apiKey),
      body: { uuid, device_type: 'intel-nuc', api_key: randomBytes(16).toString('hex'), ...(typeof config.applicationId === 'number' ? { application: config.applicationId } : {}) },
    });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));
    const listed = json<Device[]>(await cli(['device', 'list', '--fleet', fleetName, '--json']));
    assert.deepEqual(listed.map((d) => d.uuid), [uuid]);
    const table = await cli(['device', 'list']);
    assert.match(table.stdout, new RegExp(`${uuid.slice(0, 7)}.*${fleetName}`));
    const info = json<Device>(await cli(['device', 'info', uuid.slice(0, 7), '--json']));
    const fleetTarget = json<Fleet>(await cli(['fleet', 'info', fleetName, '--json'])).targetRelease;
    assert.deepEqual([info.uuid, info.fleet, info.targetRelease], [uuid, fleetName, fleetTarget]);
    assert.equal(json<Device>(await cli(['device', 'rename', uuid, 'lobby', '--json'])).name, 'lobby');
    assert.equal(json<Device>(await cli(['device', 'pin', uuid, v1.slice(0, 7), '--json'])).pinnedRelease, v1);
    assert.equal(json<Device>(await cli(['device', 'track-fleet', uuid, '--json'])).pinnedRelease, null);
    json<Variable>(await cli(['env', 'set', 'ONLY_HERE', '1', '--device', uuid, '--json']));
    assert.deepEqual(json<Variable[]>(await cli(['env', 'list', '--device', uuid, '--json'])).map((v) => v.name), ['ONLY_HERE']);
    json<Tag>(await cli(['tag', 'set', 'room', '12', '--device', uuid, '--json']));
    json<Fleet>(await cli(['fleet', 'create', `second-${suffix}`, '--type', 'intel-nuc', '--json']));
    assert.equal(json<Device>(await cli(['device', 'move', uuid, '--fleet', `second-${suffix}`, '--json'])).fleet, `second-${suffix}`);
    const ask = await cli(['device', 'rm', uuid]);
    assert.equal(ask.code, 6, ask.stderr);
    json(await cli(['device', 'rm', uuid, '--yes', '--json']));
    assert.equal((await cli(['device', 'info', uuid])).code, 12);
    json(await cli(['fleet', 'rm', `second-${suffix}`, '--yes', '--json']));
  });

  it('user list and user rm (admin); --debug shows each request without the token', async () => {
    const users = json<User[]>(await cli(['user', 'list', '--json']));
    assert.ok(users.some((u) => u.email === `second-${suffix}@example.com`));
    const noYes = await cli(['user', 'rm', `second-${suffix}@example.com`]);
    assert.equal(noYes.code, 6);
    json(await cli(['user', 'rm', `second-${suffix}@example.com`, '--yes', '--json']));
    assert.ok(!json<User[]>(await cli(['user', 'list', '--json'])).some((u) => u.email === `second-${suffix}@example.com`));
    const debug = await cli(['fleet', 'list', '--debug']);
    assert.equal(debug.code, 0, debug.stderr);
    assert.match(debug.stderr, new RegExp(`GET ${url.replace(/\./g, '\\.')}/fleets`));
    assert.match(debug.stderr, /← 200/);
    assert.doesNotMatch(debug.stderr, /Bearer/);
  });

  it('on a terminal: login asks for the email and password; fleet rm asks, and no keeps the fleet', async () => {
    const ttyHome = scratchDir('skiff-tty-home-');
    const env = { HOME: ttyHome, SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined };
    const login = startTty(['login', url], { env });
    await login.waitFor(/Email:/);
    login.send(`${ADMIN}${KEYS.ENTER}`);
    await login.waitFor(/Password:/);
    login.send(`${ADMIN_PASSWORD}${KEYS.ENTER}`);
    assert.equal(await login.done, 0, login.output());
    assert.match(login.output(), new RegExp(`Logged in to ${url.replace(/\./g, '\\.')} as ${ADMIN}`));
    assert.doesNotMatch(login.output(), new RegExp(ADMIN_PASSWORD));
    const rm = startTty(['fleet', 'rm', fleetName], { env });
    await rm.waitFor(new RegExp(`Remove fleet ${fleetName}.*\\[y/N\\]`));
    rm.send(`n${KEYS.ENTER}`);
    assert.equal(await rm.done, 1, rm.output());
    json<Fleet>(await cli(['fleet', 'info', fleetName, '--json']));
  });

  it('fleet rm --yes removes it; then it is not found; logout forgets the token', async () => {
    json(await cli(['fleet', 'rm', fleetName, '--yes', '--json']));
    assert.equal((await cli(['fleet', 'info', fleetName])).code, 12);
    json(await cli(['logout', '--json']));
    assert.equal((await cli(['fleet', 'list'])).code, 11);
  });
});
