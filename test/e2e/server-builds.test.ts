/**
 * Cloud builds on the server, every part real: `skiff server` (SQLite, and PostgreSQL for the
 * happy path and the queue) with its registry, this machine's dockerd as the builder, projects
 * uploaded as tar bodies with fetch, and the build's output read as server-sent events. Each
 * project's images carry the test's label and every image the builder makes carries
 * `io.skiff.fleet=<fleet uuid>`: both are removed by label at the end.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { Build, BuildEventEnvelope, RemoteBuildEvent } from '../../src/lib/api/builds.js';
import type { Fleet, Release } from '../../src/lib/api/resources.js';
import { readServerSentEvents } from '../../src/lib/cloud/sse.js';
import { BASE_AMD64, BASE_ARM64, cleanupImages, docker, ensureBaseImages, makeProject, TEST_LABEL } from '../support/engine.js';
import { api, createUser, dropPostgresDatabase, freshPostgresDatabase, startServer, type StartedServer } from '../support/server.js';
import { waitFor } from '../support/wait.js';

const RUN = randomBytes(3).toString('hex');
const LABEL_VALUE = `server-builds-${RUN}`;
/** MiB: the server's --build-context-limit in these tests. */
const LIMIT_MIB = 2;

type Who = { email: string; token: string };

/** A project folder as a tar (what `skiff push` uploads). */
function tarOf(files: Record<string, string>): Buffer {
  const dir = makeProject(files);
  return execFileSync('tar', ['-C', dir, '-cf', '-', '.'], { maxBuffer: 64 * 1024 * 1024 });
}

/** A two-service compose project; `b` runs `bRun` (a shell command) as its RUN step. */
function twoServices(tag: string, bRun = `echo b-${tag}`): Buffer {
  const dockerfile = (run: string) => `FROM ${BASE_AMD64}\nLABEL ${TEST_LABEL}=${LABEL_VALUE}\nRUN ${run}\n`;
  return tarOf({
    'docker-compose.yml': 'services:\n  a:\n    build: ./a\n  b:\n    build: ./b\n    environment:\n      WHO: b\n',
    'a/Dockerfile': dockerfile(`echo a-${tag} > /a`),
    'b/Dockerfile': dockerfile(bRun),
  });
}

