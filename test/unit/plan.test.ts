import assert from 'node:assert/strict';
import { handoverTimeoutMs, plan, serviceConfigHash, updateStrategy, UPDATE_STRATEGY_LABEL } from '../../src/lib/agent/plan.js';
import type { PlanOptions } from '../../src/lib/agent/plan.js';
import type {
  CurrentContainer,
  CurrentState,
  ServiceConfig,
  Step,
  StepAction,
  TargetApp,
  TargetService,
  TargetState,
  UpdateStrategy,
} from '../../src/lib/agent/model.js';

// ---------------------------------------------------------------------------------------------
// Builders

type SvcOptions = Partial<Omit<TargetService, 'config'>> & { config?: Partial<ServiceConfig>; strategy?: UpdateStrategy };

let nextServiceId = 1;
function svc(serviceName: string, opts: SvcOptions = {}): TargetService {
  const { config = {}, strategy, ...rest } = opts;
  const labels = { ...(config.labels ?? {}), ...(strategy ? { [UPDATE_STRATEGY_LABEL]: strategy } : {}) };
  return {
    serviceId: nextServiceId++,
    serviceName,
    imageId: 1,
    running: true,
    ...rest,
    config: {
      image: `${serviceName}:v1`,
      environment: {},
      ports: [],
      volumes: [],
      tmpfs: [],
      networks: [],
      restart: 'always',
      privileged: false,
      capAdd: [],
      capDrop: [],
      devices: [],
      dependsOn: [],
      ...config,
      labels,
    },
  };
}

function app(appId: number, services: TargetService[], opts: { volumes?: string[]; networks?: string[] } = {}): TargetApp {
  return {
    appId,
    name: `app${appId}`,
    commit: 'c0ffee',
    releaseId: '1',
    services,
    volumes: Object.fromEntries((opts.volumes ?? []).map((v) => [v, {}])),
    networks: Object.fromEntries((opts.networks ?? []).map((n) => [n, {}])),
  };
}

const target = (...apps: TargetApp[]): TargetState => ({ name: 'dev', config: {}, apps });

function state(partial: Partial<CurrentState> = {}): CurrentState {
  return { containers: [], images: {}, volumes: [], networks: [], locked: [], ...partial };
}

/** The engine id the tests give an image name. */
const engineId = (image: string): string => `sha256:${image}`;

/** Images present for every service of the apps. */
function imagesOf(...apps: TargetApp[]): Record<string, string> {
  return Object.fromEntries(apps.flatMap((a) => a.services.map((s) => [s.config.image, engineId(s.config.image)])));
}

/** Volumes and networks the apps declare, as present on the engine. */
function resourcesOf(...apps: TargetApp[]): Pick<CurrentState, 'volumes' | 'networks'> {
  return {
    volumes: apps.flatMap((a) => Object.keys(a.volumes).map((name) => ({ appId: a.appId, name }))),
    networks: apps.flatMap((a) => Object.keys(a.networks).map((name) => ({ appId: a.appId, name }))),
  };
}

let nextContainer = 1;
/** A container of the service; up to date for `images` unless `configHash` is given. */
function container(a: TargetApp, s: TargetService, images: Record<string, string>, over: Partial<CurrentContainer> = {}): CurrentContainer {
  const n = nextContainer++;
  const imageId = images[s.config.image] ?? 'sha256:gone';
  return {
    containerId: `ctr${String(n).padStart(4, '0')}`,
    name: `${s.serviceName}_${n}`,
    appId: a.appId,
    serviceId: s.serviceId,
    serviceName: s.serviceName,
    commit: a.commit,
    releaseId: a.releaseId,
    imageId,
    configHash: serviceConfigHash(a, s, imageId),
    state: 'running',
    createdAt: `2024-01-01T00:00:${String(n % 60).padStart(2, '0')}Z`,
    ...over,
  };
}

/** A fully converged current state for the target (every service up to date, in its run state). */
function converged(t: TargetState, extra: Partial<CurrentState> = {}): CurrentState {
  const images = imagesOf(...t.apps);
  return state({
    images,
    ...resourcesOf(...t.apps),
    containers: t.apps.flatMap((a) => a.services.map((s) => container(a, s, images, { state: s.running ? 'running' : 'created' }))),
    ...extra,
  });
}

const actions = (steps: Step[]): string[] => steps.map((s) => s.action);

/** Compact description of a step, for readable expectations. */
function describe_(s: Step): string {
  switch (s.action) {
    case 'fetch':
      return `fetch ${s.image}`;
    case 'createVolume':
    case 'createNetwork':
    case 'removeVolume':
    case 'removeNetwork':
      return `${s.action} ${s.appId}/${s.name}`;
    case 'stop':
    case 'kill':
    case 'remove':
    case 'start':
      return `${s.action} ${s.container.appId}/${s.container.serviceName}`;
    case 'create':
      return `create ${s.app.appId}/${s.service.serviceName}`;
    case 'noop':
      return `noop ${s.reason}`;
  }
}
const desc = (steps: Step[]): string[] => steps.map(describe_);

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Simulator: applies a round the way the executors would, checking each step was safe to plan.

interface SimOptions {
  /** Engine ids a fetch yields, by image name (default: engineId(name)). */
  registry?: Record<string, string>;
  force?: boolean;
  maxRounds?: number;
}

const isActive = (c: CurrentContainer): boolean => c.state === 'running' || c.state === 'paused' || c.state === 'restarting';

