/**
 * What the cloud commands (login, fleet, device, release, env, tag, api-key, deploy…) share: the
 * client for the server they are logged in to, confirmations with --yes, and the scope flags.
 */
import process from 'node:process';
import { Flags } from '@oclif/core';
import { SkiffCommand } from './base-command.js';
import { SkiffError } from '../lib/errors/errors.js';
import type { CloudClient } from '../lib/cloud/client.js';

export const yesFlag = Flags.boolean({ char: 'y', description: 'Answer yes to the confirmation (needed when there is no terminal to ask on).' });

/** balena's `--fleet`/`--device` (and `--service`) selection for variables. */
export const variableScopeFlags = {
  fleet: Flags.string({ char: 'f', description: 'Fleet the variable belongs to.', exclusive: ['device'] }),
  device: Flags.string({ char: 'd', description: 'Device (uuid) the variable belongs to.', exclusive: ['fleet'] }),
  service: Flags.string({ char: 's', description: 'Only for this service of the fleet or device.' }),
};

export abstract class CloudCommand<T> extends SkiffCommand<T> {
  /**
   * A client for the server in ~/.skiff/credentials.json (or SKIFF_API_URL / SKIFF_API_TOKEN).
   * `login: false` allows a client without a token (login itself).
   *
   * @throws SkiffError('notLoggedIn') when a token is needed and there is none
   */
  protected async cloud(options: { login?: boolean; signal?: AbortSignal; url?: string; token?: string } = {}): Promise<CloudClient> {
    const [{ CloudClient }, { resolveCredentials, requireToken }] = await Promise.all([import('../lib/cloud/client.js'), import('../lib/cloud/credentials.js')]);
    const credentials = options.url ? { url: options.url, token: options.token, urlFrom: 'default' as const } : resolveCredentials();
    const token = options.token ?? (options.login === false ? credentials.token : requireToken(credentials));
    const debug = this.debugEnabled;
    return new CloudClient({
      url: credentials.url,
      ...(token ? { token } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(debug ? { onDebug: (line: string) => process.stderr.write(`[debug] ${line}\n`) } : {}),
    });
  }

  /**
   * Asks before something that cannot be undone. `--yes` answers it; without a terminal and
   * without `--yes` it is an error naming the flag (exit 6); a "no" stops the command (exit 1).
   */
  protected async confirmOrStop(yes: boolean, question: string): Promise<void> {
    if (yes) return;
    const { isInteractive } = await import('../ui/terminal.js');
    if (!isInteractive()) throw new SkiffError('notInteractive', `${question.replace(/\?$/, '')}: confirmation needed, but there is no terminal to ask on`, { hint: 'pass --yes to confirm' });
    const { confirm } = await import('../ui/prompt.js');
    if (!(await confirm(question))) throw new SkiffError('error', 'cancelled: nothing was changed');
  }

  /** Prints an aligned table of `rows` on stdout for people (nothing under --json). */
  protected async table(header: string[], rows: string[][]): Promise<void> {
    const out = await this.output();
    if (out.json) return;
    const { table } = await import('../ui/format.js');
    out.result(rows.length === 0 ? out.chalk.dim('(none)') : table(header, rows, (h) => out.chalk.bold(h)));
  }

  /** `KEY  value` lines for one object. */
  protected async fields(pairs: Array<[string, string | number | boolean | null | undefined]>): Promise<void> {
    const out = await this.output();
    if (out.json) return;
    const width = Math.max(...pairs.map(([k]) => k.length));
    out.result(pairs.map(([k, v]) => `${out.chalk.bold(k.padEnd(width))}  ${v === null || v === undefined || v === '' ? '-' : String(v)}`).join('\n'));
  }
}

/** A time from the API as people read it: `2026-11-30 17:50` (UTC), '-' for none. */
export function when(iso: string | null | undefined): string {
  if (!iso) return '-';
  return iso.replace('T', ' ').replace(/:\d\d(\.\d+)?Z$/, ' UTC');
}

/** A commit as people read it: the first 7 characters (any unique prefix of 7+ works in commands). */
export function short(commit: string | null | undefined): string {
  return commit ? commit.slice(0, 7) : '-';
}

/** balena's `--fleet`/`--device`/`--release` selection for tags. */
export const tagScopeFlags = {
  fleet: Flags.string({ char: 'f', description: 'Fleet the tag belongs to.', exclusive: ['device', 'release'] }),
  device: Flags.string({ char: 'd', description: 'Device (uuid) the tag belongs to.', exclusive: ['fleet', 'release'] }),
  release: Flags.string({ char: 'r', description: 'Release (commit) the tag belongs to.', exclusive: ['fleet', 'device'] }),
};

/**
 * Exactly one owner from the flags, as the API wants it.
 *
 * @throws SkiffError('usage') naming the flags when none is given
 */
export function scopeOf<K extends 'fleet' | 'device' | 'release'>(flags: Partial<Record<K | 'service', string>>, owners: K[]): Partial<Record<K | 'service', string>> {
  const given = owners.filter((k) => flags[k] !== undefined);
  if (given.length !== 1) throw new SkiffError('usage', `name exactly one of ${owners.map((o) => `--${o}`).join(', ')}`);
  const scope: Partial<Record<K | 'service', string>> = {};
  for (const owner of given) scope[owner] = flags[owner];
  if (flags.service !== undefined) scope.service = flags.service;
  return scope;
}
