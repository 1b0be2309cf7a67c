/**
 * Device logs: every managed container's stdout/stderr plus the agent's own system messages, in a
 * bounded in-memory buffer that the device API streams (`GET /v2/local/logs`).
 */
import type { Readable } from 'node:stream';
import type { EngineClient, LogFrame } from '../docker/engine-lite.js';

/** One log line, in the shape balena's local-mode log stream uses. */
export interface LogEntry {
  message: string;
  /** Milliseconds since the epoch. */
  timestamp: number;
  isSystem: boolean;
  isStdErr: boolean;
  serviceName?: string;
  serviceId?: number;
  appId?: number;
}

export type LogListener = (entry: LogEntry) => void;

export class LogBuffer {
  /** A ring: `entries[next]` is the oldest once it is full. A flood adds a line each millisecond; the array is never copied. */
  private readonly entries: LogEntry[] = [];
  private next = 0;
  private readonly listeners = new Set<LogListener>();
  private readonly attached = new Map<string, () => void>();

  constructor(private readonly capacity = 5000) {}

  add(entry: LogEntry): void {
    if (this.entries.length < this.capacity) this.entries.push(entry);
    else this.entries[this.next] = entry;
    this.next = (this.next + 1) % this.capacity;
    for (const l of this.listeners) l(entry);
  }

  system(message: string, isStdErr = false): void {
    this.add({ message, timestamp: Date.now(), isSystem: true, isStdErr });
  }

  /** The entries kept, oldest first (a copy). */
  history(): LogEntry[] {
    return this.entries.length < this.capacity ? [...this.entries] : [...this.entries.slice(this.next), ...this.entries.slice(0, this.next)];
  }

  subscribe(listener: LogListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Follows a container's output from now on (once per container id). */
  async follow(docker: EngineClient, container: { containerId: string; serviceName: string; serviceId: number; appId: number; startedAt?: string }): Promise<void> {
    if (this.attached.has(container.containerId)) return;
    // Claim the container before the first await, so two loop rounds never follow it twice.
    let stopped = false;
    this.attached.set(container.containerId, () => { stopped = true; });
    const c = docker.getContainer(container.containerId);
    let stream: Readable;
    try {
      const info = await c.inspect();
      stream = await c.logs({ follow: true, stdout: true, stderr: true, timestamps: true, tail: 500, since: container.startedAt ? Math.floor(Date.parse(container.startedAt) / 1000) : Math.floor(Date.now() / 1000) - 1, tty: info.Config.Tty });
    } catch (err) {
      this.attached.delete(container.containerId);
      throw err;
    }
    if (stopped) {
      stream.destroy();
      return;
    }
    // One frame per write, usually one line: cut at each newline with indexOf, no array or regex per chunk.
    const emitLines = (isStdErr: boolean) => {
      let partial = '';
      return (chunk: Buffer) => {
        const text = partial === '' ? chunk.toString('utf8') : partial + chunk.toString('utf8');
        let start = 0;
        for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
          const { message, timestamp } = splitTimestamp(text, start, nl);
          this.add({ message, timestamp, isSystem: false, isStdErr, serviceName: container.serviceName, serviceId: container.serviceId, appId: container.appId });
          start = nl + 1;
        }
        partial = start === 0 ? text : text.slice(start);
      };
    };
    const stdout = emitLines(false);
    const stderr = emitLines(true);
    stream.on('data', (frame: LogFrame) => (frame.stream === 'stderr' ? stderr(frame.data) : stdout(frame.data)));
    const stop = () => stream.destroy();
    this.attached.set(container.containerId, stop);
    stream.on('end', () => this.attached.delete(container.containerId));
    stream.on('error', () => this.attached.delete(container.containerId));
  }

  /** Stops following containers that are gone. */
  prune(liveIds: Set<string>): void {
    for (const [id, stop] of this.attached) {
      if (!liveIds.has(id)) {
        stop();
        this.attached.delete(id);
      }
    }
  }

  close(): void {
    for (const stop of this.attached.values()) stop();
    this.attached.clear();
    this.listeners.clear();
  }
}

/**
 * `text[start, end)` is one line of the engine's log with `timestamps: true`: an RFC 3339 time
 * (`2026-11-30T21:30:12.123456789Z`), a space, the message. A line without one keeps the time of
 * arrival. A trailing `\r` (a CRLF writer) is dropped.
 */
export function splitTimestamp(text: string, start: number, end: number): { message: string; timestamp: number } {
  if (end > start && text.charCodeAt(end - 1) === 13) end--;
  const space = text.indexOf(' ', start);
  if (space > start + 19 && space < end + 1 && space - start <= 35 && text.charCodeAt(space - 1) === 90 /* Z */ && text.charCodeAt(start + 10) === 84 /* T */) {
    const timestamp = Date.parse(text.slice(start, space));
    if (!Number.isNaN(timestamp)) return { message: text.slice(space + 1, end), timestamp };
  }
  return { message: text.slice(start, end), timestamp: Date.now() };
}
