/**
 * Text a device sent (its OS version, an update error, service states), made safe to print on the
 * owner's terminal: a device, or whoever holds its key, could otherwise put escape sequences in
 * front of a person (retitle the window, write the clipboard with OSC 52, hide or fake lines).
 */

/**
 * `s` with every control character (C0 but none, DEL, C1) written as a visible `\xNN` escape, e.g.
 * `printable('a\u001b[31mb')` → `a\x1b[31mb`. Null and undefined pass through.
 */
export function printable<T extends string | null | undefined>(s: T): T {
  if (typeof s !== 'string') return s;
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is matched
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`) as T;
}

/**
 * A log message made safe to print: as {@link printable}, but a tab and SGR sequences
 * (`ESC [ … m`, the colours services print) pass through, so coloured output stays coloured while
 * a service's (or a stolen device key's) OSC 52 clipboard write, window title, cursor movement or
 * carriage return shows as `\xNN` instead of acting on the terminal.
 * `printableLog('\u001b[31mred\u001b[0m \u001b]0;t\u0007')` → `\u001b[31mred\u001b[0m \x1b]0;t\x07`.
 */
export function printableLog(s: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is matched
  return s.replace(/\u001b\[[0-9;]*m|[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g, (m) => (m.length > 1 ? m : printable(m)));
}
