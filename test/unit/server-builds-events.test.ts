/**
 * A build's event log on a real SQLite database (a file in a scratch folder; offline): output is
 * written in batches, not a transaction per line, and seqs stay dense under concurrent writers.
 */
import assert from 'node:assert/strict';
import type { RemoteBuildEvent } from '../../src/lib/api/builds.js';
import { BuildEventLog } from '../../src/lib/server/builds/event-log.js';
import { appendEvents, eventsAfter } from '../../src/lib/server/builds/store.js';
import { openDatabase, type OpenedDatabase } from '../../src/lib/server/db/database.js';
import { LocalEventBus } from '../../src/lib/server/events/bus.js';
import { LastSeenBatcher } from '../../src/lib/server/services/last-seen.js';
import type { ServiceContext } from '../../src/lib/server/services/context.js';
import { scratchDir } from '../support/tmp.js';

describe('a build\'s event log (SQLite)', () => {
  let opened: OpenedDatabase;
  let ctx: ServiceContext;
  let buildId = 0;

  before(async () => {
    const dataDir = scratchDir('skiff-build-events-');
    opened = await openDatabase({ dataDir, log: () => {} });
    ctx = {
      db: opened.db, dialect: opened.dialect, hot: opened.hot, clock: () => new Date(), registry: undefined,
      lastSeen: new LastSeenBatcher(opened.hot.deviceWrites, () => new Date(), () => {}), events: new LocalEventBus(),
      options: { dataDir, replicaId: 'r', publicUrl: 'http://127.0.0.1:1', registryHost: '127.0.0.1:1', builderEngines: {}, buildContextLimit: 1024, logRetention: { lines: 10, bytes: 10 } },
      log: () => {},
    };
    const now = new Date().toISOString();
    const user = await opened.db.insertInto('users').values({ email: 'a@b', password_hash: 'x', is_admin: 0, created_at: now }).returning('id').executeTakeFirstOrThrow();
    const fleet = await opened.db.insertInto('fleets').values({ uuid: 'f'.repeat(32), owner_id: user.id, name: 'f', device_type: 'intel-nuc', pinned_release_id: null, state_version: 1, created_at: now }).returning('id').executeTakeFirstOrThrow();
    const build = await opened.db.insertInto('builds').values({
      uuid: 'b'.repeat(32), fleet_id: fleet.id, user_id: user.id, status: 'running', source: 'push', git_commit: null, git_ref: null, dirty: 0,
      options: '{}', context_bytes: 1, replica: 'r', cancel_requested: 0, release_id: null, error: null, created_at: now, started_at: now, finished_at: null,
    }).returning('id').executeTakeFirstOrThrow();
    buildId = build.id;
  });

  after(async () => {
    await ctx.events.close();
    await opened.close();
  });

  it('writes a chatty build\'s 5,000 lines in a few batches, in order, announcing each batch once', async () => {
    const announced: number[] = [];
    const unsubscribe = ctx.events.subscribe('build', (e) => {
      if (e.seq !== undefined) announced.push(e.seq);
    });
    const log = new BuildEventLog(ctx, buildId, 50);
    // 1,000 lines every 200 ms: faster than any build prints.
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 1000; i++) log.push({ kind: 'log', service: 'main', line: `line ${round * 1000 + i}` });
      await new Promise((r) => setTimeout(r, 200));
    }
    await log.flush();
    await new Promise((r) => setImmediate(r));
    unsubscribe();
    const stored = await eventsAfter(ctx, buildId, 0, 10_000);
    assert.deepEqual(stored.map((e) => e.seq), Array.from({ length: 5000 }, (_, i) => i + 1));
    assert.deepEqual(stored.map((e) => (e.event as Extract<RemoteBuildEvent, { kind: 'log' }>).line), Array.from({ length: 5000 }, (_, i) => `line ${i}`));
    assert.ok(announced.length <= 10, `${announced.length} batches for 5,000 lines`);
    assert.equal(announced[announced.length - 1], 5000);
  });

  it('keeps at most maxLines output lines of a build, saying once that the rest is dropped; other events still go through', async () => {
    const before = (await eventsAfter(ctx, buildId, 0, 100_000)).length;
    const log = new BuildEventLog(ctx, buildId, 10, 3);
    for (let i = 0; i < 10; i++) log.push({ kind: 'log', service: 'main', line: `l${i}` });
    log.push({ kind: 'info', message: 'after the flood' });
    await log.flush();
    const kept = (await eventsAfter(ctx, buildId, before, 100)).map((e) => e.event);
    assert.deepEqual(kept.map((e) => e.kind), ['log', 'log', 'log', 'warning', 'info']);
    assert.match((kept[3] as { message: string }).message, /more than 3 lines: the rest of its output is not kept/);
  });

  it('keeps seqs dense when two writers append to one build at once, and honours onlyWhile', async () => {
    const before = (await eventsAfter(ctx, buildId, 0, 100_000)).length;
    await Promise.all(Array.from({ length: 20 }, (_, i) => appendEvents(ctx, buildId, [{ kind: 'info', message: `w${i}a` }, { kind: 'info', message: `w${i}b` }])));
    const all = await eventsAfter(ctx, buildId, 0, 100_000);
    assert.deepEqual(all.map((e) => e.seq), Array.from({ length: before + 40 }, (_, i) => i + 1));
    // A writer's events stay together (one transaction each).
    const infos = all.slice(before).map((e) => (e.event as { message: string }).message);
    for (let i = 0; i < infos.length; i += 2) assert.equal(infos[i]?.replace(/a$/, 'b'), infos[i + 1]);
    assert.equal(await appendEvents(ctx, buildId, [{ kind: 'info', message: 'no' }], ['queued']), undefined, 'not written: the build is running');
    assert.deepEqual(await eventsAfter(ctx, buildId, before + 40), []);
    assert.deepEqual((await eventsAfter(ctx, buildId, 5, 3)).map((e) => e.seq), [6, 7, 8]);
  });
});
