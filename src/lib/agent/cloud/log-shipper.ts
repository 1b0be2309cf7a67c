/**
 * Ships the device's log lines to its server (`POST /device/v2/:uuid/logs`), bounded everywhere:
 *
 * - Lines come from the agent's own {@link LogBuffer} (the one `/v2/local/logs` streams), so no
 *   container is followed twice. Messages over 16 KiB are cut.
 * - Each source (a service, or the agent's system lines) has its own queue in memory, capped; a
 *   batch takes lines from the sources in turn, so a service that floods gets its share of each
 *   batch and no more, and the others' lines still go through. A full queue drops its oldest line.
 * - A batch goes when it holds `batchLines` lines or `intervalMs` passed, one batch in flight, and
 *   stays under `batchBytes` (long lines make smaller batches, never a body the server refuses).
 * - While the server is unreachable (or answers 5xx/429), lines go to an on-disk buffer
 *   ({@link DiskLogBuffer}: NDJSON segment files, the newest kept within a total size) and are
 *   sent oldest first once it answers again, before anything newer; retries back off with jitter.
 * - Every line lost to a cap is counted and the count rides on the next accepted batch
 *   (`dropped`), which the server turns into a system line.
 * - Across an agent restart the containers' logs are read again from their start: a persisted mark
 *   per service (newest timestamp shipped, and how many lines had it) skips what was shipped.
 */
