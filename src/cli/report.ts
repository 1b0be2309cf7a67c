/**
 * How an error reaches the user: one printed line (or a JSON description) and an exit code. The
 * base command uses it, and so does the agent's direct start, which runs without oclif.
 */
import type { ChalkInstance } from 'chalk';
import { ExitCode, isSkiffError, SkiffError } from '../lib/errors/errors.js';
import { firstLine } from '../lib/text/lines.js';

/** Ctrl-C at a prompt (inquirer's ExitPromptError, readline's AbortError): the user's choice, not a bug. */
export function isPromptCancel(err: unknown): boolean {
  const e = err as Error | undefined;
  return e?.name === 'ExitPromptError' || (e?.name === 'AbortError' && /ctrl\+c/i.test(e.message));
}

/** The error as the user should see it: a prompt left with Ctrl-C is an interruption (exit 130). */
export function userFacing(err: Error): Error {
  return isPromptCancel(err) ? new SkiffError('interrupted', 'cancelled at the prompt (Ctrl-C)') : err;
}

/** oclif's parse errors put the reason on the lines after 'Parsing --flag': keep it, on one line. */
function parseErrorLine(message: string): string {
  const lines = message.split('\n').map((l) => l.trim().replace(/\s{2,}/g, ' — '));
  const end = lines.findIndex((l) => /^(See more help|Note:|Alternatively)/i.test(l));
  const parts = (end === -1 ? lines : lines.slice(0, end)).filter((l) => l !== '');
  return firstLine(parts.map((p, i) => (i < parts.length - 1 ? p.replace(/[.:]$/, '') : p)).join(': '));
}

/** oclif's own flag/argument errors carry exit 2. */
export function isParseError(err: unknown): boolean {
  const e = err as { oclif?: { exit?: number }; constructor?: { name?: string } };
  return e?.oclif?.exit === 2 || /Error$/.test(e?.constructor?.name ?? '') && (e.constructor?.name ?? '').includes('Flag');
}

export function exitCodeOf(err: unknown): number {
  if (isSkiffError(err)) return err.exitCode;
  if (isParseError(err)) return ExitCode.usage;
  return ExitCode.internal;
}

export function describeError(err: unknown, debug: boolean): Record<string, unknown> {
  if (isSkiffError(err)) return err.toJSON();
  const e = err as Error;
  if (isParseError(e)) return { code: 'usage', exitCode: ExitCode.usage, message: parseErrorLine(e.message) };
  return {
    code: 'internal',
    exitCode: ExitCode.internal,
    message: e?.message ?? String(err),
    ...(debug && e?.stack ? { stack: e.stack } : {}),
  };
}

/** The lines printed for an error: its details, `Error: <one line>`, and the stack with --debug only. */
export function renderError(err: Error, chalk: ChalkInstance, options: { debug: boolean; commandId?: string }): string {
  const lines: string[] = [];
  if (isSkiffError(err)) {
    for (const d of err.details) lines.push(chalk.dim(d));
    lines.push(`${chalk.red('Error:')} ${err.toLine()}`);
    if (options.debug && err.stack) lines.push(chalk.dim(err.stack));
    return lines.join('\n');
  }
  if (isParseError(err)) {
    const id = options.commandId ? ` ${options.commandId.replaceAll(':', ' ')}` : '';
    return `${chalk.red('Error:')} ${parseErrorLine(err.message)} See 'skiff${id} --help'.`;
  }
  lines.push(`${chalk.red('Error:')} unexpected failure: ${firstLine(err.message)}`);
  lines.push(options.debug && err.stack ? chalk.dim(err.stack) : chalk.dim('This is a bug in skiff. Run again with --debug for the stack trace and report it.'));
  return lines.join('\n');
}
