/**
 * The build jobs of one replica. Builds are rows (builds table), not promises: the runner claims the
 * queued builds whose upload this replica holds, at most `concurrency` at once and one per fleet at
 * a time (queue.ts), runs them (run-build.ts), and records how each ended. A server killed
 * mid-build finds its running builds at the next start and runs them again (the upload is still
 * there) or fails them cleanly. It wakes on the bus's `build` topic (a new upload, a cancel) and on
 * a timer (events from another replica are hints; the table is the truth).
 */
import { setMaxListeners } from 'node:events';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { RemoteBuildEvent } from '../../api/builds.js';
import { SkiffError } from '../../errors/errors.js';
import type { BuildRow } from '../db/schema.js';
import { isoNow, type ServiceContext } from '../services/context.js';
import { BuildEventLog } from './event-log.js';
import { planQueue, type QueuePosition } from './queue.js';
import { buildDir, contextTar, runBuild } from './run-build.js';
import { appendEvents } from './store.js';

export interface RunnerOptions {
  /** Builds this replica runs at once (default 2). */
  concurrency?: number;
  /** How often the table is read without a wake-up, ms (default 2000). */
  pollMs?: number;
}

/**
 * This replica's identity for builds: kept in its data folder, since the uploads are kept there
 * too (a restarted server is the same replica to the builds it left; ctx.options.replicaId is new
 * at every start).
 */
export function buildReplicaId(ctx: ServiceContext): string {
  const dir = path.join(ctx.options.dataDir, 'builds');
  const file = path.join(dir, 'replica-id');
  if (existsSync(file)) {
    const id = readFileSync(file, 'utf8').trim();
    if (/^[0-9a-f]{16}$/.test(id)) return id;
  }
  mkdirSync(dir, { recursive: true });
  const id = randomBytes(8).toString('hex');
  writeFileSync(file, `${id}\n`);
  return id;
}

interface Running {
  controller: AbortController;
  /** Why it was aborted: a user's cancel, or this server stopping (the build then runs again at the next start). */
  reason?: 'cancel' | 'stop';
  done: Promise<void>;
}

export class BuildRunner {
  readonly replica: string;
  private readonly concurrency: number;
  private readonly pollMs: number;
  private readonly running = new Map<number, Running>();
  private readonly positions = new Map<number, string>();
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private ticking: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  /** When this process made the runner: a git push queued after it belongs to a live hook. */
  private readonly bornAt: string;

  constructor(private readonly ctx: ServiceContext, options: RunnerOptions = {}) {
    this.bornAt = isoNow(ctx);
    this.replica = buildReplicaId(ctx);
    this.concurrency = Math.max(1, options.concurrency ?? 2);
    this.pollMs = options.pollMs ?? 2000;
  }

  /** Recovers what a previous run of this replica left, then starts claiming builds. */
  async start(): Promise<void> {
    await this.recover();
    this.unsubscribe = this.ctx.events.subscribe('build', (event) => {
      const job = this.running.get(event.buildId);
      if (event.cancel && job) {
        job.reason ??= 'cancel';
        job.controller.abort();
      }
      // A new seq is the runner's own output: nothing to plan.
      if (event.seq === undefined) this.kick();
    });
    this.timer = setInterval(() => this.kick(), this.pollMs);
    this.timer.unref();
    this.kick();
  }

  /** Stops claiming; running builds are aborted and queued again, to run at the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.unsubscribe?.();
    for (const job of this.running.values()) {
      job.reason ??= 'stop';
      job.controller.abort();
    }
    await this.ticking;
    await Promise.all([...this.running.values()].map((j) => j.done));
  }

  /** Plans again soon (coalesced: one tick at a time, one more if asked meanwhile). */
  kick(): void {
    if (this.stopped) return;
    if (this.ticking) {
      this.again = true;
      return;
    }
    this.ticking = this.tick().catch((err: unknown) => this.ctx.log(`builds: ${(err as Error).message}`)).finally(() => {
      this.ticking = undefined;
      if (this.again) {
        this.again = false;
        this.kick();
      }
    });
  }

