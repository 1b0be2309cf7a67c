/**
 * What the pre-receive hook does with a push, decided from the ref updates alone (pure, so every
 * case is a table test): a push to the default branch deploys its commit, deleting that branch is
 * refused, anything else (another branch, a tag) is stored and only said so.
 */

/** The branch that deploys, and the one a new repository's HEAD names. */
export const DEFAULT_BRANCH = 'main';

/** One line of pre-receive's stdin (githooks(5)): `<old sha> <new sha> <ref name>`. */
export interface RefUpdate {
  old: string;
  new: string;
  ref: string;
}

/** The all-zero object name git uses for "no object" (a created or deleted ref). */
export const ZERO_SHA = /^0+$/;

/** The updates on pre-receive's stdin. Malformed lines throw: git never writes them. */
export function parseRefUpdates(stdin: string): RefUpdate[] {
  const updates: RefUpdate[] = [];
  for (const line of stdin.split('\n')) {
    if (line.trim() === '') continue;
    const match = /^([0-9a-f]{40}|[0-9a-f]{64}) ([0-9a-f]{40}|[0-9a-f]{64}) (\S+)$/.exec(line.trim());
    if (!match?.[1] || !match[2] || !match[3]) throw new Error(`pre-receive: not a ref update line: '${line.slice(0, 200)}'`);
    updates.push({ old: match[1], new: match[2], ref: match[3] });
  }
  return updates;
}

/** What becomes of one ref. */
export type RefDecision =
  | { kind: 'deploy'; ref: string; old: string; commit: string }
  | { kind: 'store'; ref: string; message: string }
  | { kind: 'refuse'; ref: string; message: string };

/** The decisions for a push, and the first refusal (the whole push is refused then: pre-receive is all or nothing). */
export interface PushPlan {
  decisions: RefDecision[];
  /** The commit to build, when the push updates the default branch (`old`: where the branch is now, zeros when new). */
  deploy?: { ref: string; old: string; commit: string };
  refused?: string;
}

/** Decides each update of a push; `branch` is the one that deploys. */
export function planPush(updates: readonly RefUpdate[], branch: string = DEFAULT_BRANCH): PushPlan {
  const deployRef = `refs/heads/${branch}`;
  const decisions: RefDecision[] = updates.map((u): RefDecision => {
    const deleting = ZERO_SHA.test(u.new);
    if (u.ref === deployRef) {
      if (deleting) return { kind: 'refuse', ref: u.ref, message: `deleting ${branch} is refused: it is the branch that deploys the fleet` };
      return { kind: 'deploy', ref: u.ref, old: u.old, commit: u.new };
    }
    if (deleting) return { kind: 'store', ref: u.ref, message: `deleted ${u.ref}` };
    return { kind: 'store', ref: u.ref, message: `stored ${u.ref}; only ${branch} deploys` };
  });
  const refused = decisions.find((d) => d.kind === 'refuse')?.message;
  const deploy = decisions.find((d): d is Extract<RefDecision, { kind: 'deploy' }> => d.kind === 'deploy');
  return { decisions, ...(deploy ? { deploy: { ref: deploy.ref, old: deploy.old, commit: deploy.commit } } : {}), ...(refused ? { refused } : {}) };
}
