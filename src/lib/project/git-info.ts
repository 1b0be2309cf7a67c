/**
 * The project's place in git, for stamping releases (`skiff push`, `skiff deploy`) and for adding a
 * fleet's remote (`skiff fleet git-remote --add`). simple-git runs the user's own `git`, so what we
 * read is what `git status` and `git remote -v` show them.
 */
import path from 'node:path';
import { SkiffError } from '../errors/errors.js';

/** The commit a project folder is at, and whether its files differ from it. */
export interface GitInfo {
  /** HEAD of the repository holding the folder (40 hex). */
  commit: string;
  /**
   * The folder has changes that are not in `commit`: modified, staged, deleted or untracked files
   * (git-ignored ones do not count). Only the project folder is looked at, not the whole repository.
   */
  dirty: boolean;
  /** The branch checked out, absent on a detached HEAD. */
  branch?: string;
}

async function gitFor(dir: string) {
  const { simpleGit } = await import('simple-git');
  return simpleGit({ baseDir: path.resolve(dir) });
}

/**
 * The commit and dirtiness of `dir`; undefined when it is not in a git repository, the repository
 * has no commit yet, or git is not installed: a release is then simply not stamped.
 */
export async function projectGitInfo(dir: string): Promise<GitInfo | undefined> {
  try {
    const git = await gitFor(dir);
    if (!(await git.checkIsRepo())) return undefined;
    const commit = (await git.revparse(['HEAD'])).trim();
    if (!/^[0-9a-f]{40}$/.test(commit)) return undefined;
    // `-- .` keeps the answer to the project folder (a project inside a bigger repository).
    const status = await git.status(['--', '.']);
    const branch = status.detached ? undefined : status.current ?? undefined;
    return { commit, dirty: !status.isClean(), ...(branch ? { branch } : {}) };
  } catch {
    return undefined;
  }
}

/** What {@link addGitRemote} did. */
export type AddRemoteOutcome = 'added' | 'exists';

/**
 * Adds `url` as remote `name` of the repository holding `dir`. A remote of that name with the same
 * URL is left alone ('exists').
 *
 * @throws SkiffError('usage') when `dir` is not in a git repository, or when the remote exists with
 *   another URL (the hint names `--add other-name` and `git remote set-url`)
 */
export async function addGitRemote(dir: string, name: string, url: string): Promise<AddRemoteOutcome> {
  const git = await gitFor(dir).catch((err: unknown) => {
    throw new SkiffError('usage', `cannot run git in '${dir}': ${(err as Error).message}`, { hint: 'check the --source folder and that git is installed' });
  });
  let isRepo = false;
  try {
    isRepo = await git.checkIsRepo();
  } catch (err) {
    throw new SkiffError('usage', `cannot run git in '${dir}': ${(err as Error).message.split('\n')[0]}`, { hint: 'check that git is installed' });
  }
  if (!isRepo) throw new SkiffError('usage', `'${dir}' is not in a git repository`, { hint: 'run git init there first, or pass the repository with --source' });
  const remotes = await git.getRemotes(true);
  const existing = remotes.find((r) => r.name === name);
  if (existing) {
    const current = existing.refs.push || existing.refs.fetch;
    if (current === url) return 'exists';
    throw new SkiffError('usage', `the repository already has a remote '${name}' (${current})`, {
      hint: `pass --add with another name (e.g. --add ${name}2), or point it here with: git remote set-url ${name} ${url}`,
    });
  }
  try {
    await git.addRemote(name, url);
  } catch (err) {
    // git's own rules for a remote name (no '..', no trailing '/' or '.lock', …) are wider than
    // any pattern we keep in step with it: its refusal is a usage error, not a crash.
    const reason = (err as Error).message.split('\n').find((l) => l.trim() !== '')?.replace(/^fatal:\s*/, '') ?? 'git refused it';
    if (/not a valid remote name/.test(reason)) throw new SkiffError('usage', `'${name}' is not a valid git remote name`, { hint: 'use letters, digits and single ".", "_", "-" or "/" between them' });
    throw new SkiffError('error', `git could not add the remote '${name}': ${reason}`);
  }
  return 'added';
}
