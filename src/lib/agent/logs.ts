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
  private readonly entries: LogEntry[] = [];
  private readonly listeners = new Set<LogListener>();
  private readonly attached = new Map<string, () => void>();

  constructor(private readonly capacity = 5000) {}

  add(entry: LogEntry): void {
    this.entries.push(entry);
    if (this.entries.length > this.capacity) this.entries.splice(0, this.entries.length - this.capacity);
    for (const l of this.listeners) l(entry);
  }

  system(message: string, isStdErr = false): void {
    this.add({ message, timestamp: Date.now(), isSystem: true, isStdErr });
  }

  history(): LogEntry[] {
    return [...this.entries];
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
    const emitLines = (isStdErr: boolean) => {
      let partial = '';
      return (chunk: Buffer) => {
        partial += chunk.toString('utf8');
        const lines = partial.split('\n');
        partial = lines.pop() ?? '';
        for (const raw of lines) {
          const m = /^(\d{4}-\d{2}-\d{2}T[\d:.]+Z) (.*)$/s.exec(raw);
          const ts = m?.[1] ? Date.parse(m[1]) : Date.now();
          this.add({ message: (m?.[2] ?? raw).replace(/\r$/, ''), timestamp: ts, isSystem: false, isStdErr, serviceName: container.serviceName, serviceId: container.serviceId, appId: container.appId });
        }
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
