/** Waiting on a condition, never for a fixed time: a test is as fast as the thing it waits for. */
import { closeSync, openSync, readSync } from 'node:fs';

/**
 * Polls `condition` until it returns something truthy (which is returned) or `timeoutMs` passes;
 * then throws, naming `what` and the last value or error seen.
 */
export async function waitFor<T>(condition: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await condition();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}: ${String(last)}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** The first byte of a file or drive (a drive being flashed shows the image's once writing began). */
export function firstByte(file: string): number | undefined {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(1);
    return readSync(fd, b, 0, 1, 0) === 1 ? b[0] : undefined;
  } finally {
    closeSync(fd);
  }
}
