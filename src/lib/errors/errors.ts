/**
 * One error type for everything a user can fix. The CLI prints its message and hint as one line
 * and exits with its code; anything else that escapes a command is a bug (exit 70).
 */

/** The published exit codes (README "Exit codes"). Scripts may rely on them. */
export const ExitCode = {
  ok: 0,
  error: 1,
  usage: 2,
  project: 3,
  dockerUnreachable: 4,
  buildFailed: 5,
  notInteractive: 6,
  emulation: 7,
  deviceUnreachable: 8,
  deviceRefused: 9,
  releaseFailed: 10,
  notLoggedIn: 11,
  notFound: 12,
  serverUnreachable: 13,
  conflict: 14,
  internal: 70,
  interrupted: 130,
} as const;

export type ExitCodeName = keyof typeof ExitCode;

export interface SkiffErrorOptions {
  /** What the user can do about it, e.g. "start dockerd or set DOCKER_HOST". */
  hint?: string;
  /** Where it happened, e.g. `docker-compose.yml:12`. Printed before the message. */
  where?: string;
  /** Extra lines (e.g. the tail of a failed build) shown below the one-line error. */
  details?: string[];
  cause?: unknown;
}

export class SkiffError extends Error {
  readonly code: ExitCodeName;
  readonly hint?: string;
  readonly where?: string;
  readonly details: string[];

  constructor(code: ExitCodeName, message: string, options: SkiffErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SkiffError';
    this.code = code;
    this.hint = options.hint;
    this.where = options.where;
    this.details = options.details ?? [];
  }

  get exitCode(): number {
    return ExitCode[this.code];
  }

  /** The one line a person reads: `where: message. hint` */
  toLine(): string {
    const where = this.where ? `${this.where}: ` : '';
    const hint = this.hint ? ` ${capitalise(this.hint)}${/[.!?]$/.test(this.hint) ? '' : '.'}` : '';
    const message = /[.!?]$/.test(this.message) ? this.message : `${this.message}.`;
    return `${where}${message}${hint}`;
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      exitCode: this.exitCode,
      message: this.message,
      ...(this.where ? { where: this.where } : {}),
      ...(this.hint ? { hint: this.hint } : {}),
      ...(this.details.length > 0 ? { details: this.details } : {}),
    };
  }
}

function capitalise(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export function isSkiffError(err: unknown): err is SkiffError {
  return err instanceof SkiffError;
}
