import assert from 'node:assert/strict';
import { planQueue, type QueueEntry } from '../../src/lib/server/builds/queue.js';
import { buildOptions } from '../../src/lib/server/builds/upload.js';

const entry = (id: number, fleetId: number, status: QueueEntry['status'] = 'queued', replica = 'me'): QueueEntry => ({ id, uuid: `u${id}`, fleetId, status, replica });

describe('the build queue (which builds a replica starts, and positions)', () => {
  const CASES: Array<[string, QueueEntry[], number, number[], Array<[number, number, string | null]>]> = [
    ['nothing to do', [], 2, [], []],
    ['one queued build starts', [entry(1, 10)], 2, [1], []],
    ['a fleet runs one build at a time, oldest first', [entry(2, 10), entry(1, 10)], 2, [1], [[2, 1, 'u1']]],
    ['the third of a fleet is behind two, the first of them named', [entry(1, 10), entry(2, 10), entry(3, 10)], 2, [1], [[2, 1, 'u1'], [3, 2, 'u1']]],
    ['a running build holds its fleet', [entry(1, 10, 'running'), entry(2, 10)], 2, [], [[2, 1, 'u1']]],
    ['two fleets build side by side', [entry(1, 10), entry(2, 20)], 2, [1, 2], []],
    ['concurrency caps the replica', [entry(1, 10), entry(2, 20), entry(3, 30)], 2, [1, 2], [[3, 0, null]]],
    ['running builds of this replica take slots', [entry(1, 10, 'running'), entry(2, 20), entry(3, 30)], 2, [2], [[3, 0, null]]],
    ["another replica's running builds take none of ours", [entry(1, 10, 'running', 'other'), entry(2, 20), entry(3, 30)], 2, [2, 3], []],
    ["another replica's upload is not ours to run", [entry(1, 10, 'queued', 'other')], 2, [], []],
    ["a fleet waits behind another replica's older build", [entry(1, 10, 'queued', 'other'), entry(2, 10)], 2, [], [[2, 1, 'u1']]],
    ['no free slot at all', [entry(1, 10)], 0, [], [[1, 0, null]]],
  ];
  for (const [name, entries, concurrency, start, waiting] of CASES) {
    it(name, () => {
      const plan = planQueue(entries, 'me', concurrency);
      assert.deepEqual(plan.start, start);
      assert.deepEqual([...plan.waiting].map(([id, p]) => [id, p.position, p.behind]), waiting);
    });
  }

  it('simulated: over seeded random runs, a fleet never has two builds running and each fleet runs in creation order', () => {
    let seed = 42;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let run = 0; run < 200; run++) {
      const replicas = ['me', 'other'];
      let next = 1;
      const live: QueueEntry[] = [];
      const started = new Map<number, number[]>();
      for (let step = 0; step < 60; step++) {
        const action = random(3);
        if (action === 0) live.push(entry(next++, random(3), 'queued', replicas[random(2)]));
        else if (action === 1 && live.some((e) => e.status === 'running')) {
          const running = live.filter((e) => e.status === 'running');
          const done = running[random(running.length)];
          live.splice(live.indexOf(done!), 1);
        } else {
          const replica = replicas[random(2)]!;
          const plan = planQueue(live, replica, 1 + random(3));
          for (const id of plan.start) {
            const e = live.find((x) => x.id === id)!;
            assert.equal(e.replica, replica);
            e.status = 'running';
            started.set(e.fleetId, [...(started.get(e.fleetId) ?? []), e.id]);
          }
        }
        for (const fleetId of new Set(live.map((e) => e.fleetId))) {
          assert.ok(live.filter((e) => e.fleetId === fleetId && e.status === 'running').length <= 1, `run ${run} step ${step}: fleet ${fleetId} runs two builds`);
        }
      }
      for (const ids of started.values()) assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
    }
  });
});

describe('a build\'s options from the upload query', () => {
  it('defaults, booleans and repeated tags', () => {
    assert.deepEqual(buildOptions({}), { draft: false, nocache: false, pull: false, multiDockerignore: false, builder: 'auto', notes: null, semver: null, tags: {} });
    assert.deepEqual(buildOptions({ draft: 'true', nocache: 'false', pull: 'true', multiDockerignore: 'true', builder: 'classic', notes: 'n', semver: '1.0.0', tag: ['a=1', 'b=', 'c=x=y'] }),
      { draft: true, nocache: false, pull: true, multiDockerignore: true, builder: 'classic', notes: 'n', semver: '1.0.0', tags: { a: '1', b: '', c: 'x=y' } });
    assert.deepEqual(buildOptions({ tag: 'k=v' }).tags, { k: 'v' });
  });
  it('refuses a tag key with spaces, or a value over 1000 characters, naming the field', () => {
    for (const tag of [' a=1', 'a b=1', `a=${'x'.repeat(1001)}`]) {
      assert.throws(() => buildOptions({ tag }), (err: Error & { where?: string }) => err.where === 'tag');
    }
  });
});
