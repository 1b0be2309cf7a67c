/**
 * The one base command. It owns --json and --debug, the JSON envelope, and the mapping from
 * errors to one printed line and an exit code. Commands extend it, parse, call src/lib, render.
 */
import process from 'node:process';
import { Command, Flags } from '@oclif/core';
import { SkiffError } from '../lib/errors/errors.js';
import { describeError, exitCodeOf, renderError, userFacing } from './report.js';
import { createOutput, type Output } from '../ui/output.js';
import { terminalInfo } from '../ui/terminal.js';

export interface JsonEnvelope<T> {
  status: 'ok' | 'error';
  result?: T;
  error?: Record<string, unknown>;
  warnings: string[];
}

export abstract class SkiffCommand<T = unknown> extends Command {
  static override enableJsonFlag = true;

  static override baseFlags = {
    debug: Flags.boolean({
      description: 'Print debug output and stack traces (or set SKIFF_DEBUG=1).',
      helpGroup: 'GLOBAL',
    }),
  };

  private outputInstance?: Output;
  protected readonly warnings: string[] = [];

  abstract override run(): Promise<T>;

  protected get debugEnabled(): boolean {
    return this.argv.includes('--debug') || Boolean(process.env.SKIFF_DEBUG && process.env.SKIFF_DEBUG !== '0');
  }

  /** The output for this run (created on first use so cheap commands never load chalk or ora). */
  protected async output(): Promise<Output> {
    this.outputInstance ??= await createOutput(this.jsonEnabled(), terminalInfo());
    return this.outputInstance;
  }

  /**
   * Runs `work` with a signal that Ctrl-C (SIGINT) or SIGTERM aborts, so the command winds down
   * through its own code: the first signal calls `onCancel` (say "stopping…") and aborts; the
   * handlers are then removed, so a second Ctrl-C ends the process the default way at once.
   */
  protected async cancellable<R>(work: (signal: AbortSignal) => Promise<R>, onCancel?: () => void): Promise<R> {
    const controller = new AbortController();
    const onSignal = () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      onCancel?.();
      controller.abort(new Error('interrupted'));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      return await work(controller.signal);
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }

  /** Records a warning: printed now for people, carried in the JSON envelope for machines. */
  protected async warnUser(text: string): Promise<void> {
    this.warnings.push(text);
    (await this.output()).warn(text);
  }

  protected override toSuccessJson(result: unknown): JsonEnvelope<unknown> {
    return { status: 'ok', result, warnings: this.warnings };
  }

  protected override toErrorJson(err: unknown): JsonEnvelope<unknown> {
    return { status: 'error', error: describeError(err, this.debugEnabled), warnings: this.warnings };
  }

  protected override async catch(thrown: Error & { oclif?: { exit?: number } }): Promise<never> {
    const err = userFacing(thrown);
    const code = exitCodeOf(err);
    if (this.jsonEnabled()) {
      this.logJson(this.toErrorJson(err));
    } else {
      process.stderr.write(`${await this.renderError(err)}\n`);
    }
    const exit = new Error(err.message) as Error & { oclif: { exit: number }; skipOclifErrorHandling: boolean; code: string };
    exit.oclif = { exit: code };
    exit.skipOclifErrorHandling = true;
    exit.code = 'EEXIT';
    throw exit;
  }

  private async renderError(err: Error): Promise<string> {
    const { chalk } = await this.output();
    return renderError(err, chalk, { debug: this.debugEnabled, commandId: this.id });
  }
}

export { SkiffError, exitCodeOf };
