/**
 * The upload of a build: the request body (the project as a tar) streams to
 * `<data dir>/builds/<uuid>/context.tar`, counted against the server's limit, and the build's row
 * is inserted only once the whole body is on disk. An upload cut half-way leaves no row and no file.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Build, CreateBuildQuery, RemoteBuildEvent } from '../../api/builds.js';
import type { FleetRow } from '../db/schema.js';
import type { Principal } from '../permissions.js';
import { newHexId } from '../crypto.js';
import { badInput, isoNow, type ServiceContext } from '../services/context.js';
import { discardRest } from '../http/lingering-close.js';
import { buildDir, contextTar } from './run-build.js';
import { buildReplicaId } from './runner.js';
import { buildById, type BuildOptions } from './store.js';

type User = Extract<Principal, { kind: 'user' }>;

export type Upload =
  | { kind: 'stored'; uuid: string; bytes: number }
  | { kind: 'too-large' };

class TooLarge extends Error {}
class BrokenOff extends Error {}

/**
 * Streams `body` to a new build folder. Answers `too-large` (nothing kept) when the declared or the
 * actual size passes `ctx.options.buildContextLimit`; throws (nothing kept) when the upload breaks off.
 * The request itself is never destroyed: after `too-large` its rest is read and dropped (see
 * {@link discardRest}) while the caller answers 413.
 */
export async function receiveUpload(ctx: ServiceContext, raw: IncomingMessage, body: NodeJS.ReadableStream, contentLength: string | undefined): Promise<Upload> {
  const limit = ctx.options.buildContextLimit;
  if (contentLength !== undefined && Number(contentLength) > limit) {
    discardRest(raw, body);
    return { kind: 'too-large' };
  }
  const uuid = newHexId();
  const dir = buildDir(ctx, uuid);
  await mkdir(dir, { recursive: true });
  let bytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length;
      callback(bytes > limit ? new TooLarge() : null, chunk);
    },
  });
  // pipeline destroys its streams on an error, and destroying the request destroys its socket
  // (the 413 would never leave): it gets `source`, the request is only piped into it.
  const source = new PassThrough();
  const brokeOff = (): void => {
    if (!raw.complete) source.destroy(new BrokenOff());
  };
  raw.once('close', brokeOff);
  const failed = (err: Error): void => {
    source.destroy(err);
  };
  body.once('error', failed);
  body.pipe(source);
  try {
    await pipeline(source, counter, createWriteStream(contextTar(ctx, uuid)));
    // A body cut short ends some streams without an error: only a complete message is an upload.
    if (!raw.complete) throw new BrokenOff();
    return { kind: 'stored', uuid, bytes };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    if (err instanceof TooLarge) {
      body.unpipe(source);
      discardRest(raw, body);
      return { kind: 'too-large' };
    }
    // The client went away: a 400 nobody reads, and not a server fault for the log.
    if (err instanceof BrokenOff || !raw.complete) throw badInput('body', 'the upload broke off before the end of the body; nothing was kept');
    throw err;
  } finally {
    raw.off('close', brokeOff);
    body.off('error', failed);
  }
}

/**
 * Inserts the build (queued, with its first event) for an upload on disk, and wakes the runner.
 *
 * @throws SkiffError('usage') for a query value the schema cannot check (a tag's value length)
 */
export async function createBuild(ctx: ServiceContext, caller: User, fleet: FleetRow, query: CreateBuildQuery, source: 'push' | 'git', upload: Extract<Upload, { kind: 'stored' }>): Promise<Build> {
  try {
    const options = buildOptions(query);
    const now = isoNow(ctx);
    // The row and its first event together: a runner never sees the build without where it stands.
    const row = await ctx.db.transaction().execute(async (tx) => {
      const inserted = await tx.insertInto('builds').values({
        uuid: upload.uuid, fleet_id: fleet.id, user_id: caller.userId, status: 'queued', source,
        git_commit: query.gitCommit ?? null, git_ref: query.gitRef ?? null, dirty: query.dirty === 'true' ? 1 : 0,
        options: JSON.stringify(options), context_bytes: upload.bytes, replica: buildReplicaId(ctx),
        cancel_requested: 0, release_id: null, error: null, created_at: now, started_at: null, finished_at: null,
      }).returning('id').executeTakeFirstOrThrow();
      const ahead = await tx.selectFrom('builds').select(['uuid']).where('fleet_id', '=', fleet.id).where('id', '<', inserted.id)
        .where('status', 'in', ['queued', 'running']).orderBy('id').execute();
      const first: RemoteBuildEvent = { kind: 'queued', position: ahead.length, behind: ahead[0]?.uuid ?? null };
      await tx.insertInto('build_events').values({ build_id: inserted.id, seq: 1, event: JSON.stringify(first), created_at: now }).execute();
      return inserted;
    });
    await ctx.events.publish({ topic: 'build', buildId: row.id });
    const made = await buildById(ctx, row.id);
    if (!made) throw new Error('the new build vanished');
    return made.build;
  } catch (err) {
    await rm(buildDir(ctx, upload.uuid), { recursive: true, force: true });
    throw err;
  }
}

/** The query's options as the build keeps them (`tag=key=value` repeated → tags). */
export function buildOptions(query: CreateBuildQuery): BuildOptions {
  const tags: Record<string, string> = {};
  const list = query.tag === undefined ? [] : Array.isArray(query.tag) ? query.tag : [query.tag];
  for (const entry of list) {
    const eq = entry.indexOf('=');
    const key = entry.slice(0, eq);
    const value = entry.slice(eq + 1);
    if (key.trim() === '' || /\s/.test(key)) throw badInput('tag', `release tag key '${key}' must be non-empty and have no spaces`);
    if (value.length > 1000) throw badInput('tag', `release tag '${key}': the value is longer than 1000 characters`);
    tags[key] = value;
  }
  return {
    draft: query.draft === 'true', nocache: query.nocache === 'true', pull: query.pull === 'true',
    multiDockerignore: query.multiDockerignore === 'true',
    builder: query.builder ?? 'auto',
    notes: query.notes ?? null, semver: query.semver ?? null, tags,
  };
}

const hookSecrets = new WeakMap<ServiceContext, string>();

/**
 * The secret this server's own git hook sends as `x-skiff-git-hook` with `source=git`: random per
 * process and never sent to a client, so only a hook the server ran can mark a build as a git push.
 * The git route puts it in the hook's environment.
 */
export function gitHookSecret(ctx: ServiceContext): string {
  let secret = hookSecrets.get(ctx);
  if (!secret) {
    secret = randomBytes(32).toString('hex');
    hookSecrets.set(ctx, secret);
  }
  return secret;
}

/** @throws SkiffError('usage', field `source`) unless `header` is {@link gitHookSecret}. */
export function checkGitHook(ctx: ServiceContext, header: string | string[] | undefined): void {
  const given = Buffer.from(typeof header === 'string' ? header : '');
  const expected = Buffer.from(gitHookSecret(ctx));
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw badInput('source', 'source=git is only for the server\'s own git hook; skiff push uploads with source=push');
  }
}