async function upload(base: string, who: Who, fleet: string, body: Buffer, query = ''): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${base}/fleets/${fleet}/builds${query ? `?${query}` : ''}`, {
    method: 'POST', headers: { authorization: `Bearer ${who.token}`, 'content-type': 'application/x-tar' }, body: new Uint8Array(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) as unknown : undefined };
}

async function startBuild(base: string, who: Who, fleet: string, body: Buffer, query = ''): Promise<Build> {
  const res = await upload(base, who, fleet, body, query);
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body as Build;
}

/** Reads `/builds/:id/events` until the stream ends (or `stopWhen` says so: the connection is then cut). */
async function readEvents(base: string, who: Who, id: string, options: { after?: number; follow?: boolean; lastEventId?: number; stopWhen?: (e: BuildEventEnvelope) => boolean } = {}): Promise<BuildEventEnvelope[]> {
  const controller = new AbortController();
  const query = new URLSearchParams();
  if (options.after !== undefined) query.set('after', String(options.after));
  if (options.follow) query.set('follow', 'true');
  const res = await fetch(`${base}/builds/${id}/events?${query}`, {
    headers: { authorization: `Bearer ${who.token}`, ...(options.lastEventId !== undefined ? { 'last-event-id': String(options.lastEventId) } : {}) },
    signal: controller.signal,
  });
  assert.equal(res.status, 200, await (res.status === 200 ? Promise.resolve('') : res.text()));
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const out: BuildEventEnvelope[] = [];
  await readServerSentEvents(res.body as ReadableStream<Uint8Array>, (e) => {
    if (controller.signal.aborted) return;
    const envelope = JSON.parse(e.data) as BuildEventEnvelope;
    assert.equal(e.id, String(envelope.seq));
    out.push(envelope);
    if (options.stopWhen?.(envelope)) controller.abort();
  }).catch((err: unknown) => {
    if (!controller.signal.aborted) throw err;
  });
  return out;
}

const kinds = (events: BuildEventEnvelope[]) => events.map((e) => e.event.kind);
const ofKind = <K extends RemoteBuildEvent['kind']>(events: BuildEventEnvelope[], kind: K) =>
  events.map((e) => e.event).filter((e): e is Extract<RemoteBuildEvent, { kind: K }> => e.kind === kind);

async function getBuild(base: string, who: Who, id: string): Promise<Build> {
  const res = await api(base, 'GET', `/builds/${id}`, { token: who.token });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as Build;
}

async function finished(base: string, who: Who, id: string, timeoutMs = 240_000): Promise<Build> {
  return waitFor(async () => {
    const b = await getBuild(base, who, id);
    return b.status !== 'queued' && b.status !== 'running' ? b : undefined;
  }, `build ${id} to finish`, timeoutMs, 250);
}

/** Whether the server's registry holds `image` (`host/repo@digest`), asked with `who`'s token. */
async function inRegistry(base: string, who: Who, image: string): Promise<boolean> {
  const [name, digest] = image.split('@') as [string, string];
  const repository = name.split('/').slice(1).join('/');
  const tokenRes = await fetch(`${base}/auth/v1/token?service=${encodeURIComponent(new URL(base).host)}&scope=${encodeURIComponent(`repository:${repository}:pull`)}`, {
    headers: { authorization: `Basic ${Buffer.from(`_token:${who.token}`).toString('base64')}` },
  });
  const { token } = await tokenRes.json() as { token: string };
  const res = await fetch(`${base}/v2/${repository}/manifests/${digest}`, {
    method: 'HEAD', headers: { authorization: `Bearer ${token}`, accept: 'application/vnd.docker.distribution.manifest.v2+json' },
  });
  return res.status === 200;
}

/** Containers the builder left that carry the fleet's build label (no device runs here) or ran a command with `marker`. */
async function strayContainers(fleetUuid: string, marker?: string): Promise<string[]> {
  const labelled = await docker.listContainers({ all: true, filters: { label: [`io.skiff.fleet=${fleetUuid}`] } });
  const all = marker ? await docker.listContainers({ all: true }) : [];
  return [...labelled, ...all.filter((c) => c.Command.includes(marker ?? '\u0000'))].map((c) => `${c.Id.slice(0, 12)} ${c.Command}`);
}

/** Upload folders the server keeps (`<data dir>/builds/<uuid>`). */
function uploadFolders(server: StartedServer): string[] {
  const dir = path.join(server.dataDir, 'builds');
  return existsSync(dir) ? readdirSync(dir).filter((n) => /^[0-9a-f]{32}$/.test(n)) : [];
}

for (const dialect of ['sqlite', 'postgres'] as const) describe(`cloud builds on the server (${dialect})`, function () {
  this.timeout(600_000);
  let server: StartedServer;
  let database: string | undefined;
  let alice: Who;
  let bob: Who;
  const fleet = `builds-${RUN}-${dialect}`;
  let fleetUuid = '';
  const base = () => server.url;

  before(async () => {
    await ensureBaseImages();
    database = dialect === 'postgres' ? freshPostgresDatabase() : undefined;
    server = await startServer({ ...(database ? { database } : {}), args: ['--build-context-limit', String(LIMIT_MIB)] });
    alice = await createUser(server.url);
    bob = await createUser(server.url);
    const res = await api(server.url, 'POST', '/fleets', { token: alice.token, body: { name: fleet, deviceType: 'intel-nuc' } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    fleetUuid = (res.body as Fleet).uuid;
  });

  after(async () => {
    await server?.kill('SIGTERM');
    if (database) dropPostgresDatabase(database);
    await cleanupImages({ label: `io.skiff.fleet=${fleetUuid}` });
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  it('builds a two-service upload into a release: both images in the registry, the release stamped with the commit and the build', async () => {
    const gitCommit = randomBytes(20).toString('hex');
    const build = await startBuild(base(), alice, fleet, twoServices(`happy-${RUN}`), `gitCommit=${gitCommit}&tag=team=core&notes=from+a+test`);
    assert.equal(build.status, 'queued');
    assert.equal(build.fleet, fleet);
    assert.equal(build.source, 'push');
    assert.equal(build.gitCommit, gitCommit);
    assert.equal(build.createdBy, alice.email);
    assert.ok(build.contextBytes > 0);
    assert.deepEqual(build.options.tags, { team: 'core' });

    const events = await readEvents(base(), alice, build.id, { follow: true });
    assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1), 'seq 1, 2, … dense');
    const k = kinds(events);
    assert.equal(k[0], 'queued');
    assert.equal(k[k.length - 1], 'done');
    for (const kind of ['started', 'plan', 'service-done', 'push-start', 'push-done', 'release'] as const) assert.ok(k.includes(kind), `a ${kind} event in ${k.join(' ')}`);
    assert.ok(k.indexOf('plan') < k.indexOf('push-start') && k.lastIndexOf('push-done') < k.indexOf('release') && k.indexOf('release') < k.indexOf('done'));
    assert.deepEqual(ofKind(events, 'service-done').map((e) => e.service).sort(), ['a', 'b']);
    const done = ofKind(events, 'done')[0];
    assert.equal(done?.status, 'success', JSON.stringify(done));

    const after = await getBuild(base(), alice, build.id);
    assert.equal(after.status, 'success');
    assert.ok(after.release && after.startedAt && after.finishedAt);
    assert.equal(done?.release, after.release);
    const res = await api(base(), 'GET', `/releases/${after.release}`, { token: alice.token });
    const release = res.body as Release;
    assert.equal(release.status, 'success');
    assert.equal(release.isFinal, true);
    assert.equal(release.gitCommit, gitCommit);
    assert.equal(release.build, build.id);
    assert.equal(release.notes, 'from a test');
    assert.deepEqual(release.tags, { team: 'core' });
    assert.deepEqual(release.services.map((s) => s.name), ['a', 'b']);
    assert.deepEqual((release.composition as { services: { b: { environment?: unknown } } }).services.b.environment, { WHO: 'b' });
    for (const s of release.services) assert.ok(s.image && await inRegistry(base(), alice, s.image), `${s.name}'s image ${s.image} in the registry`);
    const fromEvent = ofKind(events, 'release')[0]?.release;
    assert.equal(fromEvent?.commit, release.commit);

    // Newest first, and the builder's leftovers are gone: no container, no upload, no push tag.
    const list = await api(base(), 'GET', `/fleets/${fleet}/builds`, { token: alice.token });
    assert.equal((list.body as Build[])[0]?.id, build.id);
    assert.deepEqual(await strayContainers(fleetUuid), []);
    assert.deepEqual(uploadFolders(server), []);
    const images = await docker.listImages({ filters: { label: [`io.skiff.fleet=${fleetUuid}`] } });
    assert.ok(images.length >= 2, 'the built images stay on the engine as the next push\'s cache');
    assert.ok(images.every((i) => (i.RepoTags ?? []).every((t) => t.startsWith(`skiff-build-${fleetUuid}_`) || t === '<none>:<none>')), JSON.stringify(images.map((i) => i.RepoTags)));

    // Without follow: the events so far, then the stream ends; after=N gives the rest.
    const all = await readEvents(base(), alice, build.id);
    assert.deepEqual(all, events);
    assert.deepEqual(await readEvents(base(), alice, build.id, { after: 3 }), events.slice(3));
  });

  it('queues a second push to the same fleet behind the first, never interleaved; the second hits the layer cache and keeps every image\'s digest', async () => {
    const tar = twoServices(`queue-${RUN}`, `sleep 2; echo queue-${RUN}`);
    const [first, second] = await Promise.all([startBuild(base(), alice, fleet, tar), (async () => {
      await new Promise((r) => setImmediate(r));
      return startBuild(base(), alice, fleet, tar);
    })()]);
    const [one, two] = [first, second].sort((x, y) => x.createdAt.localeCompare(y.createdAt) || 0);
    assert.ok(one && two);
    const eventsTwo = await readEvents(base(), alice, two.id, { follow: true });
    const a = await finished(base(), alice, one.id);
    const b = await finished(base(), alice, two.id);
    assert.equal(a.status, 'success');
    assert.equal(b.status, 'success');
    // Whichever was made second waited behind the other and started after it ended.
    const [earlier, later] = (a.startedAt ?? '') < (b.startedAt ?? '') ? [a, b] : [b, a];
    assert.ok((later.startedAt ?? '') >= (earlier.finishedAt ?? ''), `${later.startedAt} after ${earlier.finishedAt}`);
    const waited = ofKind(later.id === two.id ? eventsTwo : await readEvents(base(), alice, one.id), 'queued');
    assert.ok(waited.some((q) => q.position === 1 && q.behind === earlier.id), JSON.stringify(waited));
    assert.ok(waited.every((q, i) => i === 0 || JSON.stringify(q) !== JSON.stringify(waited[i - 1])), `each position said once: ${JSON.stringify(waited)}`);
    assert.notEqual(a.release, b.release);
    // The second of two identical pushes: the RUN steps come from the cache kept for the fleet.
    const laterEvents = later.id === two.id ? eventsTwo : await readEvents(base(), alice, later.id);
    const results = ofKind(laterEvents, 'service-done').map((e) => e.result);
    assert.ok(results.every((r) => r.cachedSteps >= 1), JSON.stringify(results.map((r) => [r.service, r.steps, r.cachedSteps])));
    // Nothing of the build's own (its uuid) is in an image: an unchanged service is the same image,
    // so the same digest, and devices neither pull it again nor restart it.
    const images = async (commit: string | null) => ((await api(base(), 'GET', `/releases/${commit}`, { token: alice.token })).body as Release).services.map((s) => [s.name, s.image]);
    assert.deepEqual(await images(b.release), await images(a.release));
  });

  if (dialect === 'sqlite') {
    it('resumes the event stream after a cut connection from the last seq (after=N or Last-Event-ID) without repeating or skipping', async () => {
      const chatty = `i=0; while [ $i -lt 60 ]; do echo chatty-${RUN}-$i; i=$((i+1)); sleep 0.05; done`;
      const build = await startBuild(base(), alice, fleet, twoServices(`resume-${RUN}`, chatty));
      const seen: BuildEventEnvelope[] = [];
      seen.push(...await readEvents(base(), alice, build.id, { follow: true, stopWhen: (e) => e.event.kind === 'log' && e.event.line.includes(`chatty-${RUN}-5`) }));
      assert.ok(seen.length > 0 && ofKind(seen, 'done').length === 0, 'cut while the build still runs');
      const lastSeq = seen[seen.length - 1]?.seq ?? 0;
      seen.push(...await readEvents(base(), alice, build.id, { follow: true, lastEventId: lastSeq, stopWhen: (e) => e.event.kind === 'log' && e.event.line.includes(`chatty-${RUN}-30`) }));
      seen.push(...await readEvents(base(), alice, build.id, { follow: true, after: seen[seen.length - 1]?.seq ?? 0 }));
      assert.deepEqual(seen.map((e) => e.seq), seen.map((_, i) => i + 1), 'no seq repeated or skipped');
      assert.equal(seen[seen.length - 1]?.event.kind, 'done');
      assert.deepEqual(seen, await readEvents(base(), alice, build.id), 'the same events as one uninterrupted read');
      // BuildKit's plain lines carry the step's number first (`#3 chatty-…`).
      const lines = ofKind(seen, 'log').map((e) => e.line.replace(/^#\d+ /, '')).filter((l) => l.startsWith(`chatty-${RUN}-`));
      assert.deepEqual(lines, Array.from({ length: 60 }, (_, i) => `chatty-${RUN}-${i}`));
    });

    it('a project that does not build: the build fails naming the service, its lines are in the events, and no release is made', async () => {
      const marker = `broken-${RUN}`;
      const releasesBefore = ((await api(base(), 'GET', `/fleets/${fleet}/releases`, { token: alice.token })).body as Release[]).length;
      const build = await startBuild(base(), alice, fleet, twoServices(`fail-${RUN}`, `echo ${marker} && exit 3`));
      const events = await readEvents(base(), alice, build.id, { follow: true });
      const done = ofKind(events, 'done')[0];
      assert.equal(done?.status, 'failed');
      assert.equal(done?.release, null);
      assert.match(done?.error ?? '', /service 'b'/);
      assert.ok(ofKind(events, 'log').some((e) => e.service === 'b' && e.line.includes(marker)), 'the failing step\'s output');
      assert.ok(ofKind(events, 'service-failed').some((e) => e.service === 'b'));
      const after = await getBuild(base(), alice, build.id);
      assert.equal(after.status, 'failed');
      assert.equal(after.release, null);
      assert.match(after.error ?? '', /service 'b'/);
      assert.equal(((await api(base(), 'GET', `/fleets/${fleet}/releases`, { token: alice.token })).body as Release[]).length, releasesBefore);
      assert.deepEqual(uploadFolders(server), []);
    });

    it('cancel while running: the build is cancelled, no release, no container of the build left; a second cancel is a conflict', async () => {
      const marker = `cancel-${RUN}`;
      const build = await startBuild(base(), alice, fleet, twoServices(`cancel-${RUN}`, `echo ${marker} && sleep 600`));
      await readEvents(base(), alice, build.id, { follow: true, stopWhen: (e) => e.event.kind === 'log' && e.event.line.includes(marker) });
      const res = await api(base(), 'DELETE', `/builds/${build.id}`, { token: alice.token });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal((res.body as Build).status, 'cancelled');
      const events = await readEvents(base(), alice, build.id);
      assert.deepEqual(ofKind(events, 'done')[0], { kind: 'done', status: 'cancelled', release: null, error: 'cancelled by request; no release was made' });
      const releases = (await api(base(), 'GET', `/fleets/${fleet}/releases`, { token: alice.token })).body as Release[];
      assert.ok(!releases.some((r) => r.build === build.id));
      await waitFor(async () => (await strayContainers(fleetUuid, marker)).length === 0, 'the engine to remove the build\'s containers', 30_000).catch(async (err: Error) => {
        throw new Error(`${err.message}: ${(await strayContainers(fleetUuid, marker)).join(', ')}`);
      });
      const again = await api(base(), 'DELETE', `/builds/${build.id}`, { token: alice.token });
      assert.equal(again.status, 409);
      assert.deepEqual(uploadFolders(server), []);
    });

    it('cancel of a queued build ends it at once; cancel of a successful build is a conflict: the release exists', async () => {
      const blocker = await startBuild(base(), alice, fleet, twoServices(`blocker-${RUN}`, `sleep 3; echo blocker-${RUN}`));
      const queued = await startBuild(base(), alice, fleet, twoServices(`queued-${RUN}`));
      const res = await api(base(), 'DELETE', `/builds/${queued.id}`, { token: alice.token });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal((res.body as Build).status, 'cancelled');
      assert.equal((res.body as Build).startedAt, null);
      const ok = await finished(base(), alice, blocker.id);
      assert.equal(ok.status, 'success');
      const late = await api(base(), 'DELETE', `/builds/${blocker.id}`, { token: alice.token });
      assert.equal(late.status, 409);
      assert.match((late.body as { message: string }).message, /the release .* exists/);
    });

    it('a draft push makes a release that is not final; nocache builds every step', async () => {
      const build = await startBuild(base(), alice, fleet, twoServices(`happy-${RUN}`), 'draft=true&semver=1.2.3&nocache=true');
      const events = await readEvents(base(), alice, build.id, { follow: true });
      const done = await getBuild(base(), alice, build.id);
      assert.equal(done.status, 'success');
      assert.deepEqual(ofKind(events, 'service-done').map((e) => e.result.cachedSteps), [0, 0], 'the happy path\'s project again, without the cache');
      const release = (await api(base(), 'GET', `/releases/${done.release}`, { token: alice.token })).body as Release;
      assert.equal(release.isFinal, false);
      assert.equal(release.semver, '1.2.3');
      assert.equal(release.status, 'success');
    });

    it('multiDockerignore=true (skiff push -G): each service\'s context uses its own .dockerignore', async () => {
      // The RUN step fails if the file the service's .dockerignore names reached the build.
      const project = tarOf({
        'docker-compose.yml': 'services:\n  a:\n    build: ./a\n',
        'a/Dockerfile': `FROM ${BASE_AMD64}\nLABEL ${TEST_LABEL}=${LABEL_VALUE}\nCOPY . /ctx\nRUN test ! -e /ctx/private.txt && test -e /ctx/kept.txt\n`,
        'a/.dockerignore': 'private.txt\n',
        'a/private.txt': 'not for the image',
        'a/kept.txt': 'for the image',
      });
      const build = await startBuild(base(), alice, fleet, project, 'multiDockerignore=true');
      assert.equal(build.options.multiDockerignore, true);
      await readEvents(base(), alice, build.id, { follow: true });
      const done = await getBuild(base(), alice, build.id);
      assert.equal(done.status, 'success', done.error ?? '');
    });

    it('refuses what a cloud build cannot take: a balena.yml build secret whose file is not uploaded, a build context outside the upload, a link leading out of it', async () => {
      const secrets = await startBuild(base(), alice, fleet, tarOf({
        'balena.yml': 'build-secrets:\n  global:\n    - source: a.txt\n      dest: a\n', 'a.txt': 'x', Dockerfile: `FROM ${BASE_AMD64}\n`,
      }));
      const refused = await finished(base(), alice, secrets.id);
      assert.equal(refused.status, 'failed');
      assert.match(refused.error ?? '', /balena\.yml:3: build secret file \.balena\/secrets\/a\.txt does not exist/);
      const outside = await startBuild(base(), alice, fleet, tarOf({ 'docker-compose.yml': 'services:\n  main:\n    build: ..\n', Dockerfile: `FROM ${BASE_AMD64}\n` }));
      assert.match((await finished(base(), alice, outside.id)).error ?? '', /build context '\.\.' is outside the project/);
      const dir = makeProject({ Dockerfile: `FROM ${BASE_AMD64}\nCOPY . /x\n` });
      execFileSync('ln', ['-s', '/etc', path.join(dir, 'etc')]);
      const linked = await startBuild(base(), alice, fleet, execFileSync('tar', ['-C', dir, '-cf', '-', '.']));
      const linkDone = await finished(base(), alice, linked.id);
      assert.equal(linkDone.status, 'failed');
      assert.match(linkDone.error ?? '', /not a valid tar.*not a valid symlink/);
      for (const b of [refused, linkDone]) assert.equal(ofKind(await readEvents(base(), alice, b.id), 'done')[0]?.error, b.error);
    });

    it('another user\'s fleet and builds are not found', async () => {
      const res = await upload(base(), bob, fleet, twoServices('bob'));
      assert.equal(res.status, 404, JSON.stringify(res.body));
      const { id } = await startBuild(base(), alice, fleet, twoServices(`alice-${RUN}`));
      for (const [method, route] of [['GET', `/builds/${id}`], ['GET', `/builds/${id}/events`], ['DELETE', `/builds/${id}`], ['GET', `/builds/${id.slice(0, 7)}`], ['GET', `/fleets/${fleet}/builds`]] as const) {
        const r = await api(base(), method, route, { token: bob.token });
        assert.equal(r.status, 404, `${method} ${route}: ${JSON.stringify(r.body)}`);
      }
      assert.equal((await api(base(), 'GET', `/builds/${id.slice(0, 7)}`, { token: alice.token })).status, 200, 'a 7-digit prefix');
      assert.equal((await api(base(), 'GET', `/builds/${id}`)).status, 401);
      // The routes are documented like every other.
      const openapi = (await api(base(), 'GET', '/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
      for (const [route, method] of [['/fleets/{fleet}/builds', 'post'], ['/fleets/{fleet}/builds', 'get'], ['/builds/{id}', 'get'], ['/builds/{id}/events', 'get'], ['/builds/{id}', 'delete']] as const) {
        assert.ok(openapi.paths[route]?.[method], `${method} ${route} in /openapi.json`);
      }
      assert.equal((await finished(base(), alice, id)).status, 'success');
    });

    it('refuses bad query values naming the field, a body that is not a tar, and source=git without the hook\'s secret', async () => {
      const tar = twoServices('bad');
      for (const [query, field] of [['draft=yes', 'draft'], ['nocache=1', 'nocache'], ['semver=one', 'semver'], ['gitCommit=abc', 'gitCommit'], ['tag=novalue', 'tag'], ['tag=%20=x', 'tag'], ['colour=red', 'colour'], ['source=git', 'source'], ['source=cloud', 'source']] as const) {
        const res = await upload(base(), alice, fleet, tar, query);
        assert.equal(res.status, 400, `${query}: ${JSON.stringify(res.body)}`);
        assert.equal((res.body as { field?: string }).field, field, `${query}: ${JSON.stringify(res.body)}`);
      }
      const json = await api(base(), 'POST', `/fleets/${fleet}/builds`, { token: alice.token, body: { tar: 'no' } });
      assert.equal(json.status, 415, JSON.stringify(json.body));
      // The query is checked before the build is looked up.
      const id = 'a'.repeat(32);
      for (const [query, field] of [['after=-1', 'after'], ['follow=yes', 'follow'], ['since=3', 'since']] as const) {
        const res = await api(base(), 'GET', `/builds/${id}/events?${query}`, { token: alice.token });
        assert.equal(res.status, 400, `${query}: ${JSON.stringify(res.body)}`);
        assert.equal((res.body as { field?: string }).field, field);
      }
      assert.deepEqual(uploadFolders(server), []);
    });

    it('a body over the limit is refused with 413 naming the limit, declared or streamed; nothing is kept', async () => {
      const big = Buffer.alloc((LIMIT_MIB + 1) * 1024 * 1024, 7);
      const declared = await upload(base(), alice, fleet, big);
      assert.equal(declared.status, 413);
      assert.match((declared.body as { message: string }).message, new RegExp(`${LIMIT_MIB} MiB`));
      // Chunked: no length to refuse up front; the count of bytes stops it.
      const chunks = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < LIMIT_MIB + 1; i++) controller.enqueue(new Uint8Array(1024 * 1024));
          controller.close();
        },
      });
      const streamed = await fetch(`${base()}/fleets/${fleet}/builds`, {
        method: 'POST', headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/x-tar' }, body: chunks, duplex: 'half',
      } as RequestInit & { duplex: 'half' }).then(async (r) => ({ status: r.status, body: await r.json() as { message: string } }), (err: Error) => ({ status: 0, body: { message: err.message } }));
      assert.equal(streamed.status, 413, JSON.stringify(streamed.body));
      await waitFor(() => uploadFolders(server).length === 0, 'no upload kept', 10_000).catch((err: Error) => {
        throw new Error(`${err.message}: ${uploadFolders(server).join(' ')}\n${server.output().slice(-2000)}`);
      });
    });

    it('a client still sending past the limit reads the 413, never a reset (30 uploads in a row); one that never stops is cut after the linger', async () => {
      const url = new URL(`${base()}/fleets/${fleet}/builds`);
      const payload = randomBytes((LIMIT_MIB + 6) * 1024 * 1024);
      // What `skiff push` does (src/lib/cloud/client.ts upload): a chunked stream, piped until an answer comes.
      // Half on keep-alive connections (node's default agent, as the CLI), half asking `Connection: close`.
      const keepAlive = new http.Agent({ keepAlive: true });
      const once = (close: boolean): Promise<string> => new Promise((resolve) => {
        const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', agent: close ? false : keepAlive, headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/x-tar' } });
        let answered = false;
        let at = 0;
        const write = (): void => {
          while (!answered && at < payload.length) {
            const more = req.write(payload.subarray(at, (at += 64 * 1024)));
            if (!more) return void req.once('drain', write);
          }
          if (!answered) req.end();
        };
        req.on('response', (res) => {
          answered = true;
          res.resume();
          res.on('end', () => {
            resolve(String(res.statusCode));
            req.destroy();
          });
        });
        req.on('error', (err: NodeJS.ErrnoException) => {
          if (!answered) resolve(err.code ?? err.message);
        });
        write();
      });
      const outcomes: string[] = [];
      for (let i = 0; i < 30; i++) outcomes.push(await once(i % 2 === 0));
      keepAlive.destroy();
      assert.deepEqual(outcomes.filter((o) => o !== '413'), [], `${outcomes.join(' ')}\n${server.output().slice(-3000)}`);

      // A client that ignores the answer: its bytes are read and dropped for a while, then it is cut.
      const socket = net.connect(Number(url.port), url.hostname);
      socket.on('error', () => undefined);
      let answer = '';
      let closed = false;
      socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
      socket.on('close', () => (closed = true));
      socket.write(`POST ${url.pathname} HTTP/1.1\r\nhost: ${url.host}\r\nauthorization: Bearer ${alice.token}\r\ncontent-type: application/x-tar\r\ntransfer-encoding: chunked\r\n\r\n`);
      const chunk = Buffer.concat([Buffer.from('10000\r\n'), Buffer.alloc(0x10000, 1), Buffer.from('\r\n')]);
      const timer = setInterval(() => {
        if (!closed && socket.writableLength < 1024 * 1024) socket.write(chunk);
      }, 5);
      try {
        await waitFor(() => answer.startsWith('HTTP/1.1 413'), 'the 413 while still sending', 20_000);
        const atAnswer = socket.bytesWritten;
        await waitFor(() => closed, 'the server to cut the connection after the linger', 30_000);
        // Far more than the kernel's buffers hold: the server went on reading after its answer.
        assert.ok(socket.bytesWritten - atAnswer > 32 * 1024 * 1024, `${socket.bytesWritten - atAnswer} bytes sent after the 413`);
      } finally {
        clearInterval(timer);
        socket.destroy();
      }
      await waitFor(() => uploadFolders(server).length === 0, 'no upload kept', 10_000);
    });

    it('an upload cut half-way creates no build and leaves no file', async () => {
      const before = ((await api(base(), 'GET', `/fleets/${fleet}/builds`, { token: alice.token })).body as Build[]).length;
      const url = new URL(`${base()}/fleets/${fleet}/builds`);
      await new Promise<void>((resolve) => {
        const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/x-tar', 'content-length': String(1024 * 1024) } });
        req.on('error', () => resolve());
        req.write(Buffer.alloc(200 * 1024, 1), () => {
          // Give the server the first part, then drop the connection.
          setTimeout(() => {
            req.destroy();
            resolve();
          }, 300);
        });
      });
      await waitFor(() => uploadFolders(server).length === 0, 'the partial upload removed', 10_000).catch((err: Error) => {
        throw new Error(`${err.message}: ${uploadFolders(server).join(' ')}\n${server.output().slice(-2000)}`);
      });
      const afterCut = ((await api(base(), 'GET', `/fleets/${fleet}/builds`, { token: alice.token })).body as Build[]).length;
      assert.equal(afterCut, before);
      assert.ok(!server.output().includes(`POST /fleets/${fleet}/builds:`), `a client's cut is no server fault:\n${server.output().slice(-2000)}`);
    });

    it('a server killed during a build runs it again at its next start: no build stays running', async () => {
      const marker = `killed-${RUN}`;
      const build = await startBuild(base(), alice, fleet, twoServices(`kill-${RUN}`, `echo ${marker} && sleep 3`));
      await readEvents(base(), alice, build.id, { follow: true, stopWhen: (e) => e.event.kind === 'log' && e.event.line.includes(marker) });
      assert.equal((await getBuild(base(), alice, build.id)).status, 'running');
      await server.kill('SIGKILL');
      server = await startServer({ dataDir: server.dataDir, port: server.port, args: ['--build-context-limit', String(LIMIT_MIB)] });
      const done = await finished(base(), alice, build.id);
      assert.equal(done.status, 'success', done.error ?? '');
      const events = await readEvents(base(), alice, build.id);
      assert.ok(ofKind(events, 'info').some((e) => /restarted during this build/.test(e.message)));
      assert.equal(ofKind(events, 'done').length, 1);
      assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
      await waitFor(async () => (await strayContainers(fleetUuid, marker)).length === 0, 'no container of the first run left', 30_000);
    });

    it('a server stopped (SIGTERM) during a build ends its followers\' streams, stops the build, and runs it again at its next start', async () => {
      const marker = `stopped-${RUN}`;
      const build = await startBuild(base(), alice, fleet, twoServices(`stop-${RUN}`, `echo ${marker} && sleep 3`));
      const seen = await readEvents(base(), alice, build.id, { follow: true, stopWhen: (e) => e.event.kind === 'log' && e.event.line.includes(marker) });
      // A follower still attached when the server stops: its stream ends (without `done`) instead of holding the server up.
      const following = readEvents(base(), alice, build.id, { follow: true, after: seen[seen.length - 1]?.seq ?? 0 });
      const stoppedAt = Date.now();
      assert.equal(await server.kill('SIGTERM'), 0, server.output().slice(-2000));
      assert.ok(Date.now() - stoppedAt < 20_000, 'stopped promptly');
      const tail = await following;
      assert.equal(ofKind(tail, 'done').length, 0);
      server = await startServer({ dataDir: server.dataDir, port: server.port, args: ['--build-context-limit', String(LIMIT_MIB)] });
      const done = await finished(base(), alice, build.id);
      assert.equal(done.status, 'success', done.error ?? '');
      const events = await readEvents(base(), alice, build.id);
      assert.ok(ofKind(events, 'info').some((e) => /the server is stopping: this build runs again/.test(e.message)), JSON.stringify(ofKind(events, 'info')));
      assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
      assert.equal(ofKind(events, 'done').length, 1);
    });
  }
});

