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

  private writeErr(text: string): void {
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
