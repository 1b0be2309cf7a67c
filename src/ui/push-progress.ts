/**
 * Progress of image pushes (`skiff deploy`): on an interactive stderr one redrawn line per service
 * with a bar, bytes, speed and ETA; in CI or a pipe a plain line per service every few seconds and
 * when it ends; nothing under --json.
 */
import { formatBytes, formatSeconds } from './format.js';
import type { Output } from './output.js';

const PLAIN_INTERVAL_MS = 5000;
const BAR_WIDTH = 24;

interface ServicePush {
  started: number;
  bytes: number;
  total: number;
  lastPlain: number;
  done?: string;
}

export class PushProgressRenderer {
  private readonly services = new Map<string, ServicePush>();
  private drawnLines = 0;
  private readonly tty: boolean;

  constructor(private readonly out: Output, private readonly stderr: NodeJS.WritableStream = process.stderr) {
    this.tty = out.terminal.stderrIsTTY && !out.json;
  }

  start(service: string, image: string): void {
    this.services.set(service, { started: performance.now(), bytes: 0, total: 0, lastPlain: 0 });
    if (!this.tty) this.out.info(`${service}: pushing ${image}`);
    else this.redraw();
  }

  progress(service: string, bytes: number, total: number): void {
    const s = this.services.get(service);
    if (!s || this.out.json) return;
    s.bytes = bytes;
    s.total = total;
    const now = performance.now();
    if (this.tty) this.redraw();
    else if (now - s.lastPlain >= PLAIN_INTERVAL_MS) {
      s.lastPlain = now;
      this.out.info(`${service}: ${describePush(s.bytes, s.total, (now - s.started) / 1000)}`);
    }
  }

  done(service: string, digest: string): void {
    const s = this.services.get(service);
    if (!s) return;
    s.done = digest;
    if (this.tty) this.redraw();
    else this.out.info(`${service}: pushed ${digest.slice(0, 19)} (${formatBytes(s.total)} in ${formatSeconds((performance.now() - s.started) / 1000)})`);
  }

  /** Leaves the bars where they are so what follows starts below them. */
  stop(): void {
    this.drawnLines = 0;
  }

  private redraw(): void {
    if (this.out.json) return;
    const { chalk } = this.out;
    const width = Math.max(...[...this.services.keys()].map((k) => k.length));
    const lines = [...this.services.entries()].map(([name, s]) => {
      const fraction = s.done ? 1 : s.total > 0 ? Math.min(1, s.bytes / s.total) : 0;
      const filled = Math.round(fraction * BAR_WIDTH);
      const bar = chalk.cyan('█'.repeat(filled)) + chalk.dim('░'.repeat(BAR_WIDTH - filled));
      const text = s.done ? chalk.green(`pushed ${s.done.slice(0, 19)}`) : describePush(s.bytes, s.total, (performance.now() - s.started) / 1000);
      return `${name.padEnd(width)} ${bar} ${text}`;
    });
    const up = this.drawnLines > 0 ? `\u001b[${this.drawnLines}A` : '';
    this.stderr.write(`${up}${lines.map((l) => `\r\u001b[2K${l}`).join('\n')}\n`);
    this.drawnLines = lines.length;
  }
}

/** `42%  12.0 MB of 28.5 MB  3.1 MB/s  ETA 5.3s` */
export function describePush(bytes: number, total: number, seconds: number): string {
  const parts: string[] = [];
  const fraction = total > 0 ? Math.min(1, bytes / total) : undefined;
  if (fraction !== undefined) parts.push(`${Math.floor(fraction * 100)}%`.padStart(4));
  parts.push(total > 0 ? `${formatBytes(bytes)} of ${formatBytes(total)}` : formatBytes(bytes));
  const rate = seconds > 0 ? bytes / seconds : 0;
  if (rate > 0) parts.push(`${(rate / 1048576).toFixed(1)} MB/s`);
  if (fraction !== undefined && fraction > 0 && fraction < 1 && seconds > 1) parts.push(`ETA ${formatSeconds((seconds / fraction) * (1 - fraction))}`);
  return parts.join('  ');
}
