/** Scratch folders for tests, removed when the test process exits (even after a failed test). */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const made = new Set<string>();
process.once('exit', () => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** A new empty folder in the system's temp folder, named `<prefix>XXXXXX`. */
export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  made.add(dir);
  return dir;
}

/** A scratch folder with its removal, for a test that cleans up in after() (exit removes it anyway). */
export function tempDir(prefix = 'skiff-os-'): { dir: string; remove: () => void } {
  const dir = scratchDir(prefix);
  return {
    dir,
    remove: () => {
      rmSync(dir, { recursive: true, force: true });
      made.delete(dir);
    },
  };
}
