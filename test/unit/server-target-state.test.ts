import assert from 'node:assert/strict';
import { assembleTarget, chooseRelease, configOf, environmentOf, isConfigVariable, pollIntervalOf, type ScopedVariable, type TargetInput } from '../../src/lib/server/target-state.js';
import { deviceStatus, DEFAULT_POLL_INTERVAL_MS } from '../../src/lib/server/device-status.js';

const v = (level: 'fleet' | 'device', service: string | null, name: string, value: string): ScopedVariable => ({ level, service, name, value });

describe('server target state: environment precedence (compose < fleet < fleet+service < device < device+service)', () => {
  const levels: Array<[string, ScopedVariable | undefined]> = [
    ['fleet', v('fleet', null, 'X', 'fleet')],
    ['fleet+service', v('fleet', 'main', 'X', 'fleet+service')],
    ['device', v('device', null, 'X', 'device')],
    ['device+service', v('device', 'main', 'X', 'device+service')],
  ];
  // Every subset of the four levels, in every order the rows may come from the database: the
  // highest level present wins, else the composition's value.
  for (let mask = 0; mask < 16; mask++) {
    const present = levels.filter((_, i) => mask & (1 << i));
    const expected = present.length === 0 ? 'compose' : present[present.length - 1]?.[0];
    for (const order of ['forward', 'reversed'] as const) {
      const vars = present.map(([, x]) => x).filter((x): x is ScopedVariable => x !== undefined);
      if (order === 'reversed') vars.reverse();
      it(`${present.map(([n]) => n).join(' + ') || 'no variables'} (${order}) → ${expected}`, () => {
        assert.equal(environmentOf('main', { environment: { X: 'compose' } }, vars).X, expected);
      });
    }
  }

  it("applies another service's variables to that service only", () => {
    const vars = [v('fleet', 'other', 'X', 'other'), v('device', 'other', 'Y', 'other')];
    assert.deepEqual(environmentOf('main', {}, vars), {});
    assert.deepEqual(environmentOf('other', {}, vars), { X: 'other', Y: 'other' });
  });

  it('keeps config variables out of the environment and merges them fleet < device', () => {
    const vars = [v('fleet', null, 'SKIFF_AGENT_POLL_INTERVAL', '30000'), v('device', null, 'SKIFF_AGENT_POLL_INTERVAL', '10000'), v('fleet', null, 'BALENA_SUPERVISOR_POLL_INTERVAL', '900000'), v('fleet', null, 'A', '1')];
    assert.deepEqual(environmentOf('main', {}, vars), { A: '1' });
    assert.deepEqual(configOf(vars), { SKIFF_AGENT_POLL_INTERVAL: '10000', BALENA_SUPERVISOR_POLL_INTERVAL: '900000' });
    assert.deepEqual(configOf([...vars].reverse()), { SKIFF_AGENT_POLL_INTERVAL: '10000', BALENA_SUPERVISOR_POLL_INTERVAL: '900000' });
  });

  it('ignores non-string composition environment values', () => {
    assert.deepEqual(environmentOf('main', { environment: { A: 'a', B: 1, C: null } }, []), { A: 'a' });
    assert.deepEqual(environmentOf('main', { environment: ['A=a'] }, []), {});
  });
});

describe('server target state: config variables and poll interval', () => {
  for (const [name, expected] of [['SKIFF_AGENT_POLL_INTERVAL', true], ['BALENA_SUPERVISOR_POLL_INTERVAL', true], ['RESIN_HOST_CONFIG_gpu_mem', true], ['BALENA', false], ['MY_BALENA_X', false], ['skiff_x', false], ['PATH', false]] as const) {
    it(`${name} is ${expected ? '' : 'not '}a config variable`, () => assert.equal(isConfigVariable(name), expected));
  }
  for (const [config, expected] of [
    [{}, DEFAULT_POLL_INTERVAL_MS],
    [{ SKIFF_AGENT_POLL_INTERVAL: '30000' }, 30_000],
    [{ BALENA_SUPERVISOR_POLL_INTERVAL: '900000' }, 900_000],
    [{ SKIFF_AGENT_POLL_INTERVAL: '30000', BALENA_SUPERVISOR_POLL_INTERVAL: '900000' }, 30_000],
    [{ SKIFF_AGENT_POLL_INTERVAL: 'soon', BALENA_SUPERVISOR_POLL_INTERVAL: '900000' }, 900_000],
    [{ SKIFF_AGENT_POLL_INTERVAL: '10' }, DEFAULT_POLL_INTERVAL_MS],
    [{ SKIFF_AGENT_POLL_INTERVAL: '-5000' }, DEFAULT_POLL_INTERVAL_MS],
  ] as Array<[Record<string, string>, number]>) {
    it(`poll interval of ${JSON.stringify(config)} is ${expected} ms`, () => assert.equal(pollIntervalOf(config), expected));
  }
});

