/**
 * The live view of BuildKit builds on an interactive stderr: one block per running service (its
 * current step, cached steps, the step's elapsed time and the last lines it printed), redrawn in
 * place at most every FRAME_INTERVAL_MS below whatever else is printed meanwhile (Output.liveArea).
 *
 * ```
 * web     [3/7] RUN pip install -r requirements.txt  12.4s · 2 cached
 *           Collecting flask
 *           Downloading flask-3.0.0-py3-none-any.whl (101 kB)
 * ```
 */
import { stripVTControlCharacters } from 'node:util';
import type { BuildProgress } from '../lib/docker/image-build.js';
import { formatSeconds } from './format.js';
import type { LiveAreaHandle, Output } from './output.js';

/** At most ~10 frames a second: enough for a ticking clock, cheap for a slow terminal. */
export const FRAME_INTERVAL_MS = 100;
/** Output lines shown under a running step. */
const LAST_LINES = 3;
/** Past this many lines the area could outgrow a small terminal (moving up past its top leaves garbage). */
const MAX_AREA_LINES = 16;

/** Time and timers for the live view; tests pass a fake one to control the redraw pace. */
export interface LiveClock {
  /** Milliseconds since the epoch (BuildProgress.running[].startedAt is on the same scale). */
  now(): number;
  /** Calls `fn` once after `ms`; returns what cancels it. */
  schedule(fn: () => void, ms: number): () => void;
}

export const systemClock: LiveClock = {
  now: () => Date.now(),
  schedule: (fn, ms) => {
    const timer = setTimeout(fn, ms);
    // A view someone forgot to stop must not keep the CLI alive.
    timer.unref();
    return () => clearTimeout(timer);
  },
};

/** What the frame shows of one running service; no progress yet means it is still preparing. */
export interface LiveService {
  service: string;
  progress?: BuildProgress;
}

export interface FrameOptions {
  /** ms since the epoch. */
  now: number;
  /** The terminal's width: every line stays narrower, so none wraps. */
  columns: number;
  /** The terminal's height: the area keeps below it, or old frames would scroll away undeleted. */
  rows?: number;
  /** Width of the service-name column (the longest name). */
  nameWidth: number;
  /** Colours a service's (already padded) name. */
  name?: (service: string, text: string) => string;
  dim?: (text: string) => string;
}

/** The live area's lines for these running services, oldest first. */
export function liveFrame(services: readonly LiveService[], options: FrameOptions): string[] {
  const width = Math.max(1, options.columns - 1);
  const dim = options.dim ?? ((t: string) => t);
  const colour = options.name ?? ((_s: string, t: string) => t);
  const nameWidth = Math.max(1, Math.min(options.nameWidth, width - 12));
  // Output lines start under the step; on a narrow terminal a small indent leaves them room.
  const indent = width - (nameWidth + 2) >= 30 ? nameWidth + 2 : 2;
  const maxLines = Math.max(2, Math.min(MAX_AREA_LINES, (options.rows ?? MAX_AREA_LINES + 2) - 2));
  const shown = services.length > maxLines ? services.slice(0, maxLines - 1) : services;
  // Output lines only while the whole area stays small.
  const perService = Math.max(0, Math.min(LAST_LINES, Math.floor((maxLines - shown.length) / Math.max(1, shown.length))));
  const lines: string[] = [];
  for (const s of shown) {
    const name = fit(s.service, nameWidth);
    const label = colour(s.service, name + ' '.repeat(nameWidth - cells(name)));
    const room = width - nameWidth - 2;
    lines.push(`${label}  ${headText(s.progress, options.now, room, dim)}`);
    const running = s.progress?.running.length ?? 0;
    if (running === 0 || perService === 0) continue;
    const tail = (s.progress?.lastLines ?? []).map(displayLine).filter((l) => l !== '').slice(-perService);
    for (const l of tail) lines.push(' '.repeat(indent) + dim(fit(l, width - indent)));
  }
  if (shown.length < services.length) lines.push(dim(fit(`+${services.length - shown.length} more services building`, width)));
  return lines;
}

/** `[3/7] RUN pip install …  +1 more  12.4s · 2 cached`, fitted to `room` cells (the step name gives way first). */
function headText(p: BuildProgress | undefined, now: number, room: number, dim: (t: string) => string): string {
  if (room <= 0) return '';
  if (!p) return dim(fit('preparing', room));
  const cached = p.cached > 0 ? ` · ${p.cached} cached` : '';
  const oldest = p.running[0];
  if (!oldest) return dim(fit(`${p.done}/${p.total} steps${cached}`, room));
  const more = p.running.length > 1 ? `  +${p.running.length - 1} more` : '';
  const meta = `${formatSeconds(Math.max(0, now - oldest.startedAt) / 1000)}${cached}`;
  const step = shortStep(oldest.name);
  const stepRoom = room - more.length - 2 - meta.length;
  // Too narrow for the step and its numbers: the step alone, cut.
  if (stepRoom < 8) return fit(step + more, room);
  return `${fit(step, stepRoom)}${more}  ${dim(meta)}`;
}

/** BuildKit's default name of the first stage says nothing: `[stage-0 3/7] RUN x` → `[3/7] RUN x`. */
export function shortStep(name: string): string {
  return name.replace(/^\[stage-0 (\d+\/\d+)\]/, '[$1]');
}

