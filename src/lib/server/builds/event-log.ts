/**
 * A running build's output on its way to build_events: events are kept in order in memory and
 * written every `flushMs` (one transaction per batch, not per line: a build printing 1,000 lines a
 * second makes ten small transactions), then announced on the event bus so followers re-read.
 */
import type { RemoteBuildEvent } from '../../api/builds.js';
import type { ServiceContext } from '../services/context.js';
import { appendEvents } from './store.js';

/** Output lines kept per build: a runaway build must not fill the database. */
export const MAX_LOG_LINES = 100_000;

export class BuildEventLog {
  private pending: RemoteBuildEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private lines = 0;

  constructor(private readonly ctx: ServiceContext, private readonly buildId: number, private readonly flushMs = 100, private readonly maxLines = MAX_LOG_LINES) {}

  /** Queues one event; it is written within `flushMs`. Log lines past `maxLines` are dropped (said once). */
  push(event: RemoteBuildEvent): void {
    if (event.kind === 'log' && ++this.lines > this.maxLines) {
      if (this.lines === this.maxLines + 1) this.pending.push({ kind: 'warning', message: `the build printed more than ${this.maxLines.toLocaleString('en')} lines: the rest of its output is not kept (the build goes on)` });
      return;
    }
    this.pending.push(event);
    this.timer ??= setTimeout(() => void this.flush(), this.flushMs);
  }

  /** Writes everything queued so far; resolves once it is committed and announced. */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    // Batches are written one after the other, so seqs follow the order of push().
    this.writing = this.writing.then(async () => {
      if (batch.length === 0) return;
      try {
        const seq = await appendEvents(this.ctx, this.buildId, batch);
        if (seq !== undefined) await this.ctx.events.publish({ topic: 'build', buildId: this.buildId, seq });
      } catch (err) {
        // Output lost to a database fault must not stop the build; the build's status still says how it ended.
        this.ctx.log(`build ${this.buildId}: ${batch.length} event(s) not stored: ${(err as Error).message}`);
      }
    });
    return this.writing;
  }
}
