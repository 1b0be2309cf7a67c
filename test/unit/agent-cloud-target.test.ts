/**
 * The v3 target (what the server sends) → the agent's target, through the one parser local mode
 * uses: good targets keep every setting, bad ones are refused whole with a reason.
 */
import assert from 'node:assert/strict';
import { convertTargetV3, localImageName, splitImageReference } from '../../src/lib/agent/cloud/target.js';
import { InvalidTargetError } from '../../src/lib/agent/target-state.js';

const UUID = 'abcdef0123456789abcdef0123456789';
const FLEET = 'f1eef1eef1eef1eef1eef1eef1eef1ee';
const DIGEST = `sha256:${'a'.repeat(64)}`;
const DIGEST2 = `sha256:${'b'.repeat(64)}`;

type Json = Record<string, unknown>;
function target(services: Json, extra: { release?: Json; app?: Json; device?: Json } = {}): Json {
  return {
    [UUID]: {
      name: 'dev1',
      config: { SKIFF_AGENT_POLL_INTERVAL: '1000' },
      apps: {
        [FLEET]: { id: 7, name: 'myfleet', class: 'fleet', releases: { c0ffee1: { id: 3, services, volumes: { data: {} }, networks: {}, ...extra.release } }, ...extra.app },
      },
      ...extra.device,
    },
  };
}
const web = (over: Json = {}): Json => ({
  id: 11, image_id: 21, image: `cloud.example.com:48080/${FLEET}/web@${DIGEST}`,
  environment: { FLEET_VAR: 'f', OVER: 'server' }, labels: { 'io.example': 'x' },
  composition: { environment: { OWN: 'o', OVER: 'compose' }, labels: { 'io.balena.update.strategy': 'hand-over' }, ports: ['8080:80'], volumes: ['data:/data'], mem_limit: '64m', restart: 'unless-stopped' },
  ...over,
});