  private async tick(): Promise<void> {
    const unfinished = await this.ctx.db.selectFrom('builds').select(['id', 'uuid', 'fleet_id', 'status', 'replica', 'cancel_requested'])
      .where('status', 'in', ['queued', 'running']).orderBy('id').execute();
    // A cancel whose bus event went to another replica (or was lost) is seen here.
    for (const b of unfinished) {
      const job = this.running.get(b.id);
      if (job && b.cancel_requested === 1 && !job.controller.signal.aborted) {
        job.reason ??= 'cancel';
        job.controller.abort();
      }
    }
    const plan = planQueue(unfinished.map((b) => ({ id: b.id, uuid: b.uuid, fleetId: b.fleet_id, status: b.status as 'queued' | 'running', replica: b.replica })), this.replica, this.concurrency - this.claimedNotYetInTable(unfinished));
    for (const [id, position] of plan.waiting) await this.announcePosition(id, position);
    for (const id of plan.start) {
      if (this.stopped) return;
      const claimed = await this.claim(id);
      if (claimed) this.launch(claimed);
    }
  }

  /** Jobs this process runs that the table read does not show as running (claimed after it): they hold slots too. */
  private claimedNotYetInTable(rows: ReadonlyArray<{ id: number; status: string }>): number {
    let n = 0;
    for (const id of this.running.keys()) if (!rows.some((r) => r.id === id && r.status === 'running')) n++;
    return n;
  }

  private async announcePosition(id: number, position: QueuePosition): Promise<void> {
    const key = `${position.position}/${position.behind ?? ''}`;
    if (!this.positions.has(id)) {
      // The upload's own `queued` event (or this replica's before a restart) may say it already.
      const last = await this.ctx.db.selectFrom('build_events').select('event').where('build_id', '=', id).orderBy('seq', 'desc').limit(1).executeTakeFirst();
      const said = last ? JSON.parse(last.event) as RemoteBuildEvent : undefined;
      if (said?.kind === 'queued') this.positions.set(id, `${said.position}/${said.behind ?? ''}`);
    }
    if (this.positions.get(id) === key) return;
    this.positions.set(id, key);
    const seq = await appendEvents(this.ctx, id, [{ kind: 'queued', position: position.position, behind: position.behind }], ['queued']);
    if (seq !== undefined) await this.ctx.events.publish({ topic: 'build', buildId: id, seq });
  }

