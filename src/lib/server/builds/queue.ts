/**
 * Which builds a replica starts now, and where the waiting ones stand: a pure decision over the
 * unfinished builds (queued or running, on every replica), so the rules are tested by tables.
 *
 * Rules: a fleet's builds run one at a time in the order they were made (its oldest unfinished
 * build is the only one that may run: two pushes are never interleaved into one release); only the
 * replica holding a build's upload runs it; a replica runs at most `concurrency` builds at once.
 */

/** One unfinished build, as the runner reads it. */
export interface QueueEntry {
  id: number;
  uuid: string;
  fleetId: number;
  status: 'queued' | 'running';
  replica: string;
}

/** Where a waiting build stands in its fleet's line. */
export interface QueuePosition {
  /** Unfinished builds of the same fleet ahead of it. */
  position: number;
  /** The first of them (the one running or next to run), null when none. */
  behind: string | null;
}

export interface QueuePlan {
  /** Row ids to claim and run now, oldest first. */
  start: number[];
  /** Every queued build of this replica that is not started now, with its position. */
  waiting: Map<number, QueuePosition>;
}

/**
 * @param entries the unfinished builds, any order
 * @param replica this replica's id
 * @param concurrency most builds this replica runs at once
 */
export function planQueue(entries: readonly QueueEntry[], replica: string, concurrency: number): QueuePlan {
  const sorted = [...entries].sort((a, b) => a.id - b.id);
  let free = concurrency - sorted.filter((e) => e.status === 'running' && e.replica === replica).length;
  const ahead = new Map<number, { count: number; first: string }>();
  const start: number[] = [];
  const waiting = new Map<number, QueuePosition>();
  for (const entry of sorted) {
    const line = ahead.get(entry.fleetId);
    if (entry.status === 'queued' && entry.replica === replica) {
      if (!line && free > 0) {
        start.push(entry.id);
        free--;
      } else {
        waiting.set(entry.id, { position: line?.count ?? 0, behind: line?.first ?? null });
      }
    }
    ahead.set(entry.fleetId, { count: (line?.count ?? 0) + 1, first: line?.first ?? entry.uuid });
  }
  return { start, waiting };
}
