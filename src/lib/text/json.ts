/**
 * JSON from a peer we do not trust (a device's, a server's or another replica's message): the
 * object it holds, or undefined for anything else, never a throw. Each caller then checks the
 * fields it knows.
 */
export function parseJsonObject(text: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as Record<string, unknown> : undefined;
}