  /** queued → running, only while it is still the oldest unfinished build of its fleet (so two replicas never run one fleet's builds at once). */
  private async claim(id: number): Promise<BuildRow | undefined> {
    const row = await this.ctx.db.selectFrom('builds').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row || row.status !== 'queued') return undefined;
    const result = await this.ctx.db.updateTable('builds').set({ status: 'running', started_at: isoNow(this.ctx) })
      .where('id', '=', id).where('status', '=', 'queued').where('replica', '=', this.replica).where('cancel_requested', '=', 0)
      .where(({ not, exists, selectFrom }) => not(exists(selectFrom('builds as earlier').select('earlier.id')
        .where('earlier.fleet_id', '=', row.fleet_id).where('earlier.id', '<', id).where('earlier.status', 'in', ['queued', 'running']))))
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) === 0) return undefined;
    this.positions.delete(id);
    return { ...row, status: 'running', started_at: isoNow(this.ctx) };
  }

  private launch(row: BuildRow): void {
    const controller = new AbortController();
    // One signal watched by every step, service and push of the build: more than Node's default 10 listeners is expected.
    setMaxListeners(100, controller.signal);
    const job: Running = { controller, done: Promise.resolve() };
    this.running.set(row.id, job);
    job.done = this.execute(row, job).catch((err: unknown) => this.ctx.log(`build ${row.uuid}: ${(err as Error).stack ?? String(err)}`)).finally(() => {
      this.running.delete(row.id);
      this.kick();
    });
  }

  private async execute(row: BuildRow, job: Running): Promise<void> {
    const { ctx } = this;
    const log = new BuildEventLog(ctx, row.id);
    const cancelRequested = async (): Promise<boolean> => {
      const r = await ctx.db.selectFrom('builds').select('cancel_requested').where('id', '=', row.id).executeTakeFirst();
      if (r?.cancel_requested === 1) job.reason ??= 'cancel';
      return r?.cancel_requested === 1;
    };
    let outcome: { status: 'success'; releaseId: number; commit: string; release: RemoteBuildEvent & { kind: 'release' } } | { status: 'failed' | 'cancelled'; error: string } | { status: 'queued' };
    try {
      // Gone (the fleet or user was removed meanwhile): the build fails, it never stays running.
      const fleet = await ctx.db.selectFrom('fleets').selectAll().where('id', '=', row.fleet_id).executeTakeFirstOrThrow(() => new SkiffError('notFound', 'the fleet was removed'));
      const user = await ctx.db.selectFrom('users').select(['id', 'email', 'is_admin']).where('id', '=', row.user_id).executeTakeFirstOrThrow(() => new SkiffError('notFound', 'the user was removed'));
      const done = await runBuild(ctx, {
        row, fleet, user: { kind: 'user', userId: user.id, email: user.email, isAdmin: user.is_admin === 1 },
        signal: job.controller.signal, log, cancelRequested,
      });
      outcome = { status: 'success', releaseId: done.releaseId, commit: done.release.commit, release: { kind: 'release', release: done.release } };
    } catch (err) {
      if (job.reason === 'stop') outcome = { status: 'queued' };
      else if (job.reason === 'cancel' || (err instanceof SkiffError && err.code === 'interrupted' && await cancelRequested())) outcome = { status: 'cancelled', error: 'cancelled by request; no release was made' };
      else outcome = { status: 'failed', error: failureLine(err) };
    }
    if (outcome.status === 'queued') {
      log.push({ kind: 'info', message: 'the server is stopping: this build runs again when it starts' });
      await log.flush();
      await ctx.db.updateTable('builds').set({ status: 'queued', started_at: null }).where('id', '=', row.id).execute();
      return;
    }
    if (outcome.status === 'success') log.push(outcome.release);
    await log.flush();
    // The upload goes before the build ends: a client that saw `done` finds nothing of it left.
    await rm(buildDir(ctx, row.uuid), { recursive: true, force: true });
    const error = outcome.status === 'success' ? null : outcome.error;
    // The `done` event and the final status in one transaction: a follower never sees one without the other.
    const seq = await appendEvents(ctx, row.id, [{ kind: 'done', status: outcome.status, release: outcome.status === 'success' ? outcome.commit : null, error }], undefined, async (tx) => {
      await tx.updateTable('builds').set({
        status: outcome.status, finished_at: isoNow(ctx), error,
        release_id: outcome.status === 'success' ? outcome.releaseId : null,
      }).where('id', '=', row.id).execute();
    });
    await ctx.events.publish({ topic: 'build', buildId: row.id, ...(seq !== undefined ? { seq } : {}) });
    // Devices hear of the new release at once (the event channel), not at their next poll.
    if (outcome.status === 'success') await ctx.events.publish({ topic: 'target', fleetId: row.fleet_id });
  }

  /** Upload folders of builds that ended (or never got a row: an upload cut by a kill). */
  private async removeLeftovers(): Promise<void> {
    const root = path.join(this.ctx.options.dataDir, 'builds');
    const names = (await readdir(root, { withFileTypes: true })).filter((d) => d.isDirectory() && /^[0-9a-f]{32}$/.test(d.name)).map((d) => d.name);
    for (let i = 0; i < names.length; i += 500) {
      const chunk = names.slice(i, i + 500);
      const live = new Set((await this.ctx.db.selectFrom('builds').select('uuid').where('uuid', 'in', chunk).where('status', 'in', ['queued', 'running']).execute()).map((r) => r.uuid));
      for (const name of chunk) if (!live.has(name)) await rm(path.join(root, name), { recursive: true, force: true });
    }
  }

  /**
   * Builds this replica left running when it was killed: run again when the upload is still there
   * (a release the first run created is marked failed; one that succeeded ends the build as success).
   * A git push's build is not run again: its push ended with the server (the pushing git was cut
   * off, and the pre-receive hook that moves the branch died with a whole-service kill), so a
   * rebuilt release would have deployed a commit the branch never reached. It fails instead, queued
   * or running, and the developer pushes again.
   */
  private async recover(): Promise<void> {
    const { ctx } = this;
    await this.removeLeftovers();
    const orphanedPushes = await ctx.db.selectFrom('builds').selectAll().where('replica', '=', this.replica).where('status', '=', 'queued').where('source', '=', 'git')
      .where('created_at', '<', this.bornAt).execute();
    const left = await ctx.db.selectFrom('builds').selectAll().where('replica', '=', this.replica).where('status', '=', 'running').execute();
    for (const row of [...orphanedPushes, ...left]) {
      const releases = await ctx.db.selectFrom('releases').select(['id', 'commit', 'status']).where('build_uuid', '=', row.uuid).execute();
      const made = releases.find((r) => r.status === 'success');
      if (made) {
        await appendEvents(ctx, row.id, [
          { kind: 'info', message: `the server restarted after release ${made.commit} was made` },
          { kind: 'done', status: 'success', release: made.commit, error: null },
        ]);
        await ctx.db.updateTable('builds').set({ status: 'success', release_id: made.id, finished_at: isoNow(ctx), error: null }).where('id', '=', row.id).execute();
        continue;
      }
      await ctx.db.updateTable('releases').set({ status: 'failed' }).where('build_uuid', '=', row.uuid).where('status', '=', 'running').execute();
      if (row.source === 'git') {
        const error = 'the server restarted during this git push: no release was made and the branch did not move; push again';
        await appendEvents(ctx, row.id, [{ kind: 'done', status: 'failed', release: null, error }]);
        await ctx.db.updateTable('builds').set({ status: 'failed', finished_at: isoNow(ctx), error }).where('id', '=', row.id).execute();
        await rm(buildDir(ctx, row.uuid), { recursive: true, force: true });
      } else if (existsSync(contextTar(ctx, row.uuid)) && row.cancel_requested === 0) {
        await appendEvents(ctx, row.id, [{ kind: 'info', message: 'the server restarted during this build: building again' }]);
        await ctx.db.updateTable('builds').set({ status: 'queued', started_at: null }).where('id', '=', row.id).execute();
      } else {
        const cancelled = row.cancel_requested === 1;
        const error = cancelled ? 'cancelled by request; no release was made' : 'the server stopped during this build and its upload is gone; push again';
        await appendEvents(ctx, row.id, [{ kind: 'done', status: cancelled ? 'cancelled' : 'failed', release: null, error }]);
        await ctx.db.updateTable('builds').set({ status: cancelled ? 'cancelled' : 'failed', finished_at: isoNow(ctx), error }).where('id', '=', row.id).execute();
        await rm(buildDir(ctx, row.uuid), { recursive: true, force: true });
      }
    }
  }
}