describe('cloud builds for the fleet\'s architecture, on the engine chosen for it', function () {
  this.timeout(600_000);
  let server: StartedServer | undefined;
  let proxy: net.Server | undefined;
  const fleetUuids: string[] = [];

  after(async () => {
    await server?.kill('SIGTERM');
    proxy?.close();
    for (const uuid of fleetUuids) await cleanupImages({ label: `io.skiff.fleet=${uuid}` });
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  async function fleetOf(who: Who, deviceType: string): Promise<string> {
    const name = `arch-${deviceType}-${RUN}`;
    const res = await api(server!.url, 'POST', '/fleets', { token: who.token, body: { name, deviceType } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    fleetUuids.push((res.body as Fleet).uuid);
    return name;
  }

  it('an aarch64 fleet builds on the local amd64 engine under qemu, and --builder-engine amd64=tcp://… builds amd64 fleets on that engine', async () => {
    const { arm64 } = await ensureBaseImages();
    assert.ok(arm64, 'the arm64 busybox base is missing: run scripts/setup-host.sh');
    // A TCP engine address that leads to this machine's engine, counting the builder's connections.
    let connections = 0;
    proxy = net.createServer((client) => {
      connections++;
      const engine = net.connect('/var/run/docker.sock');
      client.pipe(engine).pipe(client);
      client.on('error', () => engine.destroy());
      engine.on('error', () => client.destroy());
    });
    await new Promise<void>((resolve) => proxy!.listen(0, '127.0.0.1', resolve));
    const port = (proxy.address() as net.AddressInfo).port;
    server = await startServer({ args: ['--builder-engine', `amd64=tcp://127.0.0.1:${port}`] });
    const who = await createUser(server.url);

    const pi = await fleetOf(who, 'raspberrypi4-64');
    const armBuild = await startBuild(server.url, who, pi, tarOf({ Dockerfile: `FROM ${BASE_ARM64}\nLABEL ${TEST_LABEL}=${LABEL_VALUE}\nRUN uname -m > /built-on\n` }));
    const armEvents = await readEvents(server.url, who, armBuild.id, { follow: true });
    assert.equal(ofKind(armEvents, 'done')[0]?.status, 'success', JSON.stringify(armEvents.slice(-5)));
    assert.equal(ofKind(armEvents, 'started')[0]?.engine, 'unix:///var/run/docker.sock');
    assert.equal(ofKind(armEvents, 'plan')[0]?.arch, 'aarch64');
    assert.equal(ofKind(armEvents, 'service-done')[0]?.result.architecture, 'arm64');
    assert.equal(connections, 0, 'the aarch64 build used the local engine');

    const nuc = await fleetOf(who, 'intel-nuc');
    const amdBuild = await startBuild(server.url, who, nuc, twoServices(`tcp-${RUN}`));
    const amdEvents = await readEvents(server.url, who, amdBuild.id, { follow: true });
    assert.equal(ofKind(amdEvents, 'done')[0]?.status, 'success', JSON.stringify(amdEvents.slice(-5)));
    assert.equal(ofKind(amdEvents, 'started')[0]?.engine, `tcp://127.0.0.1:${port}`);
    assert.ok(connections > 0);
  });
});

describe('cloud builds across two replicas on one PostgreSQL database', function () {
  this.timeout(600_000);
  const servers: StartedServer[] = [];
  let database: string | undefined;
  let fleetUuid = '';

  after(async () => {
    for (const s of servers) await s.kill('SIGTERM');
    if (database) dropPostgresDatabase(database);
    if (fleetUuid) await cleanupImages({ label: `io.skiff.fleet=${fleetUuid}` });
    await cleanupImages({ label: `${TEST_LABEL}=${LABEL_VALUE}` });
  });

  it('a fleet\'s builds uploaded to different replicas run one after the other; events and cancel work from the other replica', async () => {
    await ensureBaseImages();
    database = freshPostgresDatabase();
    // One after the other: the first migrates and makes the admin.
    servers.push(await startServer({ database }));
    servers.push(await startServer({ database }));
    const [a, b] = servers as [StartedServer, StartedServer];
    const who = await createUser(a.url);
    const fleet = `replicas-${RUN}`;
    const res = await api(a.url, 'POST', '/fleets', { token: who.token, body: { name: fleet, deviceType: 'intel-nuc' } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    fleetUuid = (res.body as Fleet).uuid;

    const first = await startBuild(a.url, who, fleet, twoServices(`rep1-${RUN}`, `sleep 2; echo rep1-${RUN}`));
    const second = await startBuild(b.url, who, fleet, twoServices(`rep2-${RUN}`));
    // Followed through the replica that does not run it: the table is the truth, the bus only a hint.
    const firstEvents = await readEvents(b.url, who, first.id, { follow: true });
    assert.equal(ofKind(firstEvents, 'done')[0]?.status, 'success', JSON.stringify(firstEvents.slice(-3)));
    const one = await finished(b.url, who, first.id);
    const two = await finished(a.url, who, second.id);
    assert.equal(two.status, 'success', two.error ?? '');
    assert.ok((two.startedAt ?? '') >= (one.finishedAt ?? ''), `${two.startedAt} after ${one.finishedAt}`);
    assert.ok(ofKind(await readEvents(a.url, who, second.id), 'queued').some((q) => q.position === 1 && q.behind === first.id));

    const marker = `rep-cancel-${RUN}`;
    const third = await startBuild(a.url, who, fleet, twoServices(`rep3-${RUN}`, `echo ${marker} && sleep 600`));
    await readEvents(b.url, who, third.id, { follow: true, stopWhen: (e) => e.event.kind === 'log' && e.event.line.includes(marker) });
    const cancelled = await api(b.url, 'DELETE', `/builds/${third.id}`, { token: who.token });
    assert.equal(cancelled.status, 200, JSON.stringify(cancelled.body));
    assert.equal((cancelled.body as Build).status, 'cancelled');
    await waitFor(async () => (await strayContainers(fleetUuid, marker)).length === 0, 'no container of the cancelled build', 30_000);
  });
});
