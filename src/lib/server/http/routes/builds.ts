/**
 * Routes of cloud builds: upload (the body streams to a file, the build exists once all of it
 * arrived), list and show, the event stream (server-sent events, resumable by seq), cancel. The
 * jobs themselves run in this replica's BuildRunner, started and stopped with the app.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { Build, BuildEventsQuery, CreateBuildQuery, isFinished, type BuildEventEnvelope } from '../../../api/builds.js';
import { ENDPOINTS } from '../../../api/endpoints.js';
import * as R from '../../../api/resources.js';
import { badInput, conflict, notFound, type ServiceContext } from '../../services/context.js';
import type { RouteKit, SkiffApp } from '../app.js';

const FleetParams = Type.Object({ fleet: R.FleetName });
const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });

/** How long `DELETE /builds/:id` waits for a running build to stop before answering with it as it is (still running, cancel requested). */
const CANCEL_WAIT_MS = 20_000; // under the CLI's 30 s answer timeout

/**
 * Registers the build routes (createBuild, builds, build, buildEvents, cancelBuild) and starts this
 * replica's {@link import('../../builds/runner.js').BuildRunner} once the server listens; it stops when the app closes.
 */
export async function registerBuildRoutes(app: SkiffApp, ctx: ServiceContext, kit: RouteKit): Promise<void> {
  const [store, { BuildRunner, cancelQueued }, { receiveUpload, createBuild, checkGitHook }, { openEventStream }] = await Promise.all([
    import('../../builds/store.js'), import('../../builds/runner.js'), import('../../builds/upload.js'), import('../sse.js'),
  ]);
  const runner = new BuildRunner(ctx);
  // Jobs start once the server listens: a build's push goes through the server's own port and
  // registry, which are not up while the app is built.
  app.addHook('onListen', async () => {
    await runner.start().catch((err: unknown) => ctx.log(`builds: the job runner did not start: ${(err as Error).message}`));
  });
  // Before the server stops listening: followers end (an open event stream would hold the close),
  // and jobs stop while the port and registry they push through are still up (a build cut by the
  // close itself would fail instead of running again at the next start).
  const followers = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const end of followers) end();
    await runner.stop();
  });

  // The upload's own scope: its body is a tar stream handed to the route as it is, never buffered.
  await app.register(async (untyped) => {
    const scope = untyped.withTypeProvider<TypeBoxTypeProvider>();
    // Only a tar: a JSON body is 415, not a parsed object.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('application/x-tar', (_request, payload, done) => done(null, payload));
    scope.post(ENDPOINTS.createBuild.path, {
      bodyLimit: ctx.options.buildContextLimit,
      schema: kit.schema({ security: kit.auth, params: FleetParams, querystring: CreateBuildQuery, response: { 201: Build } }),
    }, async (req, reply) => {
      const caller = await kit.userOf(req);
      const { fleetOf } = await import('../../services/fleets.js');
      const fleet = await fleetOf(ctx, caller, req.params.fleet, 'write');
      const source = req.query.source ?? 'push';
      if (source === 'git') checkGitHook(ctx, req.headers['x-skiff-git-hook']);
      const body = req.body as NodeJS.ReadableStream | undefined;
      if (!body || typeof (body as { pipe?: unknown }).pipe !== 'function') {
        throw badInput('body', "the body must be the project as a tar stream (content-type: application/x-tar)");
      }
      const upload = await receiveUpload(ctx, req.raw, body, req.headers['content-length']);
      if (upload.kind === 'too-large') {
        // Kept open: the rest of the body is read and dropped (receiveUpload), so a client still
        // sending reads this answer rather than a reset.
        return reply.code(413).send({
          statusCode: 413, error: 'Payload Too Large',
          message: `the project is larger than this server's build context limit of ${formatBytes(ctx.options.buildContextLimit)} (skiff server --build-context-limit)`,
        });
      }
      const build = await createBuild(ctx, caller, fleet, req.query, source, upload);
      return reply.code(201).send(build);
    });
  });

  app.get(ENDPOINTS.builds.path, { schema: kit.schema({ security: kit.auth, params: FleetParams, response: { 200: Type.Array(Build) } }) },
    async (req) => store.listBuilds(ctx, await kit.userOf(req), req.params.fleet));

  app.get(ENDPOINTS.build.path, { schema: kit.schema({ security: kit.auth, params: IdParams, response: { 200: Build } }) },
    async (req) => (await store.buildOf(ctx, await kit.userOf(req), req.params.id)).build);

  app.get(ENDPOINTS.buildEvents.path, {
    schema: kit.schema({ security: kit.auth, params: IdParams, querystring: BuildEventsQuery, response: { 200: Type.String({ description: 'text/event-stream of BuildEventEnvelope' }) } }),
  }, async (req, reply) => {
    const { row } = await store.buildOf(ctx, await kit.userOf(req), req.params.id);
    const after = Math.max(Number(req.query.after ?? 0), lastEventId(req));
    const stream = openEventStream(reply);
    const end = (): void => stream.end();
    followers.add(end);
    try {
      await followEvents(ctx, row.id, after, req.query.follow === 'true', stream, store.eventsAfter);
    } finally {
      followers.delete(end);
    }
  });

  app.delete(ENDPOINTS.cancelBuild.path, { schema: kit.schema({ security: kit.auth, params: IdParams, response: { 200: Build } }) }, async (req, reply: FastifyReply) => {
    const { row, build } = await store.buildOf(ctx, await kit.userOf(req), req.params.id, 'write');
    if (isFinished(build.status)) throw finishedConflict(build);
    const current = async (): Promise<Build> => {
      const found = await store.buildById(ctx, row.id);
      // Removed meanwhile with its fleet.
      if (!found) throw notFound(`build ${req.params.id}`);
      return found.build;
    };
    if (await cancelQueued(ctx, row.id)) return current();
    await ctx.db.updateTable('builds').set({ cancel_requested: 1 }).where('id', '=', row.id).where('status', '=', 'running').execute();
    await ctx.events.publish({ topic: 'build', buildId: row.id, cancel: true });
    // Wait for the runner (here or on another replica) to stop it, so the answer says how it ended.
    const ended = await waitUntilFinished(ctx, row.id, CANCEL_WAIT_MS);
    if (ended && ended.status !== 'cancelled') throw finishedConflict(ended);
    return reply.send(ended ?? await current());
  });
}

