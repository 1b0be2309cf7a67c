/**
 * People-facing output. Results go to stdout; everything else (progress, logs, warnings) to stderr.
 * Under --json, stdout carries only the JSON document and this falls silent except for what the
 * caller explicitly asks to keep (build logs with --logs).
 */
import process from 'node:process';
import type { ChalkInstance } from 'chalk';
import type { TerminalInfo } from './terminal.js';

export interface Spinner {
  update(text: string): void;
  succeed(text?: string): void;
  fail(text?: string): void;
  stop(): void;
}

/** A block of lines kept at the bottom of stderr and redrawn in place (a build's live view). */
export interface LiveArea {
  /** The lines to show now: no newlines, each narrower than the terminal so none wraps. */
  render(): string[];
}

export interface LiveAreaHandle {
  /** Draws the area again where it is. */
  redraw(): void;
  /** Erases the area; what follows prints where it was. */
  close(): void;
}

export interface OutputOptions {
  json: boolean;
  terminal: TerminalInfo;
  chalk: ChalkInstance;
  /** ora's constructor, when stderr is a TTY; absent means plain lines. */
  ora?: typeof import('ora').default;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
}

export class Output {
  readonly json: boolean;
  readonly terminal: TerminalInfo;
  readonly chalk: ChalkInstance;
  private readonly ora?: typeof import('ora').default;
  private readonly stdout: NodeJS.WritableStream;
  private readonly stderr: NodeJS.WritableStream;
  private activeSpinner?: import('ora').Ora;
  private live?: { area: LiveArea; drawn: number };

  constructor(options: OutputOptions) {
    this.json = options.json;
    this.terminal = options.terminal;
    this.chalk = options.chalk;
    this.ora = options.ora;
    this.stdout = options.stdout ?? process.stdout;
    this.stderr = options.stderr ?? process.stderr;
  }

  /** A line for people, on stderr; silent under --json. */
  info(text: string): void {
    if (this.json) return;
    this.writeErr(text);
  }

  warn(text: string): void {
    if (this.json) return;
    this.writeErr(`${this.chalk.yellow('Warning:')} ${text}`);
  }

  /** A result for people on stdout (tables, summaries); never under --json. */
  result(text: string): void {
    if (this.json) return;
    this.stdout.write(`${text}\n`);
  }

  /** Writes a line to stderr even under --json (used for build logs when --logs asks for them). */
  log(text: string): void {
    this.writeErr(text);
  }

  /**
   * A spinner on an interactive stderr; in CI or a pipe it prints the text once as a plain line and
   * the outcome as another, so logs carry no animation frames.
   */
  spinner(text: string): Spinner {
    if (this.json) return { update() {}, succeed() {}, fail() {}, stop() {} };
    if (this.ora && this.terminal.stderrIsTTY) {
      const s = this.ora({ text, stream: this.stderr as NodeJS.WriteStream, color: 'cyan' }).start();
      this.activeSpinner = s;
      const done = () => {
        if (this.activeSpinner === s) this.activeSpinner = undefined;
      };
      return {
        update: (t) => { s.text = t; },
        succeed: (t) => { s.succeed(t); done(); },
        fail: (t) => { s.fail(t); done(); },
        stop: () => { s.stop(); done(); },
      };
    }
    this.writeErr(`${text}...`);
    return {
      update: () => {},
      succeed: (t) => { if (t) this.writeErr(t); },
      fail: (t) => { if (t) this.writeErr(t); },
      stop: () => {},
    };
  }

  /**
   * Keeps `area` below every line written to stderr from now on (each line clears it, prints, draws
   * it again) until closed; one area at a time. Undefined under --json or without an interactive
   * stderr, where nothing may be redrawn.
   */
  liveArea(area: LiveArea): LiveAreaHandle | undefined {
    if (this.json || !this.terminal.stderrIsTTY) return undefined;
    this.writeRaw(this.eraseLive());
    const live = { area, drawn: 0 };
    this.live = live;
    return {
      redraw: () => {
        if (this.live === live) this.writeRaw(this.eraseLive() + this.drawLive());
      },
      close: () => {
        if (this.live !== live) return;
        this.writeRaw(this.eraseLive());
        this.live = undefined;
      },
    };
  }

  /** Back to the area's first line and erase to the end of the screen (the cursor sits below the area). */
  private eraseLive(): string {
    const n = this.live?.drawn ?? 0;
    if (this.live) this.live.drawn = 0;
    return n > 0 ? `\u001b[${n}A\r\u001b[J` : '';
  }

  private writeRaw(text: string): void {
    if (text !== '') this.stderr.write(text);
  }

  private drawLive(): string {
    if (!this.live) return '';
    const lines = this.live.area.render();
    this.live.drawn = lines.length;
    return lines.map((l) => `${l}\n`).join('');
  }

  private writeErr(text: string): void {
    if (this.live) {
      // One write, so the terminal never shows the area half erased.
      this.stderr.write(`${this.eraseLive()}${text}\n${this.drawLive()}`);
      return;
    }
    // Keep a running spinner on its own line: clear it, print, redraw.
    const s = this.activeSpinner;
    if (s?.isSpinning) {
      s.clear();
      this.stderr.write(`${text}\n`);
      s.render();
      return;
    }
    this.stderr.write(`${text}\n`);
  }
}

/** Builds the Output for a command (imports chalk and, on a TTY, ora only when needed). */
export async function createOutput(json: boolean, terminal: TerminalInfo): Promise<Output> {
  const { Chalk } = await import('chalk');
  const chalk = new Chalk({ level: terminal.colorLevel });
  const ora = !json && terminal.stderrIsTTY ? (await import('ora')).default : undefined;
  return new Output({ json, terminal, chalk, ora });
}