/** One line for builds.error: what failed and where. */
export function failureLine(err: unknown): string {
  if (err instanceof SkiffError) {
    const where = err.where ? `${err.where}: ` : '';
    return err.hint ? `${where}${err.message} (${err.hint})` : `${where}${err.message}`;
  }
  return (err as Error).message ?? String(err);
}

/** Cancels a queued build at once (any replica may): answers true when it was queued. */
export async function cancelQueued(ctx: ServiceContext, buildId: number): Promise<boolean> {
  const error = 'cancelled by request before it started';
  // Only while still queued, and atomically with its `done` event: a runner claiming it meanwhile wins or loses whole.
  const seq = await appendEvents(ctx, buildId, [{ kind: 'done', status: 'cancelled', release: null, error }], ['queued'], async (tx) => {
    await tx.updateTable('builds').set({ status: 'cancelled', cancel_requested: 1, finished_at: isoNow(ctx), error }).where('id', '=', buildId).execute();
  });
  if (seq === undefined) return false;
  await ctx.events.publish({ topic: 'build', buildId, seq });
  const row = await ctx.db.selectFrom('builds').select(['uuid', 'replica']).where('id', '=', buildId).executeTakeFirst();
  // The upload is on its replica's disk: removed here when that is this one, else at that replica's next start.
  if (row && row.replica === buildReplicaId(ctx)) await rm(buildDir(ctx, row.uuid), { recursive: true, force: true });
  return true;
}
