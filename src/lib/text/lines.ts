/** Text helpers for the one-line messages every layer prints or returns. */

/** The first non-blank line of `s`, trimmed and ending in a full stop (`'\n  boom\nat x'` → `'boom.'`). */
export function firstLine(s: string): string {
  const line = (s.split('\n').find((l) => l.trim() !== '') ?? s).trim();
  return /[.!?]$/.test(line) ? line : `${line}.`;
}
