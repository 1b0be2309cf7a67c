/**
 * The pre-receive hook of every fleet repository (written by skiff server, see
 * src/lib/server/git/repositories.ts): a push to `main` builds the pushed commit as a cloud build
 * and is accepted only when the build succeeds, so the branch never points at a commit that did
 * not build. Everything printed here reaches the pusher's terminal as `remote:` lines, in the
 * plain-line form `skiff build` uses off a TTY.
 *
 * It runs below receive-pack, inside the push's quarantine: `git archive` sees the pushed objects
 * through the GIT_OBJECT_DIRECTORY/GIT_QUARANTINE_PATH receive-pack sets. The commit's files are
 * then packed and uploaded by the same code as `skiff push <fleet>` (src/lib/cloud/remote-build.ts),
 * so a git push builds exactly what `skiff push` of that checkout would. The server's URL, the
 * pusher's token and the fleet come in the environment (src/lib/server/git/hook-env.ts).
 *
 * A cancelled push (Ctrl-C of git) ends the http-backend's process group: SIGTERM here (or EPIPE on
 * the output) cancels the build on the server, so no build goes on and no ref moves.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { planPush, parseRefUpdates, ZERO_SHA } from '../lib/server/git/push-plan.js';
import { takeDeployLock } from '../lib/server/git/deploy-lock.js';
import { HOOK_SECRET_HEADER, readHookEnv, type HookSettings } from '../lib/server/git/hook-env.js';
import { CloudClient } from '../lib/cloud/client.js';
import { SkiffError } from '../lib/errors/errors.js';
import type { BuildEventEnvelope } from '../lib/api/builds.js';
import type { Release } from '../lib/api/resources.js';
import { ServiceTails } from '../lib/cloud/service-tails.js';
import { Output } from '../ui/output.js';
import { RemoteBuildRenderer } from '../ui/remote-build-renderer.js';

/** Lines of the failing service's output repeated above the refusal. */
const TAIL_LINES = 20;

const out = process.stderr;
let outputGone = false;
const cancel = new AbortController();

function say(line: string): void {
  if (outputGone) return;
  out.write(`${line}\n`);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The pushed commit's files in a new temporary folder, through `git archive` (which reads the
 * quarantined objects) unpacked by tar-fs. The caller removes the folder.
 */
