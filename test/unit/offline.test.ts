/**
 * `npm run test:unit` stays offline and fast: no unit test reaches for the engine, a subprocess
 * (mkfs, mtools, sfdisk, the compressors, the CLI) or the helpers that do. Such a test belongs in
 * test/integration or test/e2e.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FORBIDDEN = ['node:child_process', 'dockerode', '../support/engine.js', '../support/os-images.js', '../support/agent.js', '../support/cli.js', '../support/netns.js', '../support/tty.js'];

describe('unit tests are offline', () => {
  for (const file of readdirSync(HERE).filter((f) => f.endsWith('.test.ts'))) {
    it(`${file} imports no engine, subprocess or tool helper`, () => {
      const imports = [...readFileSync(path.join(HERE, file), 'utf8').matchAll(/^import\b[^;]*?from\s+'([^']+)'/gms)].map((m) => m[1]);
      assert.deepEqual(imports.filter((i) => i !== undefined && FORBIDDEN.includes(i)), [], `${file}: move the test that needs these to test/integration`);
    });
  }
});
