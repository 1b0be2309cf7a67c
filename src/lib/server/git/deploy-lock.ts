/**
 * One deploying push per repository at a time. The pre-receive hook of a push to the default
 * branch takes `<repository>/skiff-deploy.lock` (created exclusively) naming its receive-pack's
 * pid; the lock is held until that receive-pack is gone, i.e. past the ref update that follows the
 * hook, so a second push never builds from a branch that is about to move. A lock whose process is
 * gone (finished, killed, a crashed server) is stale and taken over.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The lock's file name inside the bare repository. */
export const DEPLOY_LOCK = 'skiff-deploy.lock';

/** What the lock file holds. */
export interface DeployLockHolder {
  /** The receive-pack process of the push holding it. */
  pid: number;
  /** The commit it builds. */
  commit: string;
  /** ISO time it was taken. */
  since: string;
}

/** True while process `pid` exists (signal 0 checks without sending anything). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes the lock of the repository at `gitDir` for `holder`, or answers who holds it.
 *
 * @param alive how to tell a live holder (tests pass their own)
 */
export function takeDeployLock(gitDir: string, holder: DeployLockHolder, alive: (pid: number) => boolean = processAlive): { taken: true } | { taken: false; holder: DeployLockHolder } {
  const file = path.join(gitDir, DEPLOY_LOCK);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(file, JSON.stringify(holder), { flag: 'wx' });
      return { taken: true };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let current: DeployLockHolder | undefined;
    try {
      current = JSON.parse(readFileSync(file, 'utf8')) as DeployLockHolder;
    } catch {
      // Unreadable or half-written: its writer died between create and write.
      current = undefined;
    }
    if (current && typeof current.pid === 'number' && current.pid !== holder.pid && alive(current.pid)) return { taken: false, holder: current };
    // Stale: its push is over. Removed and taken on the next round (another taker may win it).
    rmSync(file, { force: true });
  }
  throw new Error(`cannot take ${file}: it keeps coming back`);
}