let simCounter = 0;
/** Applies one round; the preconditions are checked against the state the round was planned from. */
function applyRound(before: CurrentState, t: TargetState, steps: Step[], registry: Record<string, string>): CurrentState {
  const after = structuredClone(before);
  const keys = steps.map((s) => JSON.stringify(s));
  assert.equal(new Set(keys).size, keys.length, `duplicate steps in a round: ${desc(steps).join(', ')}`);
  const find = (c: CurrentContainer): CurrentContainer => {
    const found = after.containers.find((x) => x.containerId === c.containerId);
    assert.ok(found, `no container ${c.containerId}`);
    return found;
  };
  const runningUpToDate = (a: TargetApp, name: string): boolean => {
    const dep = a.services.find((s) => s.serviceName === name);
    assert.ok(dep);
    const id = before.images[dep.config.image];
    return id !== undefined && before.containers.some((c) => c.appId === a.appId && c.serviceName === name && c.state === 'running' && c.configHash === serviceConfigHash(a, dep, id));
  };
  for (const step of steps) {
    switch (step.action) {
      case 'fetch':
        assert.equal(before.images[step.image], undefined, `fetch of present ${step.image}`);
        after.images[step.image] = registry[step.image] ?? engineId(step.image);
        break;
      case 'createVolume':
        assert.ok(!before.volumes.some((v) => v.appId === step.appId && v.name === step.name));
        after.volumes.push({ appId: step.appId, name: step.name });
        break;
      case 'createNetwork':
        assert.ok(!before.networks.some((v) => v.appId === step.appId && v.name === step.name));
        after.networks.push({ appId: step.appId, name: step.name });
        break;
      case 'removeVolume':
      case 'removeNetwork': {
        assert.ok(!before.containers.some((c) => c.appId === step.appId), `${step.action} while app ${step.appId} has containers`);
        assert.ok(!t.apps.some((a) => a.appId === step.appId), `${step.action} of app ${step.appId} still in the target`);
        const list = step.action === 'removeVolume' ? after.volumes : after.networks;
        const i = list.findIndex((v) => v.appId === step.appId && v.name === step.name);
        assert.ok(i >= 0);
        list.splice(i, 1);
        break;
      }
      case 'kill':
      case 'stop': {
        const c = find(step.container);
        assert.ok(isActive(c), `${step.action} of a ${c.state} container`);
        c.state = 'exited';
        break;
      }
      case 'remove': {
        const c = find(step.container);
        assert.ok(!isActive(c), `remove of a ${c.state} container`);
        after.containers = after.containers.filter((x) => x !== c);
        break;
      }
      case 'create': {
        const { app: a, service: s } = step;
        const id = before.images[s.config.image];
        assert.ok(id, `create without image ${s.config.image}`);
        for (const v of Object.keys(a.volumes)) assert.ok(before.volumes.some((x) => x.appId === a.appId && x.name === v), `create before volume ${v}`);
        for (const n of Object.keys(a.networks)) assert.ok(before.networks.some((x) => x.appId === a.appId && x.name === n), `create before network ${n}`);
        for (const d of s.config.dependsOn) assert.ok(runningUpToDate(a, d), `create of ${s.serviceName} before ${d} runs`);
        const hash = serviceConfigHash(a, s, id);
        assert.ok(!before.containers.some((c) => c.appId === a.appId && c.serviceName === s.serviceName && c.configHash === hash), 'create of an existing container');
        simCounter++;
        after.containers.push({
          containerId: `sim${String(simCounter).padStart(6, '0')}`,
          name: `${s.serviceName}_sim${simCounter}`,
          appId: a.appId,
          serviceId: s.serviceId,
          serviceName: s.serviceName,
          commit: a.commit,
          releaseId: a.releaseId,
          imageId: id,
          configHash: hash,
          state: 'created',
          createdAt: `2030-01-01T00:00:00.${String(simCounter).padStart(6, '0')}Z`,
        });
        break;
      }
      case 'start': {
        const c = find(step.container);
        assert.ok(c.state === 'created' || c.state === 'exited', `start of a ${c.state} container`);
        const a = t.apps.find((x) => x.appId === c.appId);
        const s = a?.services.find((x) => x.serviceName === c.serviceName);
        assert.ok(a && s, 'start of a container not in the target');
        for (const d of s.config.dependsOn) assert.ok(runningUpToDate(a, d), `start of ${s.serviceName} before ${d} runs`);
        c.state = 'running';
        break;
      }
      case 'noop':
        break;
    }
  }
  return after;
}

/** Plans and applies until the plan is empty; returns the rounds and the final state. */
function converge(initial: CurrentState, t: TargetState, opts: SimOptions = {}): { rounds: Step[][]; final: CurrentState } {
  const rounds: Step[][] = [];
  let current = initial;
  const max = opts.maxRounds ?? 30;
  const planOpts: PlanOptions = { force: opts.force };
  for (let i = 0; i < max; i++) {
    const steps = plan(current, t, planOpts);
    if (steps.length === 0) return { rounds, final: current };
    rounds.push(steps);
    current = applyRound(current, t, steps, opts.registry ?? {});
  }
  assert.fail(`no convergence in ${max} rounds; last: ${desc(rounds[rounds.length - 1] ?? []).join(', ')}`);
}