function finishedConflict(build: Build): Error {
  return build.status === 'success'
    ? conflict(`build ${build.id} has finished: the release ${build.release ?? ''} exists and stands`)
    : conflict(`build ${build.id} has already ended (${build.status})`);
}

function lastEventId(req: FastifyRequest): number {
  const header = req.headers['last-event-id'];
  const value = Array.isArray(header) ? header[0] : header;
  return value !== undefined && /^[0-9]{1,10}$/.test(value) ? Number(value) : 0;
}

function formatBytes(n: number): string {
  return n >= 1024 ** 3 && n % 1024 ** 3 === 0 ? `${n / 1024 ** 3} GiB` : n >= 1024 ** 2 ? `${Math.round(n / 1024 ** 2)} MiB` : `${n} bytes`;
}

/** Resolves when `wake` is called or `ms` passed or `signal` aborts. */
function sleep(ms: number, signal: AbortSignal, onWake: (wake: () => void) => void): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    const done = (): void => {
      clearTimeout(timer);
      resolve();
    };
    onWake(done);
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Sends a build's events after `after`, then (with `follow`) new ones as they are stored, until
 * the `done` event. Each round re-reads the table by seq, so a missed wake-up costs a poll, never
 * a line, and nothing is sent twice.
 */
async function followEvents(
  ctx: ServiceContext, buildId: number, after: number, follow: boolean,
  stream: import('../sse.js').EventStream,
  eventsAfter: (ctx: ServiceContext, buildId: number, after: number, limit?: number) => Promise<BuildEventEnvelope[]>,
): Promise<void> {
  let last = after;
  let dirty = false;
  let wake: (() => void) | undefined;
  const unsubscribe = ctx.events.subscribe('build', (event) => {
    if (event.buildId !== buildId) return;
    dirty = true;
    wake?.();
  });
  try {
    for (;;) {
      dirty = false;
      const batch = await eventsAfter(ctx, buildId, last, 500);
      for (const envelope of batch) {
        await stream.send(envelope.seq, envelope);
        if (stream.signal.aborted) return;
        last = envelope.seq;
        if (envelope.event.kind === 'done') return;
      }
      if (batch.length === 500) continue;
      if (!follow) return;
      const status = await ctx.db.selectFrom('builds').select('status').where('id', '=', buildId).executeTakeFirst();
      // Ended without a `done` stored after `last` (the build row is gone, or `after` was past it).
      if (!status || (isFinished(status.status) && !dirty && (await eventsAfter(ctx, buildId, last, 1)).length === 0)) return;
      if (!dirty) await sleep(2000, stream.signal, (w) => (wake = w));
      wake = undefined;
      if (stream.signal.aborted) return;
    }
  } finally {
    unsubscribe();
    stream.end();
  }
}

/** The build once it has finished, or undefined after `ms`. */
async function waitUntilFinished(ctx: ServiceContext, buildId: number, ms: number): Promise<Build | undefined> {
  const { buildById } = await import('../../builds/store.js');
  const deadline = Date.now() + ms;
  let wake: (() => void) | undefined;
  const unsubscribe = ctx.events.subscribe('build', (event) => {
    if (event.buildId === buildId) wake?.();
  });
  const never = new AbortController().signal;
  try {
    for (;;) {
      const found = await buildById(ctx, buildId);
      if (!found || isFinished(found.build.status)) return found?.build;
      if (Date.now() >= deadline) return undefined;
      await sleep(Math.min(500, deadline - Date.now()), never, (w) => (wake = w));
    }
  } finally {
    unsubscribe();
  }
}
