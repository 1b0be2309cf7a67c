/**
 * Devices' last polls, written in batches: the poll path only notes the device in memory, and a
 * timer writes every device seen in the last second with one statement per 500 devices. One write
 * per poll would make the database's write lock the fleet's ceiling.
 */
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';

export class LastSeenBatcher {
  private pending = new Set<number>();
  private readonly seen = new Map<number, string>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;

  constructor(private readonly db: Kysely<Database>, private readonly clock: () => Date, private readonly log: (line: string) => void, private readonly intervalMs = 1000) {}

  start(): void {
    this.timer ??= setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }

  /** Notes a poll by `deviceId` now. */
  note(deviceId: number): void {
    this.pending.add(deviceId);
    this.seen.set(deviceId, this.clock().toISOString());
  }

  /** The last poll this replica saw and has not written yet (newer than the table's). */
  unwritten(deviceId: number): string | undefined {
    return this.pending.has(deviceId) ? this.seen.get(deviceId) : undefined;
  }

  /** Writes what is pending; a failed write keeps it for the next flush. */
  async flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    if (this.pending.size === 0) return;
    const ids = [...this.pending];
    this.pending = new Set();
    const at = this.clock().toISOString();
    this.flushing = (async () => {
      try {
        await this.db.transaction().execute(async (tx) => {
          for (let i = 0; i < ids.length; i += 500) {
            await tx.updateTable('devices').set({ last_seen: at }).where('id', 'in', ids.slice(i, i + 500)).execute();
          }
        });
        for (const id of ids) if (!this.pending.has(id)) this.seen.delete(id);
      } catch (err) {
        for (const id of ids) this.pending.add(id);
        this.log(`could not record ${ids.length} devices' last poll (kept for the next try): ${(err as Error).message}`);
      } finally {
        this.flushing = undefined;
      }
    })();
    return this.flushing;
  }

  /** Stops the timer and writes what is pending. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
