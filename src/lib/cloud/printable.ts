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
