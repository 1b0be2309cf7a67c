/**
 * Facts about where output goes. Everything that decides "is a person watching?" asks here.
 */
import process from 'node:process';

export interface TerminalInfo {
  /** stdin and stdout are TTYs and we are not in CI: prompts are allowed. */
  interactive: boolean;
  /** stderr is a TTY (spinners, progress bars, colours by default). */
  stderrIsTTY: boolean;
  /** Colour level 0 (none) to 3 (truecolor) for stderr/stdout. */
  colorLevel: 0 | 1 | 2 | 3;
  columns: number;
  /** stderr's height in lines, when it is a terminal that says. */
  rows?: number;
}

export function isCI(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.CI && env.CI !== 'false' && env.CI !== '0') || Boolean(env.CONTINUOUS_INTEGRATION) || Boolean(env.BUILD_NUMBER);
}

/** True when a person can answer a prompt: stdin and stdout are TTYs and we are not in CI. */
export function isInteractive(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(process.stdin.isTTY && process.stdout.isTTY) && !isCI(env);
}

/** NO_COLOR (any non-empty value) wins; FORCE_COLOR forces; otherwise colour only on a TTY. */
export function colorLevel(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv = process.env): 0 | 1 | 2 | 3 {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return 0;
  if (env.FORCE_COLOR !== undefined) {
    const n = Number.parseInt(env.FORCE_COLOR, 10);
    if (env.FORCE_COLOR === '' || env.FORCE_COLOR === 'true') return 1;
    if (env.FORCE_COLOR === 'false' || n === 0) return 0;
    return (Math.min(Math.max(Number.isNaN(n) ? 1 : n, 1), 3)) as 1 | 2 | 3;
  }
  if (!stream.isTTY || env.TERM === 'dumb') return 0;
  if (env.COLORTERM === 'truecolor' || env.COLORTERM === '24bit') return 3;
  if (/-256(color)?$/i.test(env.TERM ?? '')) return 2;
  return 1;
}

export function terminalInfo(env: NodeJS.ProcessEnv = process.env): TerminalInfo {
  return {
    interactive: isInteractive(env),
    stderrIsTTY: Boolean(process.stderr.isTTY) && !isCI(env),
    colorLevel: colorLevel(process.stderr, env),
    columns: process.stderr.columns || 100,
    ...(process.stderr.rows ? { rows: process.stderr.rows } : {}),
  };
}
