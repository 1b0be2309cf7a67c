/**
 * Cloud builds (`skiff push <fleet>`, `git push`): the wire shapes shared by the server's build
 * routes and the CLI's (and the git hook's) client. A build is a job on the server: the CLI uploads
 * the project as a tar body, the server queues it (one build at a time per fleet), builds every
 * service for the fleet's architecture, pushes the images to its registry and creates the release.
 * Its output is an ordered event log (`seq` 1, 2, …) kept in the database, so a client that lost its
 * connection re-attaches with `after=<last seq>` and neither repeats nor skips a line.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import type { BuildEvent } from '../builder/release.js';
import type { Release } from './resources.js';

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
const Time = Type.String({ format: 'date-time' });

export const BuildStatus = Type.Union([
  Type.Literal('queued'), Type.Literal('running'), Type.Literal('success'), Type.Literal('failed'), Type.Literal('cancelled'),
]);
/** `queued` → `running` → `success` | `failed` | `cancelled` (a queued build may be cancelled too). */
export type BuildStatus = Static<typeof BuildStatus>;

/** True for the statuses a build never leaves. */
export function isFinished(status: BuildStatus): boolean {
  return status === 'success' || status === 'failed' || status === 'cancelled';
}

/** A build as the API shows it. */
export const Build = Type.Object({
  /** 32 hex digits; a unique prefix of 7+ is enough in paths. */
  id: Type.String(),
  fleet: Type.String(),
  status: BuildStatus,
  /** `push`: uploaded by `skiff push`; `git`: a `git push` to the fleet's repository. */
  source: Type.Union([Type.Literal('push'), Type.Literal('git')]),
  /** The project's git commit (40 hex), when known: the pushed commit, or the working tree's HEAD. */
  gitCommit: Nullable(Type.String()),
  /** The pushed ref for a git build (`refs/heads/main`), null otherwise. */
  gitRef: Nullable(Type.String()),
  /** The working tree had changes not in `gitCommit` (skiff push from a dirty tree). */
  dirty: Type.Boolean(),
  /** Email of the user who started it. */
  createdBy: Type.String(),
  /** Bytes of the uploaded tar. */
  contextBytes: Type.Integer(),
  options: Type.Object({
    draft: Type.Boolean(),
    nocache: Type.Boolean(),
    pull: Type.Boolean(),
    /** Each service's build context uses its own .dockerignore (`-G`). */
    multiDockerignore: Type.Boolean(),
    /** `buildkit` (--buildkit), `classic` (--no-buildkit), or `auto`: BuildKit when the builder engine has it. */
    builder: Type.Union([Type.Literal('auto'), Type.Literal('buildkit'), Type.Literal('classic')]),
    notes: Nullable(Type.String()),
    semver: Nullable(Type.String()),
    tags: Type.Record(Type.String(), Type.String()),
  }),
  /** The release's commit once it exists (it exists only for a successful build). */
  release: Nullable(Type.String()),
  /** One line: why it failed or was cancelled. */
  error: Nullable(Type.String()),
  createdAt: Time,
  startedAt: Nullable(Time),
  finishedAt: Nullable(Time),
});
export type Build = Static<typeof Build>;

/**
 * `POST /fleets/:fleet/builds?…`: the query string carries the options; the body is the project as
 * a tar stream (`content-type: application/x-tar`), as `skiff build` would read it (.dockerignore
 * applied, no `.git`). The build exists only once the whole body arrived: an upload cut half-way
 * creates nothing. Answer: 201 with the queued {@link Build}.
 */
export const CreateBuildQuery = Type.Object({
  draft: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
  nocache: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
  pull: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
  /** No NUL byte (nor in tag or gitRef): PostgreSQL's text refuses it, so the build ran and then failed storing its release. */
  notes: Type.Optional(Type.String({ maxLength: 10_000, pattern: '^[^\\u0000]*$' })),
  semver: Type.Optional(Type.String({ pattern: '^\\d+\\.\\d+\\.\\d+([-+][0-9A-Za-z.-]+)*$' })),
  /** `key=value`, repeatable (release tags). */
  tag: Type.Optional(Type.Union([Type.String({ pattern: '^[^=\\u0000]{1,100}=[^\\u0000]*$' }), Type.Array(Type.String({ pattern: '^[^=\\u0000]{1,100}=[^\\u0000]*$' }), { maxItems: 100 })])),
  gitCommit: Type.Optional(Type.String({ pattern: '^[0-9a-f]{40}$' })),
  gitRef: Type.Optional(Type.String({ maxLength: 255, pattern: '^[^\\u0000]*$' })),
  dirty: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
  /** `git` only from the server's own pre-receive hook. */
  source: Type.Optional(Type.Union([Type.Literal('push'), Type.Literal('git')])),
  /** Each service uses the .dockerignore of its own build context (balena's -G), as the CLI filtered the tar. */
  multiDockerignore: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
  /** Which builder the server's build uses; absent: `auto`. */
  builder: Type.Optional(Type.Union([Type.Literal('auto'), Type.Literal('buildkit'), Type.Literal('classic')])),
}, { additionalProperties: false });
export type CreateBuildQuery = Static<typeof CreateBuildQuery>;

/** `GET /builds/:id/events?after=N&follow=true`: server-sent events, `id:` = seq, `data:` = JSON of this. */
export const BuildEventsQuery = Type.Object({
  /** Only events with a larger seq (what a re-attaching client has seen); default 0. */
  after: Type.Optional(Type.String({ pattern: '^[0-9]{1,10}$' })),
  /** Keep the stream open until the build finishes (the last event is `done`). */
  follow: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
}, { additionalProperties: false });
export type BuildEventsQuery = Static<typeof BuildEventsQuery>;

/**
 * One event of a build's log: the local build's own events (`BuildEvent` of src/lib/builder, so the
 * CLI renders a cloud build exactly as `skiff build`), the push of each image, and the job's own.
 */
export type RemoteBuildEvent =
  | BuildEvent
  /** Waiting behind `position` builds of the same fleet (the first of which is `behind`). */
  | { kind: 'queued'; position: number; behind: string | null }
  | { kind: 'started'; engine: string }
  | { kind: 'push-start'; service: string; image: string }
  | { kind: 'push-progress'; service: string; bytes: number; total: number }
  | { kind: 'push-done'; service: string; digest: string }
  | { kind: 'release'; release: Release }
  /** The last event of every build. */
  | { kind: 'done'; status: 'success' | 'failed' | 'cancelled'; release: string | null; error: string | null };

/** What `GET /builds/:id/events` sends per event (SSE `id:` is `seq` too). */
export interface BuildEventEnvelope {
  /** 1, 2, …: dense per build. */
  seq: number;
  time: string;
  event: RemoteBuildEvent;
}
