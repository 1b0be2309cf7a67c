/**
 * Progress of a long transfer (flashing a card): a redrawn bar with percent, MB/s and ETA on an
 * interactive stderr; a plain line every few seconds in CI or a pipe; nothing under --json.
 */
import type { FlashProgress } from '../lib/os/flash.js';
import { formatBytes, formatSeconds } from './format.js';
import type { Output } from './output.js';

const PLAIN_INTERVAL_MS = 5000;
const BAR_WIDTH = 30;

const PHASE_NAMES: Record<FlashProgress['phase'], string> = {
  writing: 'Writing',
  flushing: 'Flushing',
  verifying: 'Verifying',
};

export class FlashProgressRenderer {
  private phase?: FlashProgress['phase'];
  private phaseStart = 0;
  private lastPlain = 0;
  private drawn = false;
  private readonly tty: boolean;

  constructor(private readonly out: Output, private readonly stderr: NodeJS.WritableStream = process.stderr) {
    this.tty = out.terminal.stderrIsTTY;
  }

  update(p: FlashProgress): void {
    if (this.out.json) return;
    const now = performance.now();
    if (p.phase !== this.phase) {
      this.finishLine();
      this.phase = p.phase;
      this.phaseStart = now;
      this.lastPlain = 0;
    }
    const seconds = (now - this.phaseStart) / 1000;
    const line = describe(p, seconds);
    if (this.tty) {
      const { chalk } = this.out;
      const fraction = fractionOf(p);
      const filled = fraction === undefined ? 0 : Math.round(fraction * BAR_WIDTH);
      const bar = fraction === undefined ? chalk.dim('·'.repeat(BAR_WIDTH)) : chalk.cyan('█'.repeat(filled)) + chalk.dim('░'.repeat(BAR_WIDTH - filled));
      this.stderr.write(`\r\u001b[2K${bar} ${line}`);
      this.drawn = true;
    } else if (now - this.lastPlain >= PLAIN_INTERVAL_MS || this.lastPlain === 0) {
      this.lastPlain = now;
      this.out.info(line);
    }
  }

  /** Ends the bar's line so the next output starts on its own. */
  finishLine(): void {
    if (this.drawn) this.stderr.write('\n');
    this.drawn = false;
  }
}

function fractionOf(p: FlashProgress): number | undefined {
  if (p.total) return Math.min(1, p.bytes / p.total);
  if (p.sourceTotal && p.sourceBytes !== undefined) return Math.min(1, p.sourceBytes / p.sourceTotal);
  return undefined;
}

/** `Decompressing and writing  42%  512 MB of 1.2 GB  85.3 MB/s  ETA 8.2s` */
export function describe(p: FlashProgress, seconds: number): string {
  const name = p.phase === 'writing' && p.compressed ? 'Decompressing and writing' : PHASE_NAMES[p.phase];
  const fraction = fractionOf(p);
  const rate = seconds > 0 ? p.bytes / seconds : 0;
  const parts = [name];
  if (fraction !== undefined) parts.push(`${Math.floor(fraction * 100)}%`.padStart(4));
  parts.push(p.total ? `${formatBytes(p.bytes)} of ${formatBytes(p.total)}` : formatBytes(p.bytes));
  if (p.phase !== 'flushing' && rate > 0) parts.push(`${(rate / 1048576).toFixed(1)} MB/s`);
  if (p.phase !== 'flushing' && fraction !== undefined && fraction > 0 && fraction < 1 && seconds > 1) {
    parts.push(`ETA ${formatSeconds((seconds / fraction) * (1 - fraction))}`);
  }
  return parts.join('  ');
}
