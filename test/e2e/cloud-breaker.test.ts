/**
 * The cloud tried the way a newcomer and an attacker would: bad inputs that used to get through
 * (or to crash the CLI), a server killed half-way through a deploy, the CLI pointed at the wrong
 * kind of server. Each test is one finding of the breaker pass over issue 9; the real `skiff
 * server` (SQLite, a free loopback port) and the real CLI as a subprocess.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cleanupAgent, startAgent } from '../support/agent.js';
import { runCli, startCli, type CliResult } from '../support/cli.js';
import { BASE_AMD64, TEST_LABEL, cleanupImages, ensureBaseImages, makeProject } from '../support/engine.js';
import { api, createUser, startServer, type StartedServer } from '../support/server.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';
import type { ProvisioningKey, Release } from '../../src/lib/api/resources.js';

const LABEL = `${TEST_LABEL}=cloud-breaker`;

/** Exactly one line on stderr, no stack trace. */
function oneLine(r: CliResult): string {
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `more than one line:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  return lines[0]!;
}

describe('cloud breaker: bad inputs and faults found by trying to break the cloud', function () {
  this.timeout(300_000);
  let server: StartedServer;
  let user: { email: string; token: string };
  const fleet = `brk-${randomBytes(3).toString('hex')}`;
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => runCli(args, {
    env: { HOME: scratchDir('skiff-home-'), SKIFF_API_URL: server.url, SKIFF_API_TOKEN: user.token, ...env },
  });

  before(async () => {
    server = await startServer();
    user = await createUser(server.url);
    const created = await api(server.url, 'POST', '/fleets', { token: user.token, body: { name: fleet, deviceType: 'intel-nuc' } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
  });
  after(async () => {
    await server?.kill('SIGTERM');
    await cleanupImages({ label: LABEL });
  });

  it('a variable value holding a NUL byte is a 400 naming value (runc refuses such an environment, so every device failed to start the release)', async () => {
    const res = await api(server.url, 'PUT', '/variables', { token: user.token, body: { fleet, name: 'NUL', value: 'a\u0000b' } });
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal((res.body as { field: string }).field, 'value');
    const list = await api(server.url, 'GET', `/variables?fleet=${fleet}`, { token: user.token });
    assert.deepEqual(list.body, []);
    // Anything else, unicode included, still goes through.
    const ok = await api(server.url, 'PUT', '/variables', { token: user.token, body: { fleet, name: 'UNI', value: 'grüße ✓ \t\n' } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
  });

  it('a variable named __proto__ is a 400 naming name (the target state dropped it silently: it never reached a container)', async () => {
    const res = await api(server.url, 'PUT', '/variables', { token: user.token, body: { fleet, name: '__proto__', value: 'x' } });
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal((res.body as { field: string }).field, 'name');
    for (const name of ['__proto', 'proto__', '_', 'constructor']) {
      const ok = await api(server.url, 'PUT', '/variables', { token: user.token, body: { fleet, name, value: 'x' } });
      assert.equal(ok.status, 200, `${name}: ${JSON.stringify(ok.body)}`);
      assert.equal((await api(server.url, 'DELETE', `/variables?fleet=${fleet}&name=${name}`, { token: user.token })).status, 204);
    }
  });

  it("a path the router refuses (bad percent-encoding, a 5000-character uuid) is a 400 in the API's own shape naming path, not Fastify's echoing the input", async () => {
    for (const route of ['/fleets/%E0%A4%A', '/devices/%', `/devices/${'a'.repeat(5000)}`, `/releases/${'b'.repeat(5000)}`, `/device/v3/${'c'.repeat(5000)}/state`]) {
      const res = await api(server.url, 'GET', route, { token: user.token });
      assert.equal(res.status, 400, route);
      const body = res.body as { statusCode: number; field: string; message: string; code?: string };
      assert.equal(body.statusCode, 400);
      assert.equal(body.field, 'path');
      assert.equal(body.code, undefined);
      assert.ok(body.message.length < 200, body.message);
    }
  });

  it("login to a device's API (the agent's port) or to a web page is exit 13 saying it is not a skiff server (it said 'Unauthorized. Check them', i.e. a wrong password, or 'not found')", async () => {
    const agent = await startAgent();
    try {
      const pw = path.join(scratchDir('skiff-pw-'), 'pw');
      writeFileSync(pw, 'whatever-password\n');
      const login = await cli(['login', agent.url, '--email', user.email, '--password-file', pw], { SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined });
      assert.equal(login.code, 13, login.stderr);
      assert.match(oneLine(login), /is a device's API .*not a skiff server.*48080/);
      const list = await cli(['fleet', 'list'], { SKIFF_API_URL: agent.url });
      assert.equal(list.code, 13, list.stderr);
      assert.match(oneLine(list), /not a skiff server/);
    } finally {
      await agent.kill();
      await cleanupAgent(agent.uuid);
    }
    // distribution's own plain-text 404 page, one level under the server's URL.
    const page = await cli(['fleet', 'list'], { SKIFF_API_URL: `${server.url}/v2/x` });
    assert.equal(page.code, 13, page.stderr);
    assert.match(oneLine(page), /answered 404 and is not a skiff server/);
  });

  it("what a device reports is printed by device info and device list without its escape sequences (a device's key could retitle the owner's terminal or write its clipboard)", async () => {
    const key = await api(server.url, 'POST', `/fleets/${fleet}/provisioning-keys`, { token: user.token, body: {} });
    const uuid = randomBytes(16).toString('hex');
    const deviceKey = randomBytes(24).toString('hex');
    const reg = await api(server.url, 'POST', '/device/register', { token: (key.body as { key: string }).key, body: { uuid, device_type: 'intel-nuc', api_key: deviceKey } });
    assert.equal(reg.status, 201, JSON.stringify(reg.body));
    const osc = '\u001b]52;c;cm0gLXJmIH4K\u0007\u001b]0;pwned\u0007';
    const report = await api(server.url, 'PATCH', '/device/v3/state', { token: deviceKey, body: { [uuid]: { os_version: `Debian${osc}`, update_failed: true, update_error: `boom\u001b[2K\rall good${osc}` } } });
    assert.equal(report.status, 200, JSON.stringify(report.body));
    const rename = await api(server.url, 'PATCH', `/devices/${uuid}`, { token: user.token, body: { name: 'kiosk\u001b[8mhidden' } });
    assert.equal(rename.status, 200, JSON.stringify(rename.body));
    for (const args of [['device', 'info', uuid.slice(0, 7)], ['device', 'list', '--fleet', fleet]]) {
      const r = await cli(args);
      assert.equal(r.code, 0, r.stderr);
      // eslint-disable-next-line no-control-regex -- control characters (but tab and newline) are what must not be there
      assert.doesNotMatch(r.stdout, /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/, `${args.join(' ')} printed a control character: ${JSON.stringify(r.stdout)}`);
      assert.match(r.stdout, /kiosk\\x1b\[8mhidden/);
    }
    // --json keeps the text as it is (JSON escapes it).
    const json = await cli(['device', 'info', uuid.slice(0, 7), '--json']);
    assert.equal((JSON.parse(json.stdout) as { result: { osVersion: string } }).result.osVersion, `Debian${'\u001b]52;c;cm0gLXJmIH4K\u0007\u001b]0;pwned\u0007'}`);
  });

  it('skiff server with a bad --host, --public-url or an uncreatable --data-dir is exit 2 naming the flag (it was exit 70, "Invalid URL", a bug)', async () => {
    const dir = scratchDir('skiff-srv-');
    const cases: Array<[string[], RegExp]> = [
      [['--host', '999.1.1.1'], /--host '999\.1\.1\.1' is not an IP address or host name/],
      [['--host', '127.0.0.1', '--public-url', 'not a url'], /--public-url 'not a url' is not an http or https URL/],
      [['--host', '127.0.0.1', '--public-url', 'ftp://x'], /--public-url 'ftp:\/\/x' is not an http or https URL/],
    ];
    for (const [args, text] of cases) {
      const r = await runCli(['server', '--data-dir', path.join(dir, 'data'), '--port', '1', ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(oneLine(r), text);
    }
    writeFileSync(path.join(dir, 'file'), 'x');
    const r = await runCli(['server', '--data-dir', path.join(dir, 'file', 'data'), '--port', '1', '--host', '127.0.0.1']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(oneLine(r), /cannot create --data-dir .*ENOTDIR/);
    // Under /proc Node's recursive mkdir spun forever at 100% CPU, deaf to SIGTERM.
    const proc = await runCli(['server', '--data-dir', '/proc/skiff-nope', '--port', '1', '--host', '127.0.0.1']);
    assert.equal(proc.code, 2, proc.stderr);
    assert.match(oneLine(proc), /kernel file system/);
  });

  it('config generate --output into a missing folder is exit 2 naming the folder, and makes no provisioning key (it was exit 70, a "bug", with a key made and lost)', async () => {
    const before = await api(server.url, 'GET', `/fleets/${fleet}/provisioning-keys`, { token: user.token });
    const file = path.join(scratchDir('skiff-out-'), 'missing', 'config.json');
    const r = await cli(['config', 'generate', '--fleet', fleet, '--output', file]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(oneLine(r), /does not exist/);
    assert.equal(existsSync(file), false);
    const after = await api(server.url, 'GET', `/fleets/${fleet}/provisioning-keys`, { token: user.token });
    assert.equal((after.body as ProvisioningKey[]).length, (before.body as ProvisioningKey[]).length);
    const json = await cli(['config', 'generate', '--fleet', fleet, '--output', scratchDir('skiff-out-'), '--json']);
    assert.equal(json.code, 2, json.stderr);
    assert.equal(JSON.parse(json.stdout).error.exitCode, 2);
  });

  it('an https URL for a plain-HTTP server is exit 13 in one line saying it does not speak HTTPS (it printed OpenSSL internals over two lines)', async () => {
    const https = server.url.replace(/^http:/, 'https:');
    const pw = path.join(scratchDir('skiff-pw-'), 'pw');
    writeFileSync(pw, 'whatever-password\n');
    const login = await cli(['login', https, '--email', user.email, '--password-file', pw], { SKIFF_API_URL: undefined, SKIFF_API_TOKEN: undefined });
    assert.equal(login.code, 13, login.stderr);
    const line = oneLine(login);
    assert.match(line, /does not speak HTTPS/);
    assert.ok(line.includes(server.url), line);
    const list = await cli(['fleet', 'list', '--json'], { SKIFF_API_URL: https });
    assert.equal(list.code, 13);
    const doc = JSON.parse(list.stdout) as { error: { message: string } };
    assert.doesNotMatch(doc.error.message, /openssl|\n/i);
  });

  it('deploy whose server is killed (SIGKILL) mid-push is exit 13 saying the server stopped answering (it was exit 10, "the registry refused the push"), and the release never reaches devices', async () => {
    await ensureBaseImages();
    const dir = makeProject({
      'docker-compose.yml': 'services:\n  main:\n    build: .\n',
      Dockerfile: `FROM ${BASE_AMD64}\nLABEL ${TEST_LABEL}=cloud-breaker\nCOPY big.bin /big.bin\nCMD ["sleep", "3600"]\n`,
    }, `brk${randomBytes(3).toString('hex')}`);
    // Random bytes do not compress: the push lasts long enough to kill the server half-way.
    writeFileSync(path.join(dir, 'big.bin'), randomBytes(128 * 1024 * 1024));
    const run = startCli(['deploy', fleet, '--source', dir, '--build'], { env: { HOME: scratchDir('skiff-home-'), SKIFF_API_URL: server.url, SKIFF_API_TOKEN: user.token } });
    let stderr = '';
    run.child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    await waitFor(() => /main: pushing /.test(stderr), `the push to start (${stderr.slice(-300)})`, 240_000, 20);
    await server.kill('SIGKILL');
    const r = await run.done;
    assert.equal(r.code, 13, r.stderr);
    assert.match(r.stderr, /stopped answering during the deploy/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    // The same data dir and port again: the release is there, unfinished, and not the fleet's target.
    server = await startServer({ dataDir: server.dataDir, port: server.port, admin: false });
    const releases = await api(server.url, 'GET', `/fleets/${fleet}/releases`, { token: user.token });
    const newest = (releases.body as Release[])[0];
    assert.ok(newest, JSON.stringify(releases.body));
    assert.notEqual(newest.status, 'success');
    const info = await api(server.url, 'GET', `/fleets/${fleet}`, { token: user.token });
    assert.notEqual((info.body as { targetRelease: string | null }).targetRelease, newest.commit);
  });
});