describe('server target state: which release', () => {
  for (const [pins, expected] of [
    [{ device: null, fleet: null, latest: null }, undefined],
    [{ device: null, fleet: null, latest: 3 }, 3],
    [{ device: null, fleet: 2, latest: 3 }, 2],
    [{ device: 1, fleet: 2, latest: 3 }, 1],
    [{ device: 1, fleet: null, latest: 3 }, 1],
    [{ device: 1, fleet: null, latest: null }, 1],
    [{ device: null, fleet: 2, latest: null }, 2],
  ] as Array<[{ device: number | null; fleet: number | null; latest: number | null }, number | undefined]>) {
    it(`device pin ${pins.device}, fleet pin ${pins.fleet}, latest ${pins.latest} → ${expected}`, () => assert.equal(chooseRelease(pins), expected));
  }
});

describe('server target state: assembly', () => {
  const base: TargetInput = {
    device: { uuid: 'd'.repeat(32), name: 'kitchen' },
    fleet: { id: 7, uuid: 'f'.repeat(32), name: 'fleet-a' },
    release: {
      id: 3, commit: 'c0ffee1',
      composition: {
        services: { web: { build: { context: '.' }, environment: { A: 'compose' }, labels: { 'io.balena.features.dbus': '1', bad: 2 }, ports: ['80:80'] }, db: {} },
        volumes: { data: {} },
      },
      images: [{ id: 31, service: 'web', repository: `${'f'.repeat(32)}/web`, digest: `sha256:${'a'.repeat(64)}` }, { id: 32, service: 'db', repository: `${'f'.repeat(32)}/db`, digest: `sha256:${'b'.repeat(64)}` }],
    },
    variables: [v('fleet', null, 'A', 'fleet'), v('device', 'db', 'B', 'device+db'), v('fleet', null, 'SKIFF_AGENT_POLL_INTERVAL', '5000')],
    registryHost: 'cloud.example:48080',
  };

  it('is keyed by the device uuid, with the fleet as the app and the release by commit', () => {
    const t = assembleTarget(base);
    const device = t['d'.repeat(32)];
    assert.ok(device);
    assert.equal(device.name, 'kitchen');
    assert.deepEqual(device.config, { SKIFF_AGENT_POLL_INTERVAL: '5000' });
    const app = device.apps['f'.repeat(32)];
    assert.deepEqual([app?.id, app?.name, app?.class], [7, 'fleet-a', 'fleet']);
    const release = app?.releases.c0ffee1;
    assert.ok(release);
    assert.deepEqual(Object.keys(release.services), ['db', 'web']);
    assert.deepEqual(release.volumes, { data: {} });
    assert.deepEqual(release.networks, {});
    const web = release.services.web;
    assert.equal(web?.image, `cloud.example:48080/${'f'.repeat(32)}/web@sha256:${'a'.repeat(64)}`);
    assert.deepEqual(web?.environment, { A: 'fleet' });
    assert.deepEqual(web?.labels, { 'io.balena.features.dbus': '1' });
    assert.equal(web?.composition.build, undefined, 'build never reaches a device');
    assert.deepEqual(web?.composition.ports, ['80:80']);
    assert.deepEqual(release.services.db?.environment, { A: 'fleet', B: 'device+db' });
    assert.equal(release.services.db?.image_id, 32);
  });

  it('has an app with no release when there is none to run', () => {
    const t = assembleTarget({ ...base, release: undefined });
    assert.deepEqual(t['d'.repeat(32)]?.apps['f'.repeat(32)]?.releases, {});
  });

  it('refuses to assemble a release with a service that has no image', () => {
    assert.throws(() => assembleTarget({ ...base, release: { ...base.release!, images: base.release!.images.slice(0, 1) } }), /no image for service db/);
  });

  it('is the same whatever order the variables come in', () => {
    assert.deepEqual(assembleTarget({ ...base, variables: [...base.variables].reverse() }), assembleTarget(base));
  });
});

describe('server device status (offline after 1.5 × poll interval + 15 s)', () => {
  const now = 1_000_000_000;
  for (const [lastSeenAgo, interval, expected] of [
    [undefined, 60_000, 'offline'],
    [0, 60_000, 'online'],
    [105_000, 60_000, 'online'],
    [105_001, 60_000, 'offline'],
    [29_999, 10_000, 'online'],
    [30_001, 10_000, 'offline'],
    [1_365_000, 900_000, 'online'],
    [1_365_001, 900_000, 'offline'],
  ] as Array<[number | undefined, number, 'online' | 'offline']>) {
    it(`last poll ${lastSeenAgo ?? 'never'} ms ago at a ${interval} ms interval → ${expected}`, () => {
      assert.equal(deviceStatus(lastSeenAgo === undefined ? undefined : now - lastSeenAgo, interval, now), expected);
    });
  }
});