async function checkout(commit: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'skiff-git-'));
  const tar = await import('tar-fs');
  const child = spawn('git', ['archive', '--format=tar', commit], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const exit = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  try {
    await pipeline(child.stdout, tar.extract(dir));
    const code = await exit;
    if (code !== 0) throw new Error(`git archive ${commit.slice(0, 7)} failed: ${stderr.trim() || `exit ${code}`}`);
  } catch (err) {
    child.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return dir;
}

/**
 * Renders the server's build events as `skiff push <fleet>` does off a TTY (RemoteBuildRenderer),
 * and keeps each service's tail: `buried(service)` is that tail when other services' lines came
 * after it (the cause is then far above), else empty (it is the last thing shown already).
 */
async function renderer(): Promise<{
  event(envelope: BuildEventEnvelope): void;
  buried(service: string | undefined): string[];
  failed(): string | undefined;
  release(): Release | undefined;
  summary(release: Release): void;
}> {
  const { Chalk } = await import('chalk');
  // Plain lines, no colour (git prefixes each with `remote: `); one stream for everything, so
  // lines keep their order on the way through receive-pack.
  const output = new Output({ json: false, terminal: { interactive: false, stderrIsTTY: false, colorLevel: 0, columns: 100 }, chalk: new Chalk({ level: 0 }), stdout: out, stderr: out });
  const view = new RemoteBuildRenderer(output, { showLogs: true }, out);
  const tails = new ServiceTails(TAIL_LINES);
  let failed: string | undefined;
  let release: Release | undefined;
  return {
    event(envelope) {
      const e = envelope.event;
      if (e.kind === 'log') tails.add(e.service, e.line);
      else if (e.kind === 'service-failed') failed ??= e.service;
      else if (e.kind === 'release') release = e.release;
      view.event(envelope);
    },
    buried: (service) => (service !== undefined && tails.buried(service) ? tails.tail(service) : []),
    failed: () => failed ?? tails.lastService(),
    release: () => release,
    summary: (r) => view.summary(r),
  };
}

/** Where `ref` points now (before this push), or undefined when it does not exist. */
async function refNow(ref: string): Promise<string | undefined> {
  const child = spawn('git', ['rev-parse', '--verify', '--quiet', ref], { stdio: ['ignore', 'pipe', 'ignore'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  return code === 0 ? stdout.trim() : undefined;
}

/** Builds `commit` and answers the hook's exit code: 0 when the release was made. */
async function deploy(settings: HookSettings, update: { ref: string; old: string; commit: string }): Promise<number> {
  const { ref, commit } = update;
  const branch = ref.replace(/^refs\/heads\//, '');
  // One deploying push at a time, held until this push's ref update is done (see deploy-lock.ts).
  const lock = takeDeployLock(path.resolve(process.env.GIT_DIR ?? '.'), { pid: process.ppid, commit, since: new Date().toISOString() });
  if (!lock.taken) {
    say(`error: another push to ${branch} is being built (${lock.holder.commit.slice(0, 7)}, since ${lock.holder.since}); the push is refused: push again when it is done`);
    return 1;
  }
  const now = await refNow(ref);
  if ((now ?? '') !== (ZERO_SHA.test(update.old) ? '' : update.old)) {
    say(`error: ${branch} moved to ${now?.slice(0, 7) ?? '(deleted)'} while this push was on its way; the push is refused: fetch, merge and push again`);
    return 1;
  }
  const { packProject, uploadBuild, followBuild, cancelBuildAndWait } = await import('../lib/cloud/remote-build.js');
  const client = new CloudClient({ url: settings.api, token: settings.token });
  const view = await renderer();
  const fleet = await client.fleet(settings.fleet);
  say(`Building ${commit.slice(0, 7)} (${ref}) for fleet ${fleet.name} (${fleet.deviceType})`);
  // The commit packed exactly as `skiff push` packs a project folder: the same project checks,
  // .dockerignore, build-secrets kept off.
  const dir = await checkout(commit);
  let build;
  try {
    const packed = await packProject(dir, { deviceType: fleet.deviceType, signal: cancel.signal }).catch((err: unknown) => {
      // The checkout's folder means nothing to the pusher: the commit is what they know.
      if (err instanceof SkiffError) throw new SkiffError(err.code, err.message.replaceAll(`'${dir}'`, `commit ${commit.slice(0, 7)}`).replaceAll(dir, `commit ${commit.slice(0, 7)}`), { ...(err.hint ? { hint: err.hint } : {}), ...(err.where ? { where: err.where } : {}) });
      throw err;
    });
    try {
      for (const warning of packed.resolved.warnings) say(`Warning: ${warning}`);
      build = await uploadBuild(client, fleet.name, { stream: packed.stream(), size: packed.size }, {
        source: 'git', gitCommit: commit, gitRef: ref, signal: cancel.signal,
        // The server's proof that this upload comes from its own hook (source=git is refused otherwise).
        headers: { [HOOK_SECRET_HEADER]: settings.secret },
      });
    } finally {
      packed.dispose();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  let last = 0;
  const seen = (envelope: BuildEventEnvelope): void => {
    last = envelope.seq;
    view.event(envelope);
  };
  const cancelled = async (): Promise<number> => {
    say(`Cancelling build ${build.id.slice(0, 7)}...`);
    const done = await cancelBuildAndWait(client, build.id, { after: last, onEvent: seen });
    // The release was made before the cancel arrived: it stands, but this push is still refused (the ref does not move).
    say(done.status === 'success' ? `build ${build.id.slice(0, 7)} finished before the cancel; release ${done.release?.slice(0, 7) ?? ''} stands` : `build ${build.id.slice(0, 7)} cancelled`);
    return 1;
  };
  if (cancel.signal.aborted) return cancelled();
  let done: Awaited<ReturnType<typeof followBuild>>;
  try {
    done = await followBuild(client, build.id, {
      onEvent: seen,
      onReattach: (attempt, reason) => say(`(lost the build's output: ${reason}; re-attaching, attempt ${attempt})`),
      signal: cancel.signal,
    });
  } catch (err) {
    if (cancel.signal.aborted) return cancelled();
    throw err;
  }
  if (done.status === 'success' && done.release) {
    const release = view.release() ?? await client.release(done.release);
    view.summary(release);
    return 0;
  }
  const service = view.failed();
  const tail = done.status === 'failed' ? view.buried(service) : [];
  if (tail.length > 0) {
    say(`Last lines of ${service}:`);
    for (const line of tail) say(`[${service}] ${line}`);
  }
  say(`error: build ${build.id.slice(0, 7)} ${done.status === 'cancelled' ? 'was cancelled' : 'failed'}${done.error ? `: ${done.error}` : ''}; the push is refused and ${branch} stays where it was`);
  return 1;
}

async function main(): Promise<number> {
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => cancel.abort(new Error(signal)));
  // The pusher went away: receive-pack (and with it our output) is gone.
  out.on('error', () => {
    outputGone = true;
    cancel.abort(new Error('EPIPE'));
  });
  const plan = planPush(parseRefUpdates(await readStdin()));
  if (plan.refused) {
    say(`error: ${plan.refused}`);
    return 1;
  }
  for (const d of plan.decisions) if (d.kind === 'store') say(d.message);
  if (!plan.deploy) return 0;
  const settings = readHookEnv(process.env);
  if ('missing' in settings) {
    say(`error: this repository's hook runs only under skiff server (${settings.missing} is not set); the push is refused`);
    return 1;
  }
  return deploy(settings, plan.deploy);
}

// The exit code is the verdict on the push; open keep-alive sockets must not hold it back.
function exit(code: number): void {
  if (outputGone) process.exit(code);
  out.write('', () => process.exit(code));
}

main().then(exit, (err: unknown) => {
  say(`error: ${err instanceof SkiffError ? err.toLine() : (err as Error).message}`);
  say('The push is refused; the branch stays where it was.');
  exit(1);
});