/**
 * A build output line as a terminal would end up showing it, safe to draw in the area: the last
 * `\r`-separated frame (progress bars redraw with \r), escape sequences and control characters
 * removed, tabs expanded.
 */
export function displayLine(raw: string): string {
  const frames = raw.split('\r').filter((f) => f.trim() !== '');
  const last = frames.at(-1) ?? '';
  // eslint-disable-next-line no-control-regex -- removing control characters is the point
  return stripVTControlCharacters(last).replace(/\t/g, '    ').replace(/[\u0000-\u001f\u007f-\u009f]/g, '').trimEnd();
}

/** Terminal cells a character takes: 2 for wide East Asian characters and most emoji, 0 for combining marks. */
function cellWidth(ch: string): number {
  const c = ch.codePointAt(0) ?? 0;
  if ((c >= 0x300 && c <= 0x36f) || c === 0x200b || c === 0x200d || (c >= 0xfe00 && c <= 0xfe0f)) return 0;
  if ((c >= 0x1100 && c <= 0x115f) || (c >= 0x2e80 && c <= 0xa4cf) || (c >= 0xac00 && c <= 0xd7a3) || (c >= 0xf900 && c <= 0xfaff)
    || (c >= 0xfe30 && c <= 0xfe4f) || (c >= 0xff00 && c <= 0xff60) || (c >= 0xffe0 && c <= 0xffe6) || (c >= 0x1f300 && c <= 0x1faff)
    || (c >= 0x20000 && c <= 0x3fffd)) return 2;
  return 1;
}

/** Cells a plain (escape-free) string takes on a terminal. */
export function cells(text: string): number {
  let n = 0;
  for (const ch of text) n += cellWidth(ch);
  return n;
}

/** A plain string cut to at most `width` cells, with `…` when cut. */
export function fit(text: string, width: number): string {
  if (width <= 0) return '';
  if (cells(text) <= width) return text;
  let out = '';
  let used = 0;
  for (const ch of text) {
    const w = cellWidth(ch);
    if (used + w > width - 1) break;
    out += ch;
    used += w;
  }
  return `${out}…`;
}

/**
 * The running services' blocks, kept below everything printed meanwhile. A service leaves the
 * view (finish) before its done/failed line prints, so that line lands above the area for good.
 * Redraws at most every FRAME_INTERVAL_MS and keeps ticking while a service runs; stop() erases
 * the area and leaves no timer behind.
 */
export class BuildLiveView {
  private readonly services = new Map<string, LiveService>();
  private handle?: LiveAreaHandle;
  private lastDraw = Number.NEGATIVE_INFINITY;
  private lastFrame = '';
  private cancelTick?: () => void;

  constructor(
    private readonly out: Output,
    private readonly options: { nameWidth: () => number; name?: (service: string, text: string) => string; clock?: LiveClock },
  ) {}

  private get clock(): LiveClock {
    return this.options.clock ?? systemClock;
  }

  start(service: string): void {
    this.services.set(service, { service });
    this.request();
  }

  progress(service: string, progress: BuildProgress): void {
    const s = this.services.get(service);
    if (!s) return; // a snapshot after the service ended: nothing to show
    s.progress = progress;
    this.request();
  }

  /** The service ended: its block goes (at once, not at the next frame); the area closes with the last one. */
  finish(service: string): void {
    if (!this.services.delete(service)) return;
    if (this.services.size === 0) this.close();
    // Otherwise the line the renderer prints next redraws the area without it.
  }

  /** Erases the area and cancels the ticking; what follows prints where the area was. */
  stop(): void {
    this.services.clear();
    this.close();
  }

  private close(): void {
    this.cancelTick?.();
    this.cancelTick = undefined;
    this.handle?.close();
    this.handle = undefined;
    this.lastFrame = '';
  }

  private frame(now: number): string[] {
    return liveFrame([...this.services.values()], {
      now,
      columns: this.out.terminal.columns,
      ...(this.out.terminal.rows ? { rows: this.out.terminal.rows } : {}),
      nameWidth: this.options.nameWidth(),
      ...(this.options.name ? { name: this.options.name } : {}),
      dim: (t) => this.out.chalk.dim(t),
    });
  }

  /** What Output draws, on our redraw or after a line printed above the area. */
  private render(): string[] {
    const lines = this.frame(this.clock.now());
    this.lastFrame = lines.join('\n');
    return lines;
  }

  /** Draws now if the last frame is old enough; otherwise the pending tick draws the latest state. */
  private request(): void {
    this.handle ??= this.out.liveArea({ render: () => this.render() });
    if (!this.handle || this.cancelTick) return;
    const wait = this.lastDraw + FRAME_INTERVAL_MS - this.clock.now();
    if (wait <= 0) this.draw();
    else this.schedule(wait);
  }

  private draw(): void {
    if (!this.handle) return;
    this.lastDraw = this.clock.now();
    // An unchanged frame (nothing running yet, no clock to tick) is not written again.
    if (this.frame(this.lastDraw).join('\n') !== this.lastFrame) this.handle.redraw();
    // The running steps' clocks tick even when the build is silent.
    if (this.services.size > 0) this.schedule(FRAME_INTERVAL_MS);
  }

  private schedule(ms: number): void {
    this.cancelTick = this.clock.schedule(() => {
      this.cancelTick = undefined;
      this.draw();
    }, ms);
  }
}