/** The final state is what the target describes, and nothing else. */
function assertMatches(final: CurrentState, t: TargetState, keptVolumes: Array<{ appId: number; name: string }> = []): void {
  for (const a of t.apps) {
    for (const s of a.services) {
      const mine = final.containers.filter((c) => c.appId === a.appId && c.serviceName === s.serviceName);
      assert.equal(mine.length, 1, `one container for ${a.appId}/${s.serviceName}`);
      const id = final.images[s.config.image];
      assert.ok(id);
      assert.equal(mine[0]!.configHash, serviceConfigHash(a, s, id), `${s.serviceName} up to date`);
      if (s.running) assert.equal(mine[0]!.state, 'running', `${s.serviceName} running`);
      else assert.ok(!isActive(mine[0]!), `${s.serviceName} not running`);
    }
    for (const v of Object.keys(a.volumes)) assert.ok(final.volumes.some((x) => x.appId === a.appId && x.name === v), `volume ${v}`);
    for (const n of Object.keys(a.networks)) assert.ok(final.networks.some((x) => x.appId === a.appId && x.name === n), `network ${n}`);
  }
  const known = (appId: number, name: string): boolean => t.apps.some((a) => a.appId === appId && a.services.some((s) => s.serviceName === name));
  for (const c of final.containers) assert.ok(known(c.appId, c.serviceName), `stray container ${c.appId}/${c.serviceName}`);
  const ids = new Set(t.apps.map((a) => a.appId));
  for (const v of final.volumes) assert.ok(ids.has(v.appId), `stray volume ${v.appId}/${v.name}`);
  for (const n of final.networks) assert.ok(ids.has(n.appId), `stray network ${n.appId}/${n.name}`);
  for (const v of keptVolumes) assert.ok(final.volumes.some((x) => x.appId === v.appId && x.name === v.name), `kept volume ${v.name}`);
  assert.deepEqual(plan(final, t), []);
}

const STRATEGIES: UpdateStrategy[] = ['download-then-kill', 'kill-then-download', 'delete-then-download', 'hand-over'];

// ---------------------------------------------------------------------------------------------

