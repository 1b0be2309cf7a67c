/**
 * `skiff server` end to end, the real binary on SQLite and on PostgreSQL: users and keys, fleets,
 * provisioning and registration, the target state with ETags, reports, releases made visible only
 * once their images are in the registry, and every authorisation rule tried from the wrong side.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ADMIN, api, createUser, dropPostgresDatabase, freshPostgresDatabase, login, pushTinyImage, startServer, type StartedServer } from '../support/server.js';
import { waitFor } from '../support/wait.js';

const uuid = () => randomBytes(16).toString('hex');
const deviceKey = () => randomBytes(24).toString('hex');

interface Ctx { server: StartedServer; base: string }

async function provision(base: string, token: string, fleet: string, body: Record<string, unknown> = {}): Promise<string> {
  const res = await api(base, 'POST', `/fleets/${fleet}/provisioning-keys`, { token, body });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return (res.body as { key: string }).key;
}

async function register(base: string, provisioningKey: string, id = uuid(), key = deviceKey(), deviceType = 'intel-nuc') {
  const res = await api(base, 'POST', '/device/register', { token: provisioningKey, body: { uuid: id, device_type: deviceType, api_key: key } });
  return { res, uuid: id, key };
}

for (const dialect of ['sqlite', 'postgres'] as const) {
  describe(`skiff server (${dialect})`, function () {
    this.timeout(120_000);
    const c = {} as Ctx;
    let alice: { email: string; password: string; token: string };
    let bob: { email: string; password: string; token: string };

    let database: string | undefined;
    before(async () => {
      database = dialect === 'postgres' ? freshPostgresDatabase() : undefined;
      c.server = await startServer(database ? { database } : {});
      c.base = c.server.url;
      alice = await createUser(c.base);
      bob = await createUser(c.base);
    });
    after(async () => {
      await c.server?.kill('SIGTERM');
      if (database) dropPostgresDatabase(database);
    });

    it('answers /ping and serves /openapi.json from the route schemas', async () => {
      assert.equal((await api(c.base, 'GET', '/ping')).body, 'OK');
      const doc = (await api(c.base, 'GET', '/openapi.json')).body as { openapi: string; paths: Record<string, unknown> };
      assert.match(doc.openapi, /^3\./);
      for (const p of ['/fleets', '/device/register', '/device/v3/{uuid}/state', '/device/v3/state', '/releases/{commit}']) assert.ok(doc.paths[p], `openapi lacks ${p}`);
    });

    it('refuses a wrong password, an unknown token and a revoked API key with 401', async () => {
      const wrong = await api(c.base, 'POST', '/auth/login', { body: { email: alice.email, password: 'not-the-password' } });
      assert.equal(wrong.status, 401);
      assert.equal((await api(c.base, 'GET', '/whoami', { token: 'ska_unknown' })).status, 401);
      assert.equal((await api(c.base, 'GET', '/fleets')).status, 401);
      const created = await api(c.base, 'POST', '/api-keys', { token: alice.token, body: { name: 'ci' } });
      assert.equal(created.status, 201);
      const { key, id } = created.body as { key: string; id: number };
      const who = await api(c.base, 'GET', '/whoami', { token: key });
      assert.deepEqual([who.status, (who.body as { auth: string }).auth], [200, 'api-key']);
      assert.equal((await api(c.base, 'DELETE', `/api-keys/${id}`, { token: bob.token })).status, 404, "another user's key is not found");
      assert.equal((await api(c.base, 'DELETE', `/api-keys/${id}`, { token: alice.token })).status, 204);
      assert.equal((await api(c.base, 'GET', '/whoami', { token: key })).status, 401);
    });

    it('ends a session at logout', async () => {
      const token = await login(c.base, alice.email, alice.password);
      assert.equal((await api(c.base, 'POST', '/auth/logout', { token })).status, 204);
      assert.equal((await api(c.base, 'GET', '/whoami', { token })).status, 401);
    });

    it('lets only an admin create users; a taken email is 409', async () => {
      assert.equal((await api(c.base, 'POST', '/users', { token: alice.token, body: { email: 'x@skiff.test', password: 'password-1' } })).status, 404);
      const admin = await login(c.base, ADMIN.email, ADMIN.password);
      assert.equal((await api(c.base, 'POST', '/users', { token: admin, body: { email: alice.email, password: 'password-1' } })).status, 409);
      const users = (await api(c.base, 'GET', '/users', { token: admin })).body as Array<{ email: string }>;
      assert.ok(users.some((u) => u.email === alice.email));
    });

    it('lets an admin remove a user (their tokens stop, their fleets go) but not themselves', async () => {
      const admin = await login(c.base, ADMIN.email, ADMIN.password);
      const carol = await createUser(c.base);
      assert.equal((await api(c.base, 'POST', '/fleets', { token: carol.token, body: { name: 'carols', deviceType: 'intel-nuc' } })).status, 201);
      assert.equal((await api(c.base, 'DELETE', `/users/${encodeURIComponent(carol.email)}`, { token: alice.token })).status, 404);
      assert.equal((await api(c.base, 'DELETE', `/users/${encodeURIComponent(carol.email)}`, { token: admin })).status, 204);
      assert.equal((await api(c.base, 'GET', '/fleets', { token: carol.token })).status, 401);
      assert.equal((await api(c.base, 'DELETE', `/users/${encodeURIComponent(ADMIN.email)}`, { token: admin })).status, 409);
      assert.equal((await api(c.base, 'DELETE', '/users/nobody%40skiff.test', { token: admin })).status, 404);
    });

    it('creates a fleet; a name that exists is 409; an unknown device type is 400 with a did-you-mean', async () => {
      const res = await api(c.base, 'POST', '/fleets', { token: alice.token, body: { name: 'fleet-a', deviceType: 'raspberrypi4-64' } });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal((res.body as { arch: string }).arch, 'aarch64');
      assert.equal((await api(c.base, 'POST', '/fleets', { token: alice.token, body: { name: 'fleet-a', deviceType: 'intel-nuc' } })).status, 409);
      // Another user may use the same name: names are unique per owner.
      assert.equal((await api(c.base, 'POST', '/fleets', { token: bob.token, body: { name: 'fleet-a', deviceType: 'intel-nuc' } })).status, 201);
      const typo = await api(c.base, 'POST', '/fleets', { token: alice.token, body: { name: 'fleet-b', deviceType: 'raspberrypi4-46' } });
      assert.equal(typo.status, 400);
      assert.equal((typo.body as { field: string }).field, 'deviceType');
      assert.match((typo.body as { message: string }).message, /did you mean 'raspberrypi4-64'/);
    });

    it('answers bad input with a 400 naming the field', async () => {
      const bad = await api(c.base, 'POST', '/fleets', { token: alice.token, body: { name: 'has space', deviceType: 'intel-nuc' } });
      assert.equal(bad.status, 400);
      assert.equal((bad.body as { field: string }).field, 'name');
      const extra = await api(c.base, 'POST', '/fleets', { token: alice.token, body: { name: 'ok', deviceType: 'intel-nuc', colour: 'red' } });
      assert.deepEqual([extra.status, (extra.body as { field: string }).field], [400, 'colour']);
      const json = await api(c.base, 'POST', '/fleets', { token: alice.token, body: '{"name":' });
      assert.equal(json.status, 400);
      const big = await api(c.base, 'POST', '/fleets', { token: alice.token, body: { name: 'x', deviceType: 'y'.repeat(2 * 1024 * 1024) } });
      assert.equal(big.status, 413);
    });

    it("shows another user's fleet, device and release as not found", async () => {
      await api(c.base, 'POST', '/fleets', { token: alice.token, body: { name: 'private', deviceType: 'intel-nuc' } });
      const pk = await provision(c.base, alice.token, 'private');
      const { res, uuid: id } = await register(c.base, pk);
      assert.equal(res.status, 201);
      const rel = await api(c.base, 'POST', '/fleets/private/releases', { token: alice.token, body: { composition: { services: { main: {} } } } });
      assert.equal(rel.status, 201);
      const commit = (rel.body as { release: { commit: string } }).release.commit;
      for (const [method, route, body] of [
        ['GET', '/fleets/private'], ['PATCH', '/fleets/private', { name: 'mine' }], ['DELETE', '/fleets/private'],
        ['GET', '/fleets/private/releases'], ['POST', '/fleets/private/provisioning-keys', {}], ['POST', '/fleets/private/config', {}],
        ['GET', `/devices/${id}`], ['PATCH', `/devices/${id}`, { name: 'x' }], ['DELETE', `/devices/${id}`],
        ['GET', `/releases/${commit}`], ['PATCH', `/releases/${commit}`, { notes: 'x' }],
        ['GET', '/variables?fleet=private'], ['PUT', '/variables', { fleet: 'private', name: 'A', value: '1' }], ['PUT', '/variables', { device: id, name: 'A', value: '1' }],
        ['GET', `/tags?release=${commit}`],
      ] as Array<[string, string, unknown?]>) {
        const r = await api(c.base, method, route, { token: bob.token, ...(body !== undefined ? { body } : {}) });
        assert.equal(r.status, 404, `${method} ${route} as another user: ${r.status} ${JSON.stringify(r.body)}`);
      }
      const list = (await api(c.base, 'GET', '/devices', { token: bob.token })).body as Array<{ uuid: string }>;
      assert.ok(!list.some((d) => d.uuid === id));
      // Alice still sees all of it.
      assert.equal((await api(c.base, 'GET', `/devices/${id.slice(0, 8)}`, { token: alice.token })).status, 200);
    });

    describe('devices', () => {
      let pk: string;
      before(async () => {
        assert.equal((await api(c.base, 'POST', '/fleets', { token: alice.token, body: { name: 'devs', deviceType: 'intel-nuc' } })).status, 201);
        pk = await provision(c.base, alice.token, 'devs');
      });

      it('registers a device (201), refuses a duplicate uuid (409) and answers a retry with the same key again', async () => {
        const first = await register(c.base, pk);
        assert.equal(first.res.status, 201);
        assert.deepEqual(Object.keys(first.res.body as object).sort(), ['api_key', 'device_type', 'id', 'uuid']);
        const dup = await register(c.base, pk, first.uuid);
        assert.equal(dup.res.status, 409);
        const retry = await register(c.base, pk, first.uuid, first.key);
        assert.equal(retry.res.status, 201);
        assert.equal((retry.res.body as { id: number }).id, (first.res.body as { id: number }).id);
      });

      it('refuses an expired, a revoked and an unknown provisioning key, and a device type of another architecture', async () => {
        const expired = await provision(c.base, alice.token, 'devs', { expiresAt: new Date(Date.now() - 1000).toISOString() });
        assert.equal((await register(c.base, expired)).res.status, 401);
        const revoked = await api(c.base, 'POST', '/fleets/devs/provisioning-keys', { token: alice.token, body: {} });
        const { key, id } = revoked.body as { key: string; id: number };
        assert.equal((await api(c.base, 'DELETE', `/fleets/devs/provisioning-keys/${id}`, { token: alice.token })).status, 204);
        assert.equal((await register(c.base, key)).res.status, 401);
        assert.equal((await register(c.base, 'skp_nonsense')).res.status, 401);
        const bare = await api(c.base, 'POST', '/fleets/devs/provisioning-keys', { token: alice.token });
        assert.equal(bare.status, 201, 'no body is an empty request');
        const arm = await register(c.base, pk, uuid(), deviceKey(), 'raspberrypi4-64');
        assert.deepEqual([arm.res.status, (arm.res.body as { field: string }).field], [400, 'device_type']);
        // A provisioning key is for registering only.
        assert.equal((await api(c.base, 'GET', '/fleets', { token: pk })).status, 401);
      });

      it('serves the target state with an ETag and 304; another device\'s uuid is 404; a removed device\'s key stops at once', async () => {
        const a = await register(c.base, pk);
        const b = await register(c.base, pk);
        const first = await api(c.base, 'GET', `/device/v3/${a.uuid}/state`, { token: a.key });
        assert.equal(first.status, 200);
        const etag = first.headers.get('etag');
        assert.ok(etag);
        const target = (first.body as Record<string, { apps: Record<string, { releases: object }> }>)[a.uuid];
        assert.ok(target, 'keyed by the uuid');
        assert.equal((await api(c.base, 'GET', `/device/v3/${a.uuid}/state`, { token: a.key, headers: { 'if-none-match': etag } })).status, 304);
        assert.equal((await api(c.base, 'GET', `/device/v3/${b.uuid}/state`, { token: a.key })).status, 404);
        assert.equal((await api(c.base, 'GET', `/device/v3/${a.uuid}/state`, { token: 'wrong-key-wrong-key' })).status, 401);
        // A change of the device (a rename) is a new ETag.
        assert.equal((await api(c.base, 'PATCH', `/devices/${a.uuid}`, { token: alice.token, body: { name: 'kitchen' } })).status, 200);
        const renamed = await api(c.base, 'GET', `/device/v3/${a.uuid}/state`, { token: a.key, headers: { 'if-none-match': etag } });
        assert.equal(renamed.status, 200);
        assert.equal((renamed.body as Record<string, { name: string }>)[a.uuid]?.name, 'kitchen');
        assert.equal((await api(c.base, 'DELETE', `/devices/${a.uuid}`, { token: alice.token })).status, 204);
        assert.equal((await api(c.base, 'GET', `/device/v3/${a.uuid}/state`, { token: a.key })).status, 401);
        assert.equal((await api(c.base, 'PATCH', '/device/v3/state', { token: a.key, body: { [a.uuid]: { status: 'Idle' } } })).status, 401);
      });

      it('stores a report (shown by GET /devices/:uuid); a malformed one is 400 and nothing is stored', async () => {
        const d = await register(c.base, pk);
        const good = await api(c.base, 'PATCH', '/device/v3/state', { token: d.key, body: { [d.uuid]: {
          status: 'Idle', ip_address: '10.0.0.2 10.0.0.3', os_version: 'balenaOS 5', cpu_usage: 12,
          apps: { any: { release_uuid: 'abc1234', releases: { abc1234: { update_status: 'done', services: { main: { status: 'Running', image: 'x', download_progress: null } } } } } },
        } } });
        assert.equal(good.status, 200, JSON.stringify(good.body));
        for (const body of [
          { [d.uuid]: { cpu_usage: 'lots', os_version: 'evil' } },
          { [d.uuid]: { os_version: 'evil', unknown_field: 1 } },
          { [d.uuid]: { os_version: 'evil', apps: { x: { releases: { r: { update_status: 'exploded' } } } } } },
          { NOT_A_UUID: { os_version: 'evil' } },
          [],
        ]) {
          const res = await api(c.base, 'PATCH', '/device/v3/state', { token: d.key, body });
          assert.equal(res.status, 400, JSON.stringify(body));
          assert.ok((res.body as { field?: string }).field, `names the field: ${JSON.stringify(res.body)}`);
        }
        const other = await register(c.base, pk);
        assert.equal((await api(c.base, 'PATCH', '/device/v3/state', { token: d.key, body: { [other.uuid]: { os_version: 'evil' } } })).status, 404);
        const shown = (await api(c.base, 'GET', `/devices/${d.uuid}`, { token: alice.token })).body as Record<string, unknown>;
        assert.equal(shown.osVersion, 'balenaOS 5');
        assert.deepEqual(shown.ipAddresses, ['10.0.0.2', '10.0.0.3']);
        assert.equal(shown.runningRelease, 'abc1234');
        assert.equal(shown.updateStatus, 'done');
        assert.deepEqual(shown.services, [{ name: 'main', status: 'Running', image: 'x', downloadProgress: null }]);
        assert.equal(shown.cpuUsage, 12);
        const otherShown = (await api(c.base, 'GET', `/devices/${other.uuid}`, { token: alice.token })).body as Record<string, unknown>;
        assert.equal(otherShown.osVersion, null);
      });

      it('moves a device to a fleet of the same architecture only; removing a fleet stops its devices\' keys', async () => {
        assert.equal((await api(c.base, 'POST', '/fleets', { token: alice.token, body: { name: 'devs2', deviceType: 'genericx86-64-ext' } })).status, 201);
        assert.equal((await api(c.base, 'POST', '/fleets', { token: alice.token, body: { name: 'arm', deviceType: 'raspberrypi4-64' } })).status, 201);
        const d = await register(c.base, pk);
        const wrongArch = await api(c.base, 'PATCH', `/devices/${d.uuid}`, { token: alice.token, body: { fleet: 'arm' } });
        assert.deepEqual([wrongArch.status, (wrongArch.body as { field: string }).field], [400, 'fleet']);
        assert.equal((await api(c.base, 'POST', '/fleets', { token: bob.token, body: { name: 'bobs-only', deviceType: 'intel-nuc' } })).status, 201);
        assert.equal((await api(c.base, 'PATCH', `/devices/${d.uuid}`, { token: alice.token, body: { fleet: 'bobs-only' } })).status, 404, "another user's fleet is not found");
        const moved = await api(c.base, 'PATCH', `/devices/${d.uuid}`, { token: alice.token, body: { fleet: 'devs2' } });
        assert.equal((moved.body as { fleet: string }).fleet, 'devs2');
        const devs2 = (await api(c.base, 'GET', '/fleets/devs2', { token: alice.token })).body as { uuid: string; deviceCount: number };
        assert.equal(devs2.deviceCount, 1);
        const t = (await api(c.base, 'GET', `/device/v3/${d.uuid}/state`, { token: d.key })).body as Record<string, { apps: Record<string, unknown> }>;
        assert.deepEqual(Object.keys(t[d.uuid]?.apps ?? {}), [devs2.uuid]);
        assert.equal((await api(c.base, 'DELETE', '/fleets/devs2', { token: alice.token })).status, 204);
        assert.equal((await api(c.base, 'GET', `/device/v3/${d.uuid}/state`, { token: d.key })).status, 401);
      });

      it('makes a config.json whose provisioning key registers a device', async () => {
        const res = await api(c.base, 'POST', '/fleets/devs/config', { token: alice.token, body: { developmentMode: true } });
        assert.equal(res.status, 200);
        const config = res.body as { apiKey: string; apiEndpoint: string; applicationId: number; deviceType: string; developmentMode: boolean };
        assert.equal(config.apiEndpoint, c.base);
        assert.equal(config.deviceType, 'intel-nuc');
        assert.equal(config.developmentMode, true);
        const id = uuid();
        const reg = await api(c.base, 'POST', '/device/register', { token: config.apiKey, body: { application: config.applicationId, uuid: id, device_type: config.deviceType, api_key: deviceKey() } });
        assert.equal(reg.status, 201);
        const elsewhere = await api(c.base, 'POST', '/device/register', { token: config.apiKey, body: { application: config.applicationId + 1000, uuid: uuid(), device_type: 'intel-nuc', api_key: deviceKey() } });
        assert.equal(elsewhere.status, 404);
      });

      it('marks a device online once it polls (last seen written in batches)', async () => {
        const d = await register(c.base, pk);
        assert.equal(((await api(c.base, 'GET', `/devices/${d.uuid}`, { token: alice.token })).body as { status: string }).status, 'offline');
        await api(c.base, 'GET', `/device/v3/${d.uuid}/state`, { token: d.key });
        const shown = (await api(c.base, 'GET', `/devices/${d.uuid}`, { token: alice.token })).body as { status: string; lastSeen: string | null };
        assert.equal(shown.status, 'online');
        assert.ok(shown.lastSeen);
        await waitFor(async () => {
          const fleet = (await api(c.base, 'GET', '/fleets/devs', { token: alice.token })).body as { onlineDeviceCount: number };
          return fleet.onlineDeviceCount >= 1;
        }, 'the fleet to count the device online');
      });
    });

    describe('releases and the target', () => {
      let pk: string;
      let fleetUuid: string;
      before(async () => {
        const res = await api(c.base, 'POST', '/fleets', { token: alice.token, body: { name: 'rel', deviceType: 'intel-nuc' } });
        fleetUuid = (res.body as { uuid: string }).uuid;
        pk = await provision(c.base, alice.token, 'rel');
      });

      async function release(services: string[], draft = false): Promise<{ commit: string; repositories: Record<string, string> }> {
        const res = await api(c.base, 'POST', '/fleets/rel/releases', { token: alice.token, body: { composition: { services: Object.fromEntries(services.map((s) => [s, { environment: { FROM_COMPOSE: s, LEVEL: 'compose' } }])) }, draft } });
        assert.equal(res.status, 201, JSON.stringify(res.body));
        const body = res.body as { release: { commit: string }; repositories: Record<string, string> };
        return { commit: body.release.commit, repositories: body.repositories };
      }

      async function complete(commit: string, services: string[]): Promise<Record<string, string>> {
        const images: Record<string, string> = {};
        for (const s of services) images[s] = await pushTinyImage(c.base, alice.token, `${fleetUuid}/${s}`);
        const res = await api(c.base, 'PATCH', `/releases/${commit}`, { token: alice.token, body: { status: 'success', images } });
        assert.equal(res.status, 200, JSON.stringify(res.body));
        return images;
      }

      it('keeps a running release from devices; completes it only with every image in the registry; then devices get it', async () => {
        const d = await register(c.base, pk);
        const r = await release(['main', 'side']);
        assert.match(r.repositories.main ?? '', new RegExp(`/${fleetUuid}/main$`));
        const before = (await api(c.base, 'GET', `/device/v3/${d.uuid}/state`, { token: d.key })).body as Record<string, { apps: Record<string, { releases: object }> }>;
        assert.deepEqual(before[d.uuid]?.apps[fleetUuid]?.releases, {});
        const missing = await api(c.base, 'PATCH', `/releases/${r.commit}`, { token: alice.token, body: { status: 'success', images: { main: `sha256:${'0'.repeat(64)}`, side: `sha256:${'1'.repeat(64)}` } } });
        assert.equal(missing.status, 400);
        assert.match((missing.body as { field: string }).field, /^images\.(main|side)$/);
        const partial = await api(c.base, 'PATCH', `/releases/${r.commit}`, { token: alice.token, body: { status: 'success', images: { main: `sha256:${'0'.repeat(64)}` } } });
        assert.equal(partial.status, 400);
        assert.equal(((await api(c.base, 'GET', `/releases/${r.commit}`, { token: alice.token })).body as { status: string }).status, 'running');
        const images = await complete(r.commit, ['main', 'side']);
        const target = (await api(c.base, 'GET', `/device/v3/${d.uuid}/state`, { token: d.key })).body as Record<string, { apps: Record<string, { releases: Record<string, { services: Record<string, { image: string; environment: Record<string, string> }> }> }> }>;
        const services = target[d.uuid]?.apps[fleetUuid]?.releases[r.commit]?.services;
        assert.ok(services, JSON.stringify(target));
        assert.equal(services.main?.image, `${new URL(c.base).host}/${fleetUuid}/main@${images.main}`);
        assert.equal(services.main?.environment.FROM_COMPOSE, 'main');
        // Ended is ended.
        assert.equal((await api(c.base, 'PATCH', `/releases/${r.commit}`, { token: alice.token, body: { status: 'failed' } })).status, 409);
      });

      it('merges variables in balena\'s order, sends config variables as config, and follows pins', async () => {
        const d = await register(c.base, pk);
        const v1 = await release(['main']);
        await complete(v1.commit, ['main']);
        const v2 = await release(['main']);
        await complete(v2.commit, ['main']);
        const draft = await release(['main'], true);
        await complete(draft.commit, ['main']);
        const put = async (body: Record<string, unknown>) => assert.equal((await api(c.base, 'PUT', '/variables', { token: alice.token, body })).status, 200);
        const etagBefore = (await api(c.base, 'GET', `/device/v3/${d.uuid}/state`, { token: d.key })).headers.get('etag') ?? '';
        await put({ fleet: 'rel', name: 'LEVEL', value: 'fleet' });
        const changed = await api(c.base, 'GET', `/device/v3/${d.uuid}/state`, { token: d.key, headers: { 'if-none-match': etagBefore } });
        assert.equal(changed.status, 200, 'a fleet variable is a new target for every device of the fleet');
        assert.notEqual(changed.headers.get('etag'), etagBefore);
        await put({ fleet: 'rel', name: 'ONLY_FLEET', value: 'f' });
        await put({ fleet: 'rel', service: 'main', name: 'LEVEL', value: 'fleet+service' });
        await put({ device: d.uuid, name: 'LEVEL', value: 'device' });
        await put({ device: d.uuid, service: 'main', name: 'LEVEL', value: 'device+service' });
        await put({ fleet: 'rel', name: 'SKIFF_AGENT_POLL_INTERVAL', value: '30000' });
        const cfgService = await api(c.base, 'PUT', '/variables', { token: alice.token, body: { fleet: 'rel', service: 'main', name: 'BALENA_SUPERVISOR_POLL_INTERVAL', value: '1000' } });
        assert.deepEqual([cfgService.status, (cfgService.body as { field: string }).field], [400, 'service']);
        type T = Record<string, { config: Record<string, string>; apps: Record<string, { releases: Record<string, { services: Record<string, { environment: Record<string, string> }> }> }> }>;
        const get = async () => (await api(c.base, 'GET', `/device/v3/${d.uuid}/state`, { token: d.key })).body as T;
        let t = await get();
        const releases = t[d.uuid]?.apps[fleetUuid]?.releases ?? {};
        assert.deepEqual(Object.keys(releases), [v2.commit], 'the latest final release; a draft is not tracked');
        assert.equal(releases[v2.commit]?.services.main?.environment.LEVEL, 'device+service');
        assert.equal(releases[v2.commit]?.services.main?.environment.ONLY_FLEET, 'f');
        assert.equal(releases[v2.commit]?.services.main?.environment.SKIFF_AGENT_POLL_INTERVAL, undefined);
        assert.equal(t[d.uuid]?.config.SKIFF_AGENT_POLL_INTERVAL, '30000');
        assert.equal((await api(c.base, 'DELETE', `/variables?device=${d.uuid}&service=main&name=LEVEL`, { token: alice.token })).status, 204);
        t = await get();
        assert.equal(t[d.uuid]?.apps[fleetUuid]?.releases[v2.commit]?.services.main?.environment.LEVEL, 'device');
        // Pins: the fleet to v1, then the device to the draft (a pin may name any successful release).
        assert.equal((await api(c.base, 'PATCH', '/fleets/rel', { token: alice.token, body: { pinnedRelease: v1.commit } })).status, 200);
        assert.deepEqual(Object.keys((await get())[d.uuid]?.apps[fleetUuid]?.releases ?? {}), [v1.commit]);
        assert.equal((await api(c.base, 'PATCH', `/devices/${d.uuid}`, { token: alice.token, body: { pinnedRelease: draft.commit } })).status, 200);
        assert.deepEqual(Object.keys((await get())[d.uuid]?.apps[fleetUuid]?.releases ?? {}), [draft.commit]);
        assert.equal((await api(c.base, 'PATCH', `/devices/${d.uuid}`, { token: alice.token, body: { pinnedRelease: null } })).status, 200);
        assert.equal((await api(c.base, 'PATCH', '/fleets/rel', { token: alice.token, body: { pinnedRelease: null } })).status, 200);
        assert.deepEqual(Object.keys((await get())[d.uuid]?.apps[fleetUuid]?.releases ?? {}), [v2.commit]);
        // Invalidating the latest falls back to the one before.
        assert.equal((await api(c.base, 'PATCH', `/releases/${v2.commit}`, { token: alice.token, body: { isInvalidated: true } })).status, 200);
        assert.deepEqual(Object.keys((await get())[d.uuid]?.apps[fleetUuid]?.releases ?? {}), [v1.commit]);
        // A running release cannot be pinned.
        const running = await release(['main']);
        const pin = await api(c.base, 'PATCH', '/fleets/rel', { token: alice.token, body: { pinnedRelease: running.commit } });
        assert.deepEqual([pin.status, (pin.body as { field: string }).field], [400, 'pinnedRelease']);
      });

      it('tracks a draft once it is finalized; lists variables with their kind; sets, lists and removes tags', async () => {
        const d = await register(c.base, pk);
        const draft = await release(['main'], true);
        await complete(draft.commit, ['main']);
        const get = async () => Object.keys(((await api(c.base, 'GET', `/device/v3/${d.uuid}/state`, { token: d.key })).body as Record<string, { apps: Record<string, { releases: object }> }>)[d.uuid]?.apps[fleetUuid]?.releases ?? {});
        assert.notDeepEqual(await get(), [draft.commit]);
        const fin = await api(c.base, 'PATCH', `/releases/${draft.commit.slice(0, 10)}`, { token: alice.token, body: { isFinal: true, semver: '1.2.3', notes: 'ok' } });
        assert.equal(fin.status, 200, JSON.stringify(fin.body));
        assert.deepEqual([(fin.body as { isFinal: boolean }).isFinal, (fin.body as { semver: string }).semver], [true, '1.2.3']);
        assert.deepEqual(await get(), [draft.commit]);
        const list = (await api(c.base, 'GET', '/fleets/rel/releases', { token: alice.token })).body as Array<{ commit: string }>;
        assert.equal(list[0]?.commit, draft.commit, 'newest first');
        const vars = (await api(c.base, 'GET', '/variables?fleet=rel', { token: alice.token })).body as Array<{ name: string; kind: string; service: string | null }>;
        assert.deepEqual(vars.find((v) => v.name === 'SKIFF_AGENT_POLL_INTERVAL')?.kind, 'config');
        assert.deepEqual(vars.find((v) => v.name === 'ONLY_FLEET')?.kind, 'env');
        assert.equal((await api(c.base, 'GET', '/variables', { token: alice.token })).status, 400, 'a scope is needed');
        assert.equal((await api(c.base, 'PUT', '/tags', { token: alice.token, body: { release: draft.commit, key: 'build', value: '42' } })).status, 200);
        assert.equal((await api(c.base, 'PUT', '/tags', { token: alice.token, body: { device: d.uuid, key: 'room', value: 'kitchen' } })).status, 200);
        assert.equal((await api(c.base, 'PUT', '/tags', { token: alice.token, body: { device: d.uuid, key: 'room', value: 'hall' } })).status, 200);
        assert.deepEqual((await api(c.base, 'GET', `/tags?device=${d.uuid}`, { token: alice.token })).body, [{ key: 'room', value: 'hall', fleet: null, device: d.uuid, release: null }]);
        assert.deepEqual(((await api(c.base, 'GET', `/releases/${draft.commit}`, { token: alice.token })).body as { tags: object }).tags, { build: '42' });
        assert.equal((await api(c.base, 'DELETE', `/tags?device=${d.uuid}&key=room`, { token: alice.token })).status, 204);
        assert.equal((await api(c.base, 'DELETE', `/tags?device=${d.uuid}&key=room`, { token: alice.token })).status, 404);
      });

      it("lets a device's registry token pull only its own fleet's repositories, and a user push only their own", async () => {
        const d = await register(c.base, pk);
        const host = new URL(c.base).host;
        const token = async (auth: string, repo: string, actions = 'pull,push') => {
          const res = await fetch(`${c.base}/auth/v1/token?service=${host}&scope=repository:${repo}:${actions}`, { headers: { authorization: `Basic ${Buffer.from(auth).toString('base64')}` } });
          if (res.status !== 200) return { status: res.status, actions: [] as string[] };
          const jwt = ((await res.json()) as { token: string }).token;
          const claims = JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString()) as { access: Array<{ actions: string[] }> };
          return { status: 200, actions: claims.access.flatMap((a) => a.actions).sort() };
        };
        assert.deepEqual((await token(`d_${d.uuid}:${d.key}`, `${fleetUuid}/main`)).actions, ['pull']);
        assert.deepEqual((await token(`_token:${alice.token}`, `${fleetUuid}/main`)).actions, ['pull', 'push']);
        assert.deepEqual((await token(`_token:${bob.token}`, `${fleetUuid}/main`)).actions, []);
        assert.deepEqual((await token(`${alice.email}:${alice.password}`, `${fleetUuid}/main`)).actions, ['pull', 'push']);
        const bobFleet = (await api(c.base, 'GET', '/fleets/fleet-a', { token: bob.token })).body as { uuid: string };
        assert.deepEqual((await token(`d_${d.uuid}:${d.key}`, `${bobFleet.uuid}/main`)).actions, []);
        assert.equal((await token(`d_${d.uuid}:wrong-key-wrong-key`, `${fleetUuid}/main`)).status, 401);
      });

      it("stops a removed device's registry token at once, not when it expires", async () => {
        const d = await register(c.base, pk);
        await pushTinyImage(c.base, alice.token, `${fleetUuid}/gone`);
        const host = new URL(c.base).host;
        const res = await fetch(`${c.base}/auth/v1/token?service=${host}&scope=repository:${fleetUuid}/gone:pull`, { headers: { authorization: `Basic ${Buffer.from(`d_${d.uuid}:${d.key}`).toString('base64')}` } });
        const jwt = ((await res.json()) as { token: string }).token;
        const tags = () => fetch(`${c.base}/v2/${fleetUuid}/gone/tags/list`, { headers: { authorization: `Bearer ${jwt}` } });
        assert.equal((await tags()).status, 200);
        assert.equal((await api(c.base, 'DELETE', `/devices/${d.uuid}`, { token: alice.token })).status, 204);
        const after = await tags();
        assert.equal(after.status, 401, await after.text());
        assert.match(after.headers.get('www-authenticate') ?? '', /^Bearer realm="http:\/\/[^"]+\/auth\/v1\/token"/);
        // The owner's own token still works: only the removed holder is cut off.
        const own = await fetch(`${c.base}/auth/v1/token?service=${host}&scope=repository:${fleetUuid}/gone:pull`, { headers: { authorization: `Basic ${Buffer.from(`_token:${alice.token}`).toString('base64')}` } });
        const ownJwt = ((await own.json()) as { token: string }).token;
        assert.equal((await fetch(`${c.base}/v2/${fleetUuid}/gone/tags/list`, { headers: { authorization: `Bearer ${ownJwt}` } })).status, 200);
      });
    });
  });
}
