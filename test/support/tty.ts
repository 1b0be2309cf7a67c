/**
 * The real binary on a pseudo-terminal, for the prompts a user sees at a terminal (inquirer lists,
 * confirmations). util-linux's `script` makes the terminal; what the test sends goes to its stdin,
 * which `script` types into the terminal.
 */
import { spawn } from 'node:child_process';
import { stripVTControlCharacters } from 'node:util';
import { BIN, ROOT } from './cli.js';

export interface TtySession {
  /** Everything the terminal showed so far, escape sequences removed. */
  output(): string;
  /** Resolves once the screen matches, with what it showed; rejects after `ms`. */
  waitFor(pattern: RegExp, ms?: number): Promise<string>;
  /** Types keys (e.g. '\r', or DOWN). */
  send(keys: string): void;
  /** The exit code, once the CLI has exited. */
  done: Promise<number | null>;
}

export const KEYS = { DOWN: '\u001b[B', UP: '\u001b[A', ENTER: '\r', CTRL_C: '\u0003' };

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
// Without colour and cursor sequences, and carriage returns.
const stripAnsi = (s: string) => stripVTControlCharacters(s).replace(/\r/g, '');

export function startTty(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): TtySession {
  const command = [process.execPath, BIN, ...args].map(quote).join(' ');
  const child = spawn('script', ['-q', '-e', '-c', `stty cols 120 rows 40; exec ${command}`, '/dev/null'], {
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, CI: '', NO_COLOR: '1', TERM: 'xterm', ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let raw = '';
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => {
    raw += d.toString();
    for (const w of waiters) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const output = () => stripAnsi(raw);
  return {
    output,
    done,
    send: (keys) => child.stdin.write(keys),
    waitFor: (pattern, ms = 15000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (!pattern.test(output())) return;
          cleanup();
          resolve(output());
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`the terminal never showed ${pattern}; it showed:\n${output()}`));
        }, ms);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        void done.then(() => setTimeout(check, 50));
        check();
      }),
  };
}
