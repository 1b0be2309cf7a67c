import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

/** Every .ts file under `dir`. */
function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}

describe("agent's memory", () => {
  it('never calls fetch: undici, which fetch loads, held ~14 MB of the cloud agent (node:http/https do its calls)', () => {
    const callers = [...sources('src/lib/agent'), ...sources('src/agent')].filter((f) => /(^|[^.\w])fetch\(/.test(readFileSync(f, 'utf8').replace(/\/\/.*$|\/\*[\s\S]*?\*\//gm, '')));
    assert.deepEqual(callers, []);
  });
});
