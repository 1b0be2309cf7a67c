import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildArgsFor, loadBuildSettings } from '../../src/lib/project/balena-yml.js';
import type { SkiffError } from '../../src/lib/errors/errors.js';
import { scratchDir } from '../support/tmp.js';

function project(file: string, text: string): string {
  const dir = scratchDir('skiff-yml-');
  mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
  writeFileSync(path.join(dir, file), text);
  return dir;
}

describe('balena.yml / skiff.yml', () => {
  it('reads global and per-service build-variables, in precedence order', async () => {
    const dir = project('balena.yml', 'name: x\nbuild-variables:\n  global:\n    - A=1\n    - B=two words\n  services:\n    web:\n      - A=web\n');
    const s = await loadBuildSettings(dir);
    assert.deepEqual(s.globalVariables, { A: '1', B: 'two words' });
    assert.deepEqual(buildArgsFor('web', s, {}, {}), { A: 'web', B: 'two words' });
    assert.deepEqual(buildArgsFor('db', s, { B: 'compose' }, {}), { A: '1', B: 'compose' });
    assert.deepEqual(buildArgsFor('web', s, { A: 'compose' }, { A: 'cli' }), { A: 'cli', B: 'two words' });
  });

  it('prefers skiff.yml and also finds .balena/balena.yml', async () => {
    assert.deepEqual((await loadBuildSettings(project('.balena/balena.yml', 'build-variables:\n  global: [X=1]\n'))).globalVariables, { X: '1' });
    const dir = project('skiff.yml', 'build-variables:\n  global: [S=1]\n');
    writeFileSync(path.join(dir, 'balena.yml'), 'build-variables:\n  global: [B=1]\n');
    assert.deepEqual((await loadBuildSettings(dir)).globalVariables, { S: '1' });
  });

  it('is empty without a file', async () => {
    const s = await loadBuildSettings(scratchDir('skiff-yml-'));
    assert.deepEqual(s.globalVariables, {});
    assert.equal(s.file, undefined);
  });

  it('reads build-secrets', async () => {
    const s = await loadBuildSettings(project('balena.yml', 'build-secrets:\n  global:\n    - source: a.txt\n      dest: a\n'));
    assert.deepEqual(s.secrets.global, [{ source: 'a.txt', dest: 'a', where: 'balena.yml:3' }]);
  });

  const bad: Array<[string, string, RegExp, string]> = [
    ['YAML syntax error', 'build-variables:\n  global: [A=1\n', /invalid YAML/, 'balena.yml:3'],
    ['a variable without =', 'build-variables:\n  global:\n    - A=1\n    - NOPE\n', /"NOPE" is not of the form NAME=value/, 'balena.yml:4'],
    ['build-variables not a mapping', 'build-variables: [A=1]\n', /must be a mapping/, 'balena.yml:1'],
    ['a secret without dest', 'build-secrets:\n  global:\n    - source: a\n', /needs a source and a dest/, 'balena.yml:3'],
    ['a secret dest that is a path', 'build-secrets:\n  global:\n    - source: a\n      dest: ../x\n', /must be a file name/, 'balena.yml:4'],
  ];
  for (const [name, text, message, where] of bad) {
    it(`reports ${name} with file:line`, async () => {
      await assert.rejects(loadBuildSettings(project('balena.yml', text)), (err: SkiffError) => {
        assert.equal(err.code, 'project');
        assert.match(err.message, message);
        assert.equal(err.where, where);
        return true;
      });
    });
  }
});