describe('agent plan', () => {
  describe('updateStrategy', () => {
    const cases: Array<[string | undefined, UpdateStrategy]> = [
      [undefined, 'download-then-kill'],
      ['download-then-kill', 'download-then-kill'],
      ['kill-then-download', 'kill-then-download'],
      ['delete-then-download', 'delete-then-download'],
      ['hand-over', 'hand-over'],
      ['handover', 'download-then-kill'],
      ['', 'download-then-kill'],
      ['KILL-THEN-DOWNLOAD', 'download-then-kill'],
    ];
    for (const [label, expected] of cases) {
      it(`label ${JSON.stringify(label)} → ${expected}`, () => {
        const s = svc('web', { config: { labels: label === undefined ? {} : { [UPDATE_STRATEGY_LABEL]: label } } });
        assert.equal(updateStrategy(s), expected);
      });
    }
  });

  describe('serviceConfigHash', () => {
    const s = svc('web', { config: { environment: { A: '1', B: '2' } } });
    const a = app(1, [s]);
    const base = serviceConfigHash(a, s, 'sha256:x');

    it('is a hex sha256 and deterministic', () => {
      assert.match(base, /^[0-9a-f]{64}$/);
      assert.equal(serviceConfigHash(a, s, 'sha256:x'), base);
    });
    it('does not depend on key order', () => {
      const s2 = { ...s, config: { ...s.config, environment: { B: '2', A: '1' } } };
      assert.equal(serviceConfigHash(a, s2, 'sha256:x'), base);
    });
    it('treats an undefined field as absent', () => {
      const s2 = { ...s, config: { ...s.config, user: undefined } };
      assert.equal(serviceConfigHash(a, s2, 'sha256:x'), base);
    });
    it('ignores running (start/stop must not recreate)', () => {
      assert.equal(serviceConfigHash(a, { ...s, running: false }, 'sha256:x'), base);
    });
    const changes: Array<[string, () => string]> = [
      ['engine image id', () => serviceConfigHash(a, s, 'sha256:y')],
      ['environment', () => serviceConfigHash(a, { ...s, config: { ...s.config, environment: { A: '1', B: '3' } } }, 'sha256:x')],
      ['appId', () => serviceConfigHash({ ...a, appId: 2 }, s, 'sha256:x')],
      ['serviceName', () => serviceConfigHash(a, { ...s, serviceName: 'api' }, 'sha256:x')],
      ['array order (command)', () => serviceConfigHash(a, { ...s, config: { ...s.config, command: ['b', 'a'] } }, 'sha256:x')],
      ['a resource limit (mem_limit)', () => serviceConfigHash(a, { ...s, config: { ...s.config, memLimitBytes: 64 * 1024 ** 2 } }, 'sha256:x')],
    ];
    for (const [what, hash] of changes) it(`changes with ${what}`, () => assert.notEqual(hash(), base));
  });

  describe('basics', () => {
    it('empty current and target → []', () => {
      assert.deepEqual(plan(state(), target()), []);
    });

    it('converged state → [] (running, created and exited running:false services)', () => {
      const t = target(app(1, [svc('web'), svc('off', { running: false })], { volumes: ['data'], networks: ['net'] }));
      assert.deepEqual(plan(converged(t), t), []);
      const exited = converged(t);
      exited.containers[1]!.state = 'exited';
      assert.deepEqual(plan(exited, t), []);
    });

    it('fresh install: resources and fetch, then create, then start', () => {
      const t = target(app(1, [svc('web'), svc('api')], { volumes: ['data'], networks: ['net'] }));
      const { rounds, final } = converge(state(), t);
      assert.deepEqual(rounds.map(desc), [
        ['createVolume 1/data', 'createNetwork 1/net', 'fetch web:v1', 'fetch api:v1'],
        ['create 1/web', 'create 1/api'],
        ['start 1/web', 'start 1/api'],
      ]);
      assertMatches(final, t);
    });

    it('no create while a volume or network of the app is missing', () => {
      const t = target(app(1, [svc('web')], { volumes: ['data'], networks: ['net'] }));
      const cur = state({ images: imagesOf(...t.apps), volumes: [{ appId: 1, name: 'data' }] });
      assert.deepEqual(desc(plan(cur, t)), ['createNetwork 1/net']);
    });

    it('a volume of the same name in another app does not count', () => {
      const t = target(app(1, [svc('web')], { volumes: ['data'] }));
      const cur = state({ images: imagesOf(...t.apps), volumes: [{ appId: 2, name: 'data' }] });
      assert.deepEqual(desc(plan(cur, t)), ['createVolume 1/data', 'removeVolume 2/data']);
    });

    it('no start while a network of the app is missing', () => {
      const t = target(app(1, [svc('web')], { networks: ['net'] }));
      const cur = converged(t, { networks: [] });
      cur.containers[0]!.state = 'exited';
      assert.deepEqual(desc(plan(cur, t)), ['createNetwork 1/net']);
    });

    it('one fetch per image, even when services share it', () => {
      const t = target(app(1, [svc('a', { config: { image: 'shared:1' } }), svc('b', { config: { image: 'shared:1' } })]), app(2, [svc('c', { config: { image: 'shared:1' } })]));
      assert.deepEqual(desc(plan(state(), t)), ['fetch shared:1']);
      assertMatches(converge(state(), t).final, t);
    });

    it('create only once the image is present', () => {
      const t = target(app(1, [svc('web')]));
      assert.deepEqual(actions(plan(state(), t)), ['fetch']);
      assert.deepEqual(actions(plan(state({ images: imagesOf(...t.apps) }), t)), ['create']);
    });
  });

  describe('updates per strategy', () => {
    // Round-by-round actions when a running service's image changes.
    const expected: Record<UpdateStrategy, string[][]> = {
      'download-then-kill': [['fetch'], ['kill'], ['remove'], ['create'], ['start']],
      'kill-then-download': [['kill'], ['remove'], ['fetch'], ['create'], ['start']],
      'delete-then-download': [['kill'], ['remove'], ['fetch'], ['create'], ['start']],
      'hand-over': [['fetch'], ['create'], ['start'], ['kill'], ['remove']],
    };
    for (const strategy of STRATEGIES) {
      it(`image change with ${strategy}`, () => {
        const v1 = app(1, [svc('web', { strategy })]);
        const v2 = app(1, [{ ...v1.services[0]!, config: { ...v1.services[0]!.config, image: 'web:v2' } }]);
        const t = target(v2);
        const { rounds, final } = converge(converged(target(v1)), t);
        assert.deepEqual(rounds.map(actions), expected[strategy]);
        assertMatches(final, t);
      });

      it(`environment change with ${strategy} recreates (image present: no fetch)`, () => {
        const v1 = app(1, [svc('web', { strategy, config: { environment: { MODE: 'a' } } })]);
        const s2 = { ...v1.services[0]!, config: { ...v1.services[0]!.config, environment: { MODE: 'b' } } };
        const t = target({ ...v1, services: [s2] });
        const { rounds, final } = converge(converged(target(v1)), t);
        const flat = rounds.flatMap(actions);
        assert.ok(!flat.includes('fetch'));
        assert.deepEqual(flat.slice().sort(), ['create', 'kill', 'remove', 'start']);
        if (strategy === 'hand-over') assert.deepEqual(rounds.map(actions), [['create'], ['start'], ['kill'], ['remove']]);
        else assert.deepEqual(rounds.map(actions), [['kill'], ['remove'], ['create'], ['start']]);
        assertMatches(final, t);
      });

      it(`rebuilt image under the same tag counts as a change (${strategy})`, () => {
        const t = target(app(1, [svc('web', { strategy })]));
        const cur = converged(t);
        cur.images['web:v1'] = 'sha256:rebuilt';
        const steps = plan(cur, t);
        assert.deepEqual(actions(steps), strategy === 'hand-over' ? ['create'] : ['kill']);
        assertMatches(converge(cur, t).final, t);
      });

      it(`fresh install with ${strategy}`, () => {
        const t = target(app(1, [svc('web', { strategy })], { volumes: ['data'] }));
        const { rounds, final } = converge(state(), t);
        assert.deepEqual(rounds.map(actions), [['createVolume', 'fetch'], ['create'], ['start']]);
        assertMatches(final, t);
      });
    }

    it('download-then-kill keeps the old container running while the image downloads', () => {
      const v1 = app(1, [svc('web')]);
      const t = target(app(1, [{ ...v1.services[0]!, config: { ...v1.services[0]!.config, image: 'web:v2' } }]));
      const steps = plan(converged(target(v1)), t);
      assert.deepEqual(desc(steps), ['fetch web:v2']);
    });

    it('an exited outdated container is removed straight away', () => {
      const v1 = app(1, [svc('web')]);
      const cur = converged(target(v1));
      cur.containers[0]!.state = 'exited';
      const t = target(app(1, [{ ...v1.services[0]!, config: { ...v1.services[0]!.config, environment: { X: '1' } } }]));
      assert.deepEqual(actions(plan(cur, t)), ['remove']);
    });

    it('hand-over: does not kill the old container while the new one is only created', () => {
      const s = svc('web', { strategy: 'hand-over' });
      const a = app(1, [s]);
      const images = imagesOf(a);
      const old = container(a, s, images, { configHash: 'old' });
      const fresh = container(a, s, images, { state: 'created' });
      assert.deepEqual(plan(state({ images, containers: [old, fresh] }), target(a)), [{ action: 'start', container: fresh }]);
    });

    it('delete-then-download deletes the old image with the old container; kill-then-download keeps it', () => {
      for (const strategy of ['delete-then-download', 'kill-then-download'] as const) {
        const s = svc('web', { strategy });
        const a = app(1, [s]);
        const images = imagesOf(a);
        const old = container(a, s, images, { configHash: 'old', imageId: 'sha256:old', state: 'exited' });
        const steps = plan(state({ images, containers: [old] }), target(a));
        assert.deepEqual(steps, [{ action: 'remove', container: old, ...(strategy === 'delete-then-download' ? { deleteImage: true } : {}) }]);
      }
    });

    describe('hand-over with a clock', () => {
      const T0 = Date.parse('2026-01-01T00:00:00Z');
      const setup = (labels: Record<string, string> = {}) => {
        const s = svc('web', { strategy: 'hand-over', config: { labels } });
        const a = app(1, [s]);
        const images = imagesOf(a);
        const old = container(a, s, images, { configHash: 'old' });
        const fresh = container(a, s, images, { state: 'running', startedAt: new Date(T0).toISOString() });
        return { a, images, old, fresh };
      };

      it('keeps the old container while the new one has not taken over, and says why', () => {
        const { a, images, old, fresh } = setup();
        const steps = plan(state({ images, containers: [old, fresh] }), target(a), { now: T0 + 5_000 });
        assert.deepEqual(steps, [{ action: 'noop', reason: "waiting for service 'web' to take over from its old container (hand-over)" }]);
      });

      it('retires the old container once the new one wrote handover-complete', () => {
        const { a, images, old, fresh } = setup();
        const steps = plan(state({ images, containers: [old, fresh], handoverComplete: ['1/web'] }), target(a), { now: T0 + 5_000 });
        assert.deepEqual(actions(steps), ['kill']);
      });

      it('retires the old container after the default 60 s hand-over timeout', () => {
        const { a, images, old, fresh } = setup();
        assert.deepEqual(actions(plan(state({ images, containers: [old, fresh] }), target(a), { now: T0 + 59_000 })), ['noop']);
        assert.deepEqual(actions(plan(state({ images, containers: [old, fresh] }), target(a), { now: T0 + 60_000 })), ['kill']);
      });

      it('honours io.balena.update.handover-timeout (milliseconds)', () => {
        const { a, images, old, fresh } = setup({ 'io.balena.update.handover-timeout': '2000' });
        assert.deepEqual(actions(plan(state({ images, containers: [old, fresh] }), target(a), { now: T0 + 1_000 })), ['noop']);
        assert.deepEqual(actions(plan(state({ images, containers: [old, fresh] }), target(a), { now: T0 + 2_000 })), ['kill']);
      });

      it('an invalid timeout label falls back to 60 s', () => {
        const { a } = setup({ 'io.balena.update.handover-timeout': 'soon' });
        assert.equal(handoverTimeoutMs(a.services[0]!), 60_000);
      });
    });

    it('hand-over: a stopped old container is removed without waiting', () => {
      const s = svc('web', { strategy: 'hand-over' });
      const a = app(1, [s]);
      const images = imagesOf(a);
      const old = container(a, s, images, { configHash: 'old', state: 'exited' });
      const fresh = container(a, s, images, { state: 'created' });
      assert.deepEqual(actions(plan(state({ images, containers: [old, fresh] }), target(a))), ['remove', 'start']);
    });

    it('a dead container is removed and replaced', () => {
      const t = target(app(1, [svc('web')]));
      const cur = converged(t);
      cur.containers[0]!.state = 'dead';
      const { rounds, final } = converge(cur, t);
      assert.deepEqual(rounds.map(actions), [['remove'], ['create'], ['start']]);
      assertMatches(final, t);
    });

    it('a container being removed is waited for', () => {
      const t = target(app(1, [svc('web')]));
      const cur = converged(t);
      cur.containers[0]!.configHash = 'old';
      cur.containers[0]!.state = 'removing';
      assert.deepEqual(plan(cur, t), []);
    });
  });

  describe('removal', () => {
    it('removed service → kill, then remove', () => {
      const keep = svc('web');
      const gone = svc('old');
      const before = target(app(1, [keep, gone]));
      const t = target(app(1, [keep]));
      const { rounds, final } = converge(converged(before), t);
      assert.deepEqual(rounds.map(desc), [['kill 1/old'], ['remove 1/old']]);
      assertMatches(final, t);
    });

    it('a paused container of a removed service is killed', () => {
      const before = target(app(1, [svc('old')]));
      const cur = converged(before);
      cur.containers[0]!.state = 'paused';
      assert.deepEqual(desc(plan(cur, target(app(1, [])))), ['kill 1/old']);
    });

    it('removed app → containers, then networks and volumes', () => {
      const gone = app(2, [svc('x'), svc('y')], { volumes: ['data'], networks: ['net'] });
      const stays = app(1, [svc('web')]);
      const t = target(stays);
      const { rounds, final } = converge(converged(target(stays, gone)), t);
      assert.deepEqual(rounds.map(desc), [
        ['kill 2/x', 'kill 2/y'],
        ['remove 2/x', 'remove 2/y'],
        ['removeVolume 2/data', 'removeNetwork 2/net'],
      ]);
      assertMatches(final, t);
    });

    it('volumes of an app still in the target survive a release that drops them', () => {
      const v1 = app(1, [svc('web', { config: { volumes: ['data:/data'] } })], { volumes: ['data', 'cache'] });
      const v2 = app(1, [svc('web', { config: { environment: { V: '2' } } })], { volumes: ['cache'] });
      const { rounds, final } = converge(converged(target(v1)), target(v2));
      assert.ok(!rounds.flat().some((s) => s.action === 'removeVolume'));
      assertMatches(final, target(v2), [{ appId: 1, name: 'data' }]);
    });

    it('everything removed when the target is empty', () => {
      const before = target(app(1, [svc('a')], { volumes: ['v'] }), app(2, [svc('b', { running: false })], { networks: ['n'] }));
      const { final } = converge(converged(before), target());
      assert.deepEqual(final, state({ images: final.images }));
    });
  });

  describe('depends_on', () => {
    it('a chain comes up one service at a time', () => {
      const t = target(app(1, [svc('api', { config: { dependsOn: ['db'] } }), svc('web', { config: { dependsOn: ['api'] } }), svc('db')]));
      const { rounds, final } = converge(state({ images: imagesOf(...t.apps) }), t);
      assert.deepEqual(rounds.map(desc), [['create 1/db'], ['start 1/db'], ['create 1/api'], ['start 1/api'], ['create 1/web'], ['start 1/web']]);
      assertMatches(final, t);
    });

    it('an existing stopped container waits for its dependency to run', () => {
      const t = target(app(1, [svc('db'), svc('api', { config: { dependsOn: ['db'] } })]));
      const cur = converged(t);
      for (const c of cur.containers) c.state = 'exited';
      assert.deepEqual(desc(plan(cur, t)), ['start 1/db']);
    });

    it('an outdated dependency does not count as met', () => {
      const db = svc('db');
      const api = svc('api', { config: { dependsOn: ['db'] } });
      const a = app(1, [db, api]);
      const images = imagesOf(a);
      const cur = state({ images, containers: [container(a, db, images, { configHash: 'old' })] });
      const steps = plan(cur, target(a));
      assert.ok(!steps.some((s) => s.action === 'create' && s.service.serviceName === 'api'));
    });

    it('a dependency in another app does not count', () => {
      const a1 = app(1, [svc('db')]);
      const a2 = app(2, [svc('api', { config: { dependsOn: ['db'] } })]);
      const cur = converged(target(a1), { images: imagesOf(a1, a2) });
      assert.deepEqual(plan(cur, target(a1, a2)), []);
    });
  });

  describe('running: false', () => {
    it('a running container is stopped, not killed', () => {
      const s = svc('web');
      const t = target(app(1, [{ ...s, running: false }]));
      const cur = converged(target(app(1, [s])));
      assert.deepEqual(actions(plan(cur, t)), ['stop']);
    });

    it('a fresh service is created but not started', () => {
      const t = target(app(1, [svc('web', { running: false })]));
      const { rounds, final } = converge(state(), t);
      assert.deepEqual(rounds.map(actions), [['fetch'], ['create']]);
      assertMatches(final, t);
    });

    it('an outdated running container is killed and replaced, not started', () => {
      const s = svc('web');
      const changed = { ...s, running: false, config: { ...s.config, environment: { X: '1' } } };
      const t = target(app(1, [changed]));
      const { rounds } = converge(converged(target(app(1, [s]))), t);
      assert.deepEqual(rounds.map(actions), [['kill'], ['remove'], ['create']]);
    });

    it('hand-over to a service that should not run kills the old one once the new exists', () => {
      const s = svc('web', { strategy: 'hand-over' });
      const changed = { ...s, running: false, config: { ...s.config, environment: { X: '1' } } };
      const t = target(app(1, [changed]));
      const { rounds, final } = converge(converged(target(app(1, [s]))), t);
      assert.deepEqual(rounds.map(actions), [['create'], ['kill'], ['remove']]);
      assertMatches(final, t);
    });
  });

  describe('up-to-date containers', () => {
    for (const st of ['created', 'exited'] as const) {
      it(`${st} up-to-date container with running:true → start`, () => {
        const t = target(app(1, [svc('web')]));
        const cur = converged(t);
        cur.containers[0]!.state = st;
        assert.deepEqual(plan(cur, t), [{ action: 'start', container: cur.containers[0] }]);
      });
    }

    it('duplicates: the running one is kept, the others go', () => {
      const s = svc('web');
      const a = app(1, [s]);
      const images = imagesOf(a);
      const c1 = container(a, s, images, { state: 'exited' });
      const c2 = container(a, s, images);
      const c3 = container(a, s, images);
      const { rounds, final } = converge(state({ images, containers: [c1, c2, c3] }), target(a));
      assert.deepEqual(rounds.map(desc), [['kill 1/web', 'remove 1/web'], ['remove 1/web']]);
      assert.deepEqual(final.containers.map((c) => c.containerId), [c2.containerId]);
    });

    it('duplicates with hand-over are removed too', () => {
      const s = svc('web', { strategy: 'hand-over' });
      const a = app(1, [s]);
      const images = imagesOf(a);
      const cur = state({ images, containers: [container(a, s, images), container(a, s, images)] });
      assertMatches(converge(cur, target(a)).final, target(a));
    });
  });

  describe('update locks', () => {
    const reason = (id: number): Step => ({ action: 'noop', reason: `update lock held by app ${id}` });
    const v1 = app(1, [svc('web')]);
    const v2 = app(1, [{ ...v1.services[0]!, config: { ...v1.services[0]!.config, image: 'web:v2' } }]);

    it('a locked app still downloads, but does not kill', () => {
      // download-then-kill: the kill only comes once the image is there, and then the lock holds it.
      const cur = converged(target(v1), { locked: [1] });
      assert.deepEqual(desc(plan(cur, target(v2))), ['fetch web:v2']);
      cur.images['web:v2'] = engineId('web:v2');
      assert.deepEqual(plan(cur, target(v2)), [reason(1)]);
    });

    it('kill-then-download under a lock waits before anything (the download comes after the kill)', () => {
      const k1 = app(1, [svc('web', { strategy: 'kill-then-download' })]);
      const k2 = app(1, [{ ...k1.services[0]!, config: { ...k1.services[0]!.config, image: 'web:v2' } }]);
      assert.deepEqual(plan(converged(target(k1), { locked: [1] }), target(k2)), [reason(1)]);
    });

    it('force overrides the lock', () => {
      const cur = converged(target(v1), { locked: [1], images: { ...imagesOf(v1), ...imagesOf(v2) } });
      assert.deepEqual(actions(plan(cur, target(v2), { force: true })), ['kill']);
      assertMatches(converge(cur, target(v2), { force: true }).final, target(v2));
    });

    it('a lock only affects its own app', () => {
      const other = app(2, [svc('x')]);
      const otherV2 = app(2, [{ ...other.services[0]!, config: { ...other.services[0]!.config, environment: { N: '2' } } }]);
      const cur = converged(target(v1, other), { locked: [1], images: { ...imagesOf(v1, other), ...imagesOf(v2) } });
      assert.deepEqual(desc(plan(cur, target(v2, otherV2))), ['noop update lock held by app 1', 'kill 2/x']);
    });

    it('a locked removed app is not removed', () => {
      const cur = converged(target(v1), { locked: [1] });
      assert.deepEqual(plan(cur, target()), [reason(1)]);
    });

    it('stopping a locked service is disruptive', () => {
      const cur = converged(target(v1), { locked: [1] });
      assert.deepEqual(plan(cur, target(app(1, [{ ...v1.services[0]!, running: false }]))), [reason(1)]);
    });

    it('non-disruptive steps of a locked app go ahead', () => {
      const cur = converged(target(v1), { locked: [1] });
      cur.containers[0]!.state = 'exited';
      assert.deepEqual(actions(plan(cur, target(v1))), ['start']);
    });

    it('hand-over under a lock creates and starts the new container, then waits', () => {
      const h1 = app(1, [svc('web', { strategy: 'hand-over' })]);
      const h2 = app(1, [{ ...h1.services[0]!, config: { ...h1.services[0]!.config, environment: { V: '2' } } }]);
      let cur = converged(target(h1), { locked: [1] });
      const seen: string[][] = [];
      for (let i = 0; i < 3; i++) {
        const steps = plan(cur, target(h2));
        seen.push(actions(steps));
        cur = applyRound(cur, target(h2), steps, {});
      }
      assert.deepEqual(seen, [['create'], ['start'], ['noop']]);
    });
  });

  describe('order, determinism and purity', () => {
    it('orders by kind, then appId, then serviceId', () => {
      const a1 = app(1, [svc('s1'), svc('s2'), svc('s3')], { volumes: ['v'] });
      const a2 = app(2, [svc('t1'), svc('t2')], { networks: ['n'] });
      const t = target(a2, a1);
      const images = imagesOf(a1, a2);
      delete images['s3:v1'];
      const cur = state({
        images,
        volumes: [{ appId: 9, name: 'old' }],
        containers: [
          container(a2, a2.services[1]!, images, { state: 'exited' }),
          container(a1, a1.services[1]!, images, { configHash: 'x' }),
          container(a2, a2.services[0]!, images, { configHash: 'x', state: 'exited' }),
          container(a1, a1.services[0]!, images, { state: 'created' }),
        ],
      });
      assert.deepEqual(desc(plan(cur, t)), [
        'createVolume 1/v',
        'createNetwork 2/n',
        'removeVolume 9/old',
        'fetch s3:v1',
        'kill 1/s2',
        'remove 2/t1',
      ]);
      // start waits for the app's volumes/networks too: the container may reference them.
      cur.volumes.push({ appId: 1, name: 'v' });
      cur.networks.push({ appId: 2, name: 'n' });
      assert.deepEqual(desc(plan(cur, t)), ['removeVolume 9/old', 'fetch s3:v1', 'kill 1/s2', 'remove 2/t1', 'start 1/s1', 'start 2/t2']);
    });

    it('same input → deep-equal output, whatever the order of current containers', () => {
      const t = target(app(1, [svc('a'), svc('b')]), app(2, [svc('c')]));
      const cur = converged(target(app(1, [svc('a'), svc('z')]), app(3, [svc('q')])), { images: {} });
      const first = plan(cur, t);
      assert.deepEqual(plan(cur, t), first);
      assert.deepEqual(plan({ ...cur, containers: [...cur.containers].reverse() }, t), first);
    });

    it('does not mutate its inputs (deep-frozen)', () => {
      const t = target(app(1, [svc('a', { config: { dependsOn: ['b'] } }), svc('b')], { volumes: ['v'] }), app(2, [svc('c', { strategy: 'hand-over' })]));
      const cur = converged(target(app(1, [svc('a')]), app(3, [svc('q')])), { locked: [3] });
      const copyT = structuredClone(t);
      const copyC = structuredClone(cur);
      deepFreeze(t);
      deepFreeze(cur);
      assert.doesNotThrow(() => plan(cur, t));
      assert.doesNotThrow(() => plan(cur, t, { force: true }));
      assert.deepEqual(t, copyT);
      assert.deepEqual(cur, copyC);
    });
  });

  describe('step kinds', () => {
    // One scenario per kind of the Step union, keyed by the kind: a kind added to the union needs a
    // scenario here (the compiler says so), and a kind no scenario produces fails below, so the
    // union holds exactly what the planner emits.
    const web = svc('web', { config: { image: 'web:1' } });
    const web2 = { ...web, config: { ...web.config, image: 'web:2' } };
    const v1 = app(1, [web], { volumes: ['data'], networks: ['net'] });
    const v2 = app(1, [web2], { volumes: ['data'], networks: ['net'] });
    const stopped = app(1, [{ ...web, running: false }], { volumes: ['data'], networks: ['net'] });
    const installed = converged(target(v1));
    const scenarios = {
      fetch: () => plan(installed, target(v2)),
      createVolume: () => plan(state({ images: imagesOf(v1) }), target(v1)),
      createNetwork: () => plan(state({ images: imagesOf(v1) }), target(v1)),
      removeVolume: () => plan(state({ volumes: [{ appId: 1, name: 'data' }] }), target()),
      removeNetwork: () => plan(state({ networks: [{ appId: 1, name: 'net' }] }), target()),
      stop: () => plan(installed, target(stopped)),
      kill: () => plan({ ...installed, images: { ...installed.images, ...imagesOf(v2) } }, target(v2)),
      remove: () => plan(converged(target(stopped)), target()),
      create: () => plan({ ...installed, containers: [], images: imagesOf(v1) }, target(v1)),
      start: () => plan(converged(target(stopped)), target(v1)),
      noop: () => plan({ ...installed, locked: [1], images: { ...installed.images, ...imagesOf(v2) } }, target(v2)),
    } satisfies { [K in StepAction]: () => Step[] };
    for (const [kind, scenario] of Object.entries(scenarios)) {
      it(`the planner emits '${kind}'`, () => {
        assert.ok(scenario().some((s) => s.action === kind), `no '${kind}' in ${desc(scenario()).join(', ')}`);
      });
    }
  });

  describe('simulated convergence (generated)', () => {
    /** mulberry32: a tiny seeded PRNG, so generated cases are reproducible. */
    function rng(seed: number): () => number {
      let a = seed >>> 0;
      return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let x = a;
        x = Math.imul(x ^ (x >>> 15), x | 1);
        x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
        return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
      };
    }

    function genTarget(r: () => number, release: number): TargetState {
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
      const apps: TargetApp[] = [];
      for (const appId of [1, 2, 3]) {
        if (r() < 0.3) continue;
        const services: TargetService[] = [];
        const n = 1 + Math.floor(r() * 4);
        for (let i = 0; i < n; i++) {
          const running = r() < 0.85;
          // Dependencies only on earlier running services, so the graph is acyclic and satisfiable.
          const dependsOn = services.filter((d) => d.running && r() < 0.4).map((d) => d.serviceName);
          services.push({
            ...svc(`s${i}`, {
              strategy: pick(STRATEGIES),
              running,
              config: {
                image: pick(['base:1', 'base:2', `s${i}:${pick([release, release + 1])}`]),
                environment: { MODE: pick(['a', 'b']) },
                dependsOn,
              },
            }),
            serviceId: appId * 100 + i,
          });
        }
        apps.push(app(appId, services, { volumes: ['data', 'cache'].filter(() => r() < 0.5), networks: ['net'].filter(() => r() < 0.5) }));
      }
      return target(...apps);
    }

    /** Roughens a converged state: some containers stopped, dead or duplicated, some images gone. */
    function disturb(r: () => number, cur: CurrentState): CurrentState {
      const out = structuredClone(cur);
      for (const c of out.containers) {
        const x = r();
        if (x < 0.1) c.state = 'exited';
        else if (x < 0.15) c.state = 'dead';
        else if (x < 0.2) c.state = 'paused';
      }
      for (const c of [...out.containers]) if (r() < 0.1) out.containers.push({ ...c, containerId: `${c.containerId}-dup`, createdAt: `${c.createdAt}-dup` });
      out.images = Object.fromEntries(Object.entries(out.images).filter(() => r() >= 0.2));
      return out;
    }

    for (let seed = 1; seed <= 60; seed++) {
      it(`seed ${seed}: install, then update to another release`, () => {
        const r = rng(seed);
        const t1 = genTarget(r, 1);
        const t2 = genTarget(r, 2);
        const first = converge(state(), t1);
        assertMatches(first.final, t1);
        const locked = seed % 3 === 0 ? [1, 2] : [];
        const start = { ...disturb(r, first.final), locked };
        const second = converge(start, t2, { force: locked.length > 0 });
        // Volumes of apps in both releases are never removed.
        const kept = first.final.volumes.filter((v) => t2.apps.some((a) => a.appId === v.appId));
        assertMatches(second.final, { ...t2, apps: t2.apps }, kept);
      });
    }

    for (let seed = 101; seed <= 115; seed++) {
      it(`seed ${seed}: a locked app never loses a container without force`, () => {
        const r = rng(seed);
        const t1 = genTarget(r, 1);
        const t2 = genTarget(r, 2);
        const first = converge(state(), t1).final;
        const lockedIds = t1.apps.map((a) => a.appId);
        let cur: CurrentState = { ...first, locked: lockedIds };
        const before = new Set(cur.containers.map((c) => c.containerId));
        for (let i = 0; i < 15; i++) {
          const steps = plan(cur, t2);
          for (const s of steps) {
            if (s.action === 'kill' || s.action === 'stop' || s.action === 'remove') assert.ok(!lockedIds.includes(s.container.appId), `disruptive step for locked app ${s.container.appId}`);
          }
          cur = applyRound(cur, t2, steps, {});
        }
        for (const id of before) assert.ok(cur.containers.some((c) => c.containerId === id), `container ${id} kept`);
      });
    }
  });
});
