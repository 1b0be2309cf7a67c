/**
 * Text from devices without NUL bytes. PostgreSQL's text cannot hold NUL, so a device that sent one
 * (a service printing it, an OS version read from a binary file) got a 500 for the whole request,
 * and kept getting it on every retry; SQLite stored it. Both dialects now store U+FFFD instead.
 */

/** `text` with each NUL as U+FFFD. */
export function withoutNul(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text;
}

/** `value` (parsed JSON) with every string, object keys included, passed through {@link withoutNul}. */
export function withoutNulDeep<T>(value: T): T {
  if (typeof value === 'string') return withoutNul(value) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => withoutNulDeep(v)) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [withoutNul(k), withoutNulDeep(v)])) as T;
  }
  return value;
}
