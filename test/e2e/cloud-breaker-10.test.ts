/**
 * Issue 10 tried the way an attacker (or an unlucky device) would: inputs on the new routes that
 * got through validation and then failed in the database. Each test is one finding of the breaker
 * pass over issue 10, run on both dialects, because PostgreSQL's text refuses what SQLite keeps
 * (a NUL byte) and its bigint overflows where SQLite silently stores a float. The real `skiff
 * server` on a free loopback port; no engine is needed (the bad inputs never reach a build).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { DeviceLogLine } from '../../src/lib/api/logs.js';
import { runCli, startCli, type CliResult } from '../support/cli.js';
import { scratchDir } from '../support/tmp.js';
import { waitFor } from '../support/wait.js';
import { api, createUser, dropPostgresDatabase, freshPostgresDatabase, startServer, type StartedServer } from '../support/server.js';

for (const dialect of ['sqlite', 'postgres'] as const) {
  describe(`cloud breaker, issue 10 (${dialect})`, function () {
    this.timeout(120_000);
    let server: StartedServer;
    let database: string | undefined;
    let user: { token: string };
    const fleet = `brk10-${randomBytes(3).toString('hex')}`;
    const device = { uuid: randomBytes(16).toString('hex'), key: randomBytes(24).toString('hex') };

    before(async () => {
      database = dialect === 'postgres' ? freshPostgresDatabase() : undefined;
      server = await startServer(database ? { database } : {});
      user = await createUser(server.url);
      const created = await api(server.url, 'POST', '/fleets', { token: user.token, body: { name: fleet, deviceType: 'intel-nuc' } });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      await register(device);
    });
    const register = async (d: { uuid: string; key: string }): Promise<void> => {
      const key = await api(server.url, 'POST', `/fleets/${fleet}/provisioning-keys`, { token: user.token, body: {} });
      const reg = await api(server.url, 'POST', '/device/register', { token: (key.body as { key: string }).key, body: { uuid: d.uuid, device_type: 'intel-nuc', api_key: d.key } });
      assert.equal(reg.status, 201, JSON.stringify(reg.body));
    };
    after(async () => {
      const code = await server?.kill('SIGTERM');
      if (database) dropPostgresDatabase(database);
      assert.doesNotMatch(server?.output() ?? '', /internal error|\n\s+at /, 'the server logged an internal error');
      assert.equal(code, 0);
    });

    const postLogs = (body: unknown) => api(server.url, 'POST', `/device/v2/${device.uuid}/logs`, { token: device.key, body });
    const readLogs = async (): Promise<DeviceLogLine[]> => {
      const res = await api(server.url, 'GET', `/devices/${device.uuid}/logs?count=1000`, { token: user.token });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body as DeviceLogLine[];
    };

    it("a service printing a NUL byte does not stop the device's logs: the line is stored with U+FFFD (PostgreSQL answered 500 to the whole batch, which the agent retried for ever)", async () => {
      const res = await postLogs({ lines: [
        { timestamp: 1_000, message: 'before', serviceName: 'web' },
        { timestamp: 1_001, message: 'binary \u0000 out', serviceName: 'web' },
        { timestamp: 1_002, message: 'odd name', serviceName: 'w\u0000b' },
      ] });
      assert.equal(res.status, 204, JSON.stringify(res.body));
      const lines = await readLogs();
      assert.deepEqual(lines.map((l) => [l.message, l.serviceName]), [['before', 'web'], ['binary \uFFFD out', 'web'], ['odd name', 'w\uFFFDb']]);
    });

    it('a log timestamp past the last date JavaScript can hold, or a dropped count past 2^53, is a 400 naming the field (PostgreSQL answered 500: bigint out of range)', async () => {
      for (const [body, field] of [
        [{ lines: [{ timestamp: 1e23, message: 'far future', isSystem: true }] }, 'timestamp'],
        [{ lines: [], dropped: 1e23 }, 'dropped'],
      ] as const) {
        const res = await postLogs(body);
        assert.equal(res.status, 400, JSON.stringify(res.body));
        assert.match((res.body as { field: string }).field, new RegExp(field));
      }
      assert.ok(!(await readLogs()).some((l) => l.message === 'far future'));
      // The largest timestamp allowed goes through on both dialects.
      assert.equal((await postLogs({ lines: [{ timestamp: 8_640_000_000_000_000, message: 'last day', isSystem: true }] })).status, 204);
    });

    it('a build whose notes, release tag or git ref hold a NUL byte is a 400 naming the field before the upload is read (it built, then failed storing the release on PostgreSQL)', async () => {
      for (const [query, field] of [['notes=a%00b', 'notes'], ['tag=k%00=v', 'tag'], ['tag=k=v%00', 'tag'], ['gitRef=refs%2Fheads%2Fm%00', 'gitRef']] as const) {
        const res = await api(server.url, 'POST', `/fleets/${fleet}/builds?${query}`, { token: user.token, body: 'not a tar', headers: { 'content-type': 'application/x-tar' } });
        assert.equal(res.status, 400, `${query}: ${JSON.stringify(res.body)}`);
        assert.equal((res.body as { field: string }).field, field, query);
      }
      const builds = await api(server.url, 'GET', `/fleets/${fleet}/builds`, { token: user.token });
      assert.deepEqual(builds.body, []);
    });

    it("a release's notes or tags, or a tag, holding a NUL byte is a 400 naming the field (PostgreSQL answered 500)", async () => {
      const composition = { services: { main: { image: 'x' } } };
      for (const [body, field] of [[{ composition, notes: 'a\u0000b' }, 'notes'], [{ composition, tags: { k: 'v\u0000' } }, 'tags']] as const) {
        const res = await api(server.url, 'POST', `/fleets/${fleet}/releases`, { token: user.token, body });
        assert.equal(res.status, 400, JSON.stringify(res.body));
        assert.match((res.body as { field: string }).field, new RegExp(field));
      }
      for (const [body, field] of [[{ fleet, key: 'k', value: 'v\u0000' }, 'value'], [{ fleet, key: 'k\u0000', value: 'v' }, 'key']] as const) {
        const res = await api(server.url, 'PUT', '/tags', { token: user.token, body });
        assert.equal(res.status, 400, JSON.stringify(res.body));
        assert.equal((res.body as { field: string }).field, field);
      }
      // Unicode, newlines and tabs still go through.
      const ok = await api(server.url, 'PUT', '/tags', { token: user.token, body: { fleet, key: 'grüße', value: 'a\tb\nc ✓' } });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
    });

    it('a device reporting a NUL byte (its OS version, a service state) is stored with U+FFFD (PostgreSQL answered 500 to that report and every one after it)', async () => {
      const report = await api(server.url, 'PATCH', '/device/v3/state', { token: device.key, body: { [device.uuid]: { os_version: 'bad\u0000os', status: 'Idle' } } });
      assert.equal(report.status, 200, JSON.stringify(report.body));
      const info = await api(server.url, 'GET', `/devices/${device.uuid}`, { token: user.token });
      assert.equal((info.body as { osVersion: string | null }).osVersion, 'bad\uFFFDos');
    });

    it("logs --tail ends when its device is removed (exit 12, not found) or its key revoked (exit 11): the follow went on in silence for ever", async () => {
      const other = { uuid: randomBytes(16).toString('hex'), key: randomBytes(24).toString('hex') };
      await register(other);
      const line = await api(server.url, 'POST', `/device/v2/${other.uuid}/logs`, { token: other.key, body: { lines: [{ timestamp: Date.now(), message: 'first line', isSystem: true }] } });
      assert.equal(line.status, 204, JSON.stringify(line.body));
      const created = await api(server.url, 'POST', '/api-keys', { token: user.token, body: { name: `tail-${dialect}` } });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const apiKey = created.body as { id: number; key: string };
      /** `skiff logs --tail` as `token`, once it printed the history; `end` answers how it ended (killed after 60 s). */
      const tail = async (token: string): Promise<{ end: () => Promise<CliResult> }> => {
        const run = startCli(['logs', other.uuid, '--tail'], { env: { HOME: scratchDir('skiff-home-'), SKIFF_API_URL: server.url, SKIFF_API_TOKEN: token } });
        let out = '';
        run.child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
        await waitFor(() => out.includes('first line'), 'the tail to print the history', 30_000);
        return {
          end: async () => {
            const timer = setTimeout(() => run.child.kill('SIGKILL'), 60_000);
            const r = await run.done;
            clearTimeout(timer);
            return r;
          },
        };
      };
      const byKey = await tail(apiKey.key);
      assert.equal((await api(server.url, 'DELETE', `/api-keys/${apiKey.id}`, { token: user.token })).status, 204);
      const revoked = await byKey.end();
      assert.equal(revoked.code, 11, revoked.stderr);
      const byUser = await tail(user.token);
      assert.equal((await api(server.url, 'DELETE', `/devices/${other.uuid}`, { token: user.token })).status, 204);
      const removed = await byUser.end();
      assert.equal(removed.code, 12, removed.stderr);
      assert.match(removed.stderr, /not found/);
    });
  });
}

describe('cloud breaker, issue 10: a cloud uuid typed too short', function () {
  this.timeout(60_000);

  it("skiff logs / device restart with 6 hex characters say a cloud uuid needs 7 (it read as a LAN hostname: 'cannot reach the device at 2280bd:48484' and nothing more)", async () => {
    for (const args of [['logs', '2280bd'], ['device', 'restart', '2280bd'], ['logs', '228']]) {
      const r = await runCli(args, { env: { HOME: scratchDir('skiff-home-') } });
      assert.notEqual(r.code, 0, r.stderr);
      assert.match(r.stderr, /cloud device's uuid needs at least 7 characters/, `${args.join(' ')}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /);
    }
  });
});