describe('agent cloud: v3 target → the agent target', () => {
  it('a good target keeps every setting, with the server environment over the compose file', () => {
    const t = convertTargetV3(target({ web: web(), worker: { id: 12, image_id: 22, image: `cloud.example.com:48080/${FLEET}/worker@${DIGEST2}`, environment: {}, labels: {}, composition: { command: ['sleep', '100'] } } }), UUID, 'fallback');
    assert.equal(t.parsed.name, 'dev1');
    assert.deepEqual(t.config, { SKIFF_AGENT_POLL_INTERVAL: '1000' });
    const app = t.parsed.apps[0]!;
    assert.equal(app.appId, 7);
    assert.equal(app.commit, 'c0ffee1');
    assert.equal(app.releaseId, '3');
    assert.deepEqual(Object.keys(app.volumes), ['data']);
    const s = app.services.find((x) => x.serviceName === 'web')!;
    assert.equal(s.serviceId, 11);
    assert.equal(s.imageId, 21);
    assert.equal(s.config.image, `skiff-cloud/${FLEET}/web:sha256-${'a'.repeat(64)}`);
    assert.deepEqual(s.config.environment, { OWN: 'o', OVER: 'server', FLEET_VAR: 'f' });
    assert.equal(s.config.labels['io.balena.update.strategy'], 'hand-over');
    assert.equal(s.config.labels['io.example'], 'x');
    assert.equal(s.config.memLimitBytes, 64 * 1024 * 1024);
    assert.equal(s.config.restart, 'unless-stopped');
    assert.deepEqual(t.apps, [{ uuid: FLEET, appId: 7, commit: 'c0ffee1', services: ['web', 'worker'] }]);
    assert.deepEqual(t.images.map((i) => [i.host, i.repository, i.digest, i.services]), [
      ['cloud.example.com:48080', `${FLEET}/web`, DIGEST, [`${FLEET}/web`]],
      ['cloud.example.com:48080', `${FLEET}/worker`, DIGEST2, [`${FLEET}/worker`]],
    ]);
    // The stored JSON is local mode's shape: what GET /v2/local/target-state shows.
    assert.equal(t.json.local.apps?.['7']?.services?.['11']?.serviceName, 'web');
  });

  it("a compose file's list-form environment merges too", () => {
    const t = convertTargetV3(target({ web: web({ composition: { environment: ['A=1', 'OVER=compose'] } }) }), UUID, 'd');
    assert.deepEqual(t.parsed.apps[0]!.services[0]!.config.environment, { A: '1', OVER: 'server', FLEET_VAR: 'f' });
  });

  it('running: false keeps the service created but stopped', () => {
    const t = convertTargetV3(target({ web: web({ running: false }) }), UUID, 'd');
    assert.equal(t.parsed.apps[0]!.services[0]!.running, false);
  });

  it('a fleet with no release yet is an app with nothing to run', () => {
    const t = convertTargetV3({ [UUID]: { name: 'd', config: {}, apps: { [FLEET]: { id: 7, name: 'f', class: 'fleet', releases: {} } } } }, UUID, 'd');
    assert.deepEqual(t.parsed.apps.map((a) => [a.appId, a.services.length]), [[7, 0]]);
    assert.deepEqual(t.apps, [{ uuid: FLEET, appId: 7, commit: undefined, services: [] }]);
  });

  it('no apps at all: nothing to run; the device name falls back when the server sends none', () => {
    const t = convertTargetV3({ [UUID]: { config: {}, apps: {} } }, UUID, 'fallback');
    assert.equal(t.parsed.name, 'fallback');
    assert.equal(t.parsed.apps.length, 0);
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['not an object', [], /keyed by the device uuid/],
    ["another device's target", { ['0'.repeat(32)]: { config: {}, apps: {} } }, /no entry for this device/],
    ['apps missing', { [UUID]: { config: {} } }, /'apps' must be an object/],
    ['config not strings', { [UUID]: { config: { A: 1 }, apps: {} } }, /config: 'A' must be a string/],
    ['app without an id', target({ web: web() }, { app: { id: undefined } }), /positive integer id/],
    ['app of another class', target({ web: web() }, { app: { class: 'block' } }), /only fleet apps/],
    ['two releases', target({ web: web() }, { app: { releases: { a: { id: 1, services: {} }, b: { id: 2, services: {} } } } }), /2 releases; a device runs one/],
    ['a service without an image', target({ web: web({ image: '' }) }), /needs an image/],
    ['a service without an id', target({ web: web({ id: 'x' }) }), /positive integer id/],
    ['a bad digest', target({ web: web({ image: `h.example/r@sha256:xyz` }) }), /digest that is not sha256/],
    ['an upper-case repository', target({ web: web({ image: `h.example/Repo@${DIGEST}` }) }), /invalid repository/],
    ['environment not strings', target({ web: web({ environment: { A: 1 } }) }), /environment: 'A' must be a string/],
    ['composition not an object', target({ web: web({ composition: 'x' }) }), /composition must be an object/],
    ['a setting the parser refuses', target({ web: web({ composition: { build: '.' } }) }), /build/],
    ['an unknown setting', target({ web: web({ composition: { frobnicate: true } }) }), /frobnicate/],
    ['a bad value', target({ web: web({ composition: { mem_limit: 'lots' } }) }), /mem_limit/],
    ['a bad service name', target({ 'bad name': web() }), /serviceName/],
    ['an undeclared volume', target({ web: web() }, { release: { volumes: {} } }), /volume 'data'/],
    ['depends on a missing service', target({ web: web({ composition: { depends_on: ['db'] } }) }), /depends on 'db'/],
    ['a bad environment list', target({ web: web({ composition: { environment: ['=x'] } }) }), /no name before/],
  ];
  for (const [name, body, message] of bad) {
    it(`refuses ${name}`, () => {
      assert.throws(() => convertTargetV3(body, UUID, 'd'), (err: unknown) => err instanceof InvalidTargetError && message.test(err.message));
    });
  }

  it('image names: by digest → a stable local name; others as written', () => {
    assert.equal(localImageName(`127.0.0.1:5000/a/b@${DIGEST}`), `skiff-cloud/a/b:sha256-${'a'.repeat(64)}`);
    assert.equal(localImageName('busybox:1'), 'busybox:1');
    assert.deepEqual(splitImageReference('localhost/x:1'), { host: 'localhost', repository: 'x', tag: '1', digest: undefined });
    assert.deepEqual(splitImageReference('library/x'), { host: undefined, repository: 'library/x', tag: undefined, digest: undefined });
    assert.deepEqual(splitImageReference(`h:5000/a/b:t@${DIGEST}`), { host: 'h:5000', repository: 'a/b', tag: 't', digest: DIGEST });
  });
});
