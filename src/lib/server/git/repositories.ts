/**
 * The fleets' bare repositories on this replica's disk: `<dataDir>/git/<fleet uuid>.git`, made on
 * first use with `main` as the default branch, and the `pre-receive` hook that turns a push to
 * `main` into a cloud build. Keyed by the fleet's uuid, so a renamed fleet keeps its history.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { DEFAULT_BRANCH } from './push-plan.js';

const run = promisify(execFile);

/** Where the repositories live under the server's data dir (`GIT_PROJECT_ROOT`). */
export function repositoriesRoot(dataDir: string): string {
  return path.join(dataDir, 'git');
}

/** The folder name of a fleet's repository under {@link repositoriesRoot}. */
export function repositoryName(fleetUuid: string): string {
  return `${fleetUuid}.git`;
}

/** How the hook runs: this Node and the compiled hook entry (dist/server-hooks/pre-receive.js). */
export interface HookCommand {
  node: string;
  script: string;
}

/** The hook entry next to this module once compiled: dist/lib/server/git → dist/server-hooks. */
export function defaultHookCommand(): HookCommand {
  return { node: process.execPath, script: fileURLToPath(new URL('../../../server-hooks/pre-receive.js', import.meta.url)) };
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * The hook file: a small sh script naming both absolute paths, so it keeps working whatever PATH
 * receive-pack runs it with. It holds no secret: the pusher's token reaches the hook through the
 * environment http-backend passes down (see backend.ts).
 */
export function hookScript(command: HookCommand): string {
  return [
    '#!/bin/sh',
    '# Written by skiff server at each access to this repository (edits are overwritten).',
    `# A push to ${DEFAULT_BRANCH} builds the pushed commit; the push is refused when the build fails.`,
    `exec ${shellQuote(command.node)} ${shellQuote(command.script)} "$@"`,
    '',
  ].join('\n');
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(() => true, () => false);
}

/** Writes `content` to `file` (mode 0755) unless it already holds it; atomic (a hook never runs half-written). */
async function writeIfChanged(file: string, content: string): Promise<void> {
  const current = await readFile(file, 'utf8').catch(() => undefined);
  if (current === content) return;
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, content, { mode: 0o755 });
  await chmod(tmp, 0o755);
  await rename(tmp, file);
}

const creating = new Map<string, Promise<void>>();

/**
 * The path of the fleet's repository, made if it does not exist yet and with its hook current
 * (the hook names this server's Node and install path, which change with an upgrade). A new
 * repository is made in a temporary folder and renamed into place, so a request never sees a
 * half-initialised one.
 *
 * @throws Error when git cannot make the repository (a broken install or a full disk)
 */
export async function ensureRepository(dataDir: string, fleetUuid: string, hook: HookCommand = defaultHookCommand()): Promise<string> {
  const root = repositoriesRoot(dataDir);
  const dir = path.join(root, repositoryName(fleetUuid));
  if (!(await exists(path.join(dir, 'HEAD')))) {
    let pending = creating.get(dir);
    if (!pending) {
      pending = create(root, dir).finally(() => creating.delete(dir));
      creating.set(dir, pending);
    }
    await pending;
  }
  await mkdir(path.join(dir, 'hooks'), { recursive: true });
  await writeIfChanged(path.join(dir, 'hooks', 'pre-receive'), hookScript(hook));
  return dir;
}

async function create(root: string, dir: string): Promise<void> {
  await mkdir(root, { recursive: true, mode: 0o700 });
  if (await exists(path.join(dir, 'HEAD'))) return;
  const tmp = path.join(root, `.new-${path.basename(dir)}-${randomBytes(4).toString('hex')}`);
  try {
    await run('git', ['init', '--quiet', '--bare', '--initial-branch', DEFAULT_BRANCH, tmp], { env: gitEnv() });
    // receive-pack over HTTP is on for authenticated users anyway (REMOTE_USER); say so explicitly.
    await run('git', ['config', 'http.receivepack', 'true'], { cwd: tmp, env: gitEnv() });
    // A hosted repository checks what it is sent: a malformed object is refused, not stored.
    await run('git', ['config', 'receive.fsckObjects', 'true'], { cwd: tmp, env: gitEnv() });
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    // Another process (a second replica on a shared disk) made it meanwhile: use theirs.
    if (await exists(path.join(dir, 'HEAD'))) return;
    throw err;
  }
}

/**
 * The environment of every git the server runs: the server user's own git configuration
 * (~/.gitconfig, /etc/gitconfig) must not change how the fleets' repositories behave.
 */
export function gitEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    ...(process.env.LANG ? { LANG: process.env.LANG } : {}),
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    ...extra,
  };
}
