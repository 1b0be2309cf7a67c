/**
 * Tests that need something only some machines have (root, loop devices, arm64 emulation). Outside
 * CI a missing prerequisite skips the test; in CI (root, emulation registered) it fails the test,
 * saying what is missing: a skip there would hide a test that never ran.
 */
import process from 'node:process';

/** CI as the usual runners set it (`CI=true`, `CI=1`); empty, `0` and `false` are not CI. */
export const IN_CI = Boolean(process.env.CI) && !['0', 'false'].includes(String(process.env.CI).toLowerCase());

/** Skips the test (outside CI) or fails it (in CI) when `available` is false; `missing` says what is missing. */
export function requireOrSkip(ctx: Mocha.Context, available: boolean, missing: string): void {
  if (available) return;
  if (IN_CI) throw new Error(`missing prerequisite in CI: ${missing}`);
  ctx.skip();
}

export const isRoot = (): boolean => process.getuid?.() === 0;