import { appendFileSync, closeSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { DeviceLogBatch, DeviceLogLineIn } from '../../api/logs.js';
import type { LogBuffer, LogEntry } from '../logs.js';
import { CloudHttpError, CloudUnreachableError, type CloudClient } from './client.js';

/** Longest message sent, in characters (the wire's limit). */
export const MAX_MESSAGE_LENGTH = 16_384;

export interface LogShipperOptions {
  /** Sends one batch. Throws {@link ShipError} (or anything else, read as "unreachable, retry"). */
  send: (batch: DeviceLogBatch) => Promise<void>;
  /** Folder for the on-disk buffer and the marks (made when missing). */
  dir: string;
  /** Lines per batch (default 500; the wire allows 1000). */
  batchLines?: number;
  /** Largest batch, bytes of JSON near enough (default 512 KiB: the server takes bodies up to 1 MiB). */
  batchBytes?: number;
  /** Longest wait before a batch that is not full goes, ms (default 500). */
  intervalMs?: number;
  /** Lines held in memory per source (default 1000). */
  sourceLines?: number;
  /** On-disk buffer: total bytes kept (default 4 MiB) and bytes per segment file (default a quarter of it). */
  diskBytes?: number;
  diskFileBytes?: number;
  /** Longest retry delay, ms (default 30 s). */
  maxBackoffMs?: number;
  /** [0, 1); Math.random by default. */
  random?: () => number;
  /** False while nothing may be sent yet (the device is not registered): lines wait in memory. */
  ready?: () => boolean;
  /** Milliseconds now; Date.now by default. */
  now?: () => number;
  /** One line for the operator (also a system line of the agent: keep them rare). */
  log?: (message: string, isError?: boolean) => void;
}

/** A failed send, as the shipper needs to know it: retry later (buffering), or give the batch up. */
export class ShipError extends Error {
  /** `unreachable`: no answer at all, which the poll already tells the operator (said once there, not here). */
  constructor(message: string, readonly retry: boolean, readonly unreachable = false) {
    super(message);
    this.name = 'ShipError';
  }
}

/**
 * `send` for {@link LogShipperOptions} through the agent's cloud client: a batch the server finds
 * malformed or too large (400, 413, 422) is given up; anything else (unreachable, 5xx, 429, a
 * device key not yet registered) is retried.
 */
export function sendWith(client: Pick<CloudClient, 'logs'>): (batch: DeviceLogBatch) => Promise<void> {
  return async (batch) => {
    try {
      await client.logs(batch);
    } catch (err) {
      if (err instanceof CloudHttpError && [400, 413, 422].includes(err.status)) throw new ShipError(err.message, false);
      if (err instanceof CloudUnreachableError) throw new ShipError(err.message, true, true);
      throw err;
    }
  };
}

/** A log entry as it goes on the wire: cut to {@link MAX_MESSAGE_LENGTH}, only the fields the server keeps. */
export function wireLine(e: LogEntry): DeviceLogLineIn {
  // One object per line and no spread temporaries: a flood makes a thousand of these a second.
  const line: DeviceLogLineIn = {
    timestamp: Math.max(0, Math.floor(e.timestamp)),
    message: e.message.length > MAX_MESSAGE_LENGTH ? e.message.slice(0, MAX_MESSAGE_LENGTH) : e.message,
  };
  if (e.isSystem) line.isSystem = true;
  else if (e.serviceName !== undefined) line.serviceName = e.serviceName.length > 63 ? e.serviceName.slice(0, 63) : e.serviceName;
  if (e.isStdErr) line.isStdErr = true;
  return line;
}

/** A line's size in a batch's JSON, near enough (the message dominates). */
function lineBytes(line: DeviceLogLineIn): number {
  return line.message.length + (line.serviceName?.length ?? 0) + 80;
}

function sourceOf(line: DeviceLogLineIn): string {
  return line.isSystem ? '' : `s:${line.serviceName ?? ''}`;
}

/**
 * Per-source queues in memory with a cap each; {@link take} assembles a batch by taking from the
 * sources in turn (round robin), so every source gets an equal share of each batch.
 */
export class FairQueue {
  private readonly queues = new Map<string, DeviceLogLineIn[]>();
  private size = 0;
  /** Lines dropped by the per-source cap since the last {@link takeDropped}. */
  private dropped = 0;

  constructor(private readonly perSource: number) {}

  get length(): number {
    return this.size;
  }

  push(line: DeviceLogLineIn): void {
    const key = sourceOf(line);
    let q = this.queues.get(key);
    if (!q) this.queues.set(key, (q = []));
    q.push(line);
    this.size++;
    if (q.length > this.perSource) {
      q.shift();
      this.size--;
      this.dropped++;
    }
  }

  /** Up to `max` lines, an equal share from each source (a source with fewer leaves its share to the others), each source's oldest first. */
  take(max: number, maxBytes = Number.MAX_SAFE_INTEGER): DeviceLogLineIn[] {
    const out: DeviceLogLineIn[] = [];
    let bytes = 0;
    let full = false;
    while (!full && out.length < max && this.size > 0) {
      for (const [key, q] of this.queues) {
        const line = q[0];
        if (line) {
          bytes += lineBytes(line);
          if (out.length > 0 && bytes > maxBytes) {
            full = true;
            break;
          }
          q.shift();
          out.push(line);
          this.size--;
        }
        if (q.length === 0) this.queues.delete(key);
        if (out.length >= max) break;
      }
    }
    // Sources interleave; the server keeps lines in the order given, so keep them in time order.
    return out.sort((a, b) => a.timestamp - b.timestamp);
  }

  takeDropped(): number {
    const d = this.dropped;
    this.dropped = 0;
    return d;
  }
}

interface Cursor {
  /** Segment file being read, and the offset of its first unsent line. */
  file?: string;
  offset: number;
  /** Lines lost to the caps, not yet told to the server. */
  dropped: number;
}

/**
 * The on-disk buffer: append-only NDJSON segment files (`<seq>.ndjson`, a new one past
 * `fileBytes`), read oldest first; past `totalBytes` the oldest segments are deleted and their
 * unsent lines counted as dropped. `cursor.json` remembers the read position and the dropped
 * count across restarts (written after each accepted batch: a crash between the two sends one
 * batch twice, never loses one).
 */
export class DiskLogBuffer {
  private segments: string[] = [];
  private cursor: Cursor = { offset: 0, dropped: 0 };
  private readonly cursorFile: string;

  constructor(private readonly dir: string, private readonly totalBytes: number, private readonly fileBytes: number) {
    mkdirSync(dir, { recursive: true });
    this.cursorFile = path.join(dir, 'cursor.json');
    this.segments = readdirSync(dir).filter((f) => /^\d{12}\.ndjson$/.test(f)).sort();
    try {
      const saved = JSON.parse(readFileSync(this.cursorFile, 'utf8')) as Partial<Cursor>;
      this.cursor = { offset: Number(saved.offset) || 0, dropped: Number(saved.dropped) || 0, ...(typeof saved.file === 'string' ? { file: saved.file } : {}) };
    } catch {
      // none yet, or cut short by a crash: read from the start of the oldest segment
    }
    if (this.cursor.file !== this.segments[0]) this.cursor = { offset: 0, dropped: this.cursor.dropped, ...(this.segments[0] ? { file: this.segments[0] } : {}) };
  }

  get isEmpty(): boolean {
    if (this.segments.length === 0) return true;
    if (this.segments.length > 1) return false;
    return this.size(this.segments[0] as string) <= this.cursor.offset;
  }

  /** Lines lost to the caps (the buffer's and those added with {@link addDropped}), not yet sent. */
  get dropped(): number {
    return this.cursor.dropped;
  }

  addDropped(n: number): void {
    if (n > 0) this.cursor.dropped += n;
  }

  /** Total bytes on disk. */
  bytes(): number {
    return this.segments.reduce((sum, f) => sum + this.size(f), 0) - this.cursor.offset;
  }

  private size(file: string): number {
    try {
      return statSync(path.join(this.dir, file)).size;
    } catch {
      return 0;
    }
  }

  append(lines: readonly DeviceLogLineIn[]): void {
    if (lines.length === 0) return;
    let tail = this.segments[this.segments.length - 1];
    if (tail === undefined || this.size(tail) >= this.fileBytes) {
      const seq = tail === undefined ? 1 : Number(tail.slice(0, 12)) + 1;
      tail = `${String(seq).padStart(12, '0')}.ndjson`;
      this.segments.push(tail);
      if (this.segments.length === 1) this.cursor = { ...this.cursor, file: tail, offset: 0 };
    }
    appendFileSync(path.join(this.dir, tail), lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
    // The newest are kept: whole segments go from the old end, their unsent lines counted.
    while (this.segments.length > 1 && this.bytes() > this.totalBytes) {
      const oldest = this.segments.shift() as string;
      this.cursor.dropped += this.countLines(oldest, this.cursor.file === oldest ? this.cursor.offset : 0);
      rmSync(path.join(this.dir, oldest), { force: true });
      this.cursor = { ...this.cursor, file: this.segments[0], offset: 0 };
    }
    this.save();
  }

  private countLines(file: string, from: number): number {
    try {
      const text = readFileSync(path.join(this.dir, file));
      let n = 0;
      for (let i = from; i < text.length; i++) if (text[i] === 10) n++;
      return n;
    } catch {
      return 0;
    }
  }

  /** Up to `max` of the oldest unsent lines, and the position after them (for {@link commit}). */
  peek(max: number, maxBytes = Number.MAX_SAFE_INTEGER): { lines: DeviceLogLineIn[]; next: Cursor } {
    const file = this.segments[0];
    if (file === undefined) return { lines: [], next: { ...this.cursor } };
    const fd = openSync(path.join(this.dir, file), 'r');
    let text: string;
    try {
      const length = Math.max(0, fstatSync(fd).size - this.cursor.offset);
      const buf = Buffer.alloc(length);
      readSync(fd, buf, 0, length, this.cursor.offset);
      text = buf.toString('utf8');
    } finally {
      closeSync(fd);
    }
    const lines: DeviceLogLineIn[] = [];
    let consumed = 0;
    let bytes = 0;
    let full = false;
    while (lines.length < max) {
      const nl = text.indexOf('\n', consumed);
      if (nl === -1) break; // a line cut by a crash mid-append stays until it is whole (or its segment is left)
      const raw = text.slice(consumed, nl);
      bytes += raw.length;
      if (lines.length > 0 && bytes > maxBytes) {
        full = true;
        break;
      }
      consumed = nl + 1;
      try {
        lines.push(JSON.parse(raw) as DeviceLogLineIn);
      } catch {
        // a torn line: skipped
      }
    }
    const offset = this.cursor.offset + Buffer.byteLength(text.slice(0, consumed));
    // A finished segment (not the one being appended to) whose every whole line was read: move on.
    if (!full && lines.length < max && this.segments.length > 1) return { lines, next: { ...this.cursor, file: this.segments[1], offset: 0 } };
    return { lines, next: { ...this.cursor, file, offset } };
  }

  /** The lines from {@link peek} were accepted (or, `next` undefined, lines from memory): moves past them; `droppedSent` was told to the server. */
  commit(next: Cursor | undefined, droppedSent: number): void {
    if (next === undefined) {
      if (droppedSent === 0) return;
      this.cursor.dropped = Math.max(0, this.cursor.dropped - droppedSent);
      this.save();
      return;
    }
    while (this.segments.length > 0 && this.segments[0] !== next.file) rmSync(path.join(this.dir, this.segments.shift() as string), { force: true });
    this.cursor = { offset: next.offset, dropped: Math.max(0, this.cursor.dropped - droppedSent), ...(next.file ? { file: next.file } : {}) };
    // The last segment read to its end: start afresh, so the folder does not keep an empty file forever.
    const only = this.segments[0];
    if (this.segments.length === 1 && only !== undefined && this.size(only) <= this.cursor.offset) {
      rmSync(path.join(this.dir, only), { force: true });
      this.segments = [];
      this.cursor = { offset: 0, dropped: this.cursor.dropped };
    }
    this.save();
  }

  private save(): void {
    const tmp = `${this.cursorFile}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.cursor));
    renameSync(tmp, this.cursorFile);
  }
}

/** Per service: the newest timestamp shipped and how many lines had exactly it. */
type Marks = Record<string, { ts: number; count: number }>;

/**
 * Remembers what was shipped per service, so lines read again after a restart (a container's log
 * from its start) are skipped; identical lines in one millisecond are not taken for a replay.
 */
export class ReplayMarks {
  private marks: Marks;
  /** The marks as loaded: lines at or before them were shipped by an earlier run. */
  private readonly before: Map<string, { ts: number; count: number; skipped: number }>;
  private dirty = false;

  constructor(private readonly file: string) {
    let loaded: Marks = {};
    try {
      loaded = JSON.parse(readFileSync(file, 'utf8')) as Marks;
    } catch {
      // first run
    }
    this.marks = loaded;
    this.before = new Map(Object.entries(loaded).map(([k, m]) => [k, { ...m, skipped: 0 }]));
  }

  /** False for a service line an earlier run shipped; true (and remembered) otherwise. */
  accept(line: DeviceLogLineIn): boolean {
    if (line.isSystem) return true;
    const key = line.serviceName ?? '';
    const b = this.before.get(key);
    if (b) {
      if (line.timestamp < b.ts) return false;
      if (line.timestamp === b.ts && b.skipped < b.count) {
        b.skipped++;
        return false;
      }
      this.before.delete(key);
    }
    const m = this.marks[key];
    if (!m || line.timestamp > m.ts) this.marks[key] = { ts: line.timestamp, count: 1 };
    else if (line.timestamp === m.ts) m.count++;
    this.dirty = true;
    return true;
  }

  save(): void {
    if (!this.dirty) return;
    this.dirty = false;
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.marks));
    renameSync(tmp, this.file);
  }
}

export interface LogShipper {
  /** Takes one entry (also what the buffer's subscription calls). */
  add(entry: LogEntry): void;
  /** Sends what is due now (tests; the timer calls it). */
  flush(): Promise<void>;
  /** Lines waiting in memory and bytes on disk (for tests and the bench). */
  pending(): { memoryLines: number; diskBytes: number; dropped: number };
  /** Stops the timer and, when the server does not answer at once, keeps the rest on disk. */
  stop(): Promise<void>;
}

/**
 * Starts shipping: the buffer's history first (the agent's lines from before cloud mode started),
 * then every new entry. See the module comment for the rules.
 */
export function startLogShipper(buffer: Pick<LogBuffer, 'history' | 'subscribe'>, o: LogShipperOptions): LogShipper {
  const batchLines = o.batchLines ?? 500;
  const intervalMs = o.intervalMs ?? 500;
  const batchBytes = o.batchBytes ?? 512 * 1024;
  const diskBytes = o.diskBytes ?? 4 * 1024 * 1024;
  const maxBackoffMs = o.maxBackoffMs ?? 30_000;
  const random = o.random ?? Math.random;
  const now = o.now ?? Date.now;
  mkdirSync(o.dir, { recursive: true });
  const queue = new FairQueue(o.sourceLines ?? 1000);
  const disk = new DiskLogBuffer(path.join(o.dir, 'buffer'), diskBytes, o.diskFileBytes ?? Math.max(16 * 1024, Math.floor(diskBytes / 4)));
  const marks = new ReplayMarks(path.join(o.dir, 'marks.json'));
  let failures = 0;
  let retryAt = 0;
  let sending: Promise<void> | undefined;
  let stopped = false;
  let lastProblem: string | undefined;

  const add = (entry: LogEntry): void => {
    if (stopped) return;
    const line = wireLine(entry);
    if (!marks.accept(line)) return;
    queue.push(line);
    if (queue.length >= batchLines && !sending) void flush();
  };

  /** One batch: the disk's oldest while it has any (order), else memory's fair share. */
  const sendOnce = async (): Promise<boolean> => {
    disk.addDropped(queue.takeDropped());
    const fromDisk = !disk.isEmpty;
    const peeked = fromDisk ? disk.peek(batchLines, batchBytes) : undefined;
    const lines = peeked ? peeked.lines : queue.take(batchLines, batchBytes);
    const dropped = disk.dropped;
    if (lines.length === 0 && dropped === 0) {
      // A finished segment of torn lines only: move past it.
      if (peeked) disk.commit(peeked.next, 0);
      return peeked !== undefined && !disk.isEmpty;
    }
    try {
      await o.send({ lines, ...(dropped > 0 ? { dropped } : {}) });
    } catch (err) {
      const retry = !(err instanceof ShipError) || err.retry;
      if (!retry) {
        // Refused for good (a batch the server will never take): given up, and counted.
        if (peeked) disk.commit(peeked.next, 0);
        disk.addDropped(lines.length);
        say(`Cloud: log lines refused: ${(err as Error).message}`);
        return false;
      }
      if (!peeked) disk.append(lines);
      failures++;
      const backoff = Math.min(maxBackoffMs, 1000 * 2 ** Math.min(failures - 1, 10));
      retryAt = now() + backoff * (0.5 + random());
      if (!(err instanceof ShipError && err.unreachable)) say(`Cloud: cannot send log lines (${(err as Error).message}); keeping them on disk`);
      return false;
    }
    disk.commit(peeked?.next, dropped);
    marks.save();
    if (lastProblem !== undefined) say('Cloud: sending log lines again');
    failures = 0;
    retryAt = 0;
    return !disk.isEmpty || queue.length > 0;
  };

  const say = (message: string): void => {
    if (message === lastProblem) return;
    lastProblem = message.startsWith('Cloud: sending') ? undefined : message;
    o.log?.(message, message.startsWith('Cloud: cannot') || message.includes('refused'));
  };

  const run = async (): Promise<void> => {
    if (o.ready && !o.ready()) return;
    if (now() < retryAt) {
      // Offline: memory goes to disk (the newest kept there), so memory stays small.
      disk.addDropped(queue.takeDropped());
      while (queue.length > 0) disk.append(queue.take(batchLines));
      return;
    }
    while (!stopped && (await sendOnce()));
  };
  /** One run at a time; a call during a run waits for it, then runs again for what came meanwhile. */
  const flush = (): Promise<void> => {
    if (sending) return sending.then(flush);
    const current = run().finally(() => {
      if (sending === current) sending = undefined;
    });
    sending = current;
    return current;
  };

  for (const entry of buffer.history()) add(entry);
  const unsubscribe = buffer.subscribe(add);
  const timer = setInterval(() => void flush().catch((err: Error) => say(`Cloud: log shipping failed: ${err.message}`)), intervalMs);
  timer.unref();

  return {
    add,
    flush,
    pending: () => ({ memoryLines: queue.length, diskBytes: disk.bytes(), dropped: disk.dropped }),
    async stop() {
      stopped = true;
      clearInterval(timer);
      unsubscribe();
      await sending;
      disk.addDropped(queue.takeDropped());
      while (queue.length > 0) disk.append(queue.take(batchLines));
      marks.save();
    },
  };
}

/** True when `dir` holds lines not yet sent (tests). */
export function hasBufferedLogs(dir: string): boolean {
  const d = path.join(dir, 'buffer');
  return existsSync(d) && !new DiskLogBuffer(d, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER).isEmpty;
}
