/** The fleets' bare repositories on disk, made with the real git (src/lib/server/git/repositories.ts). */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ensureRepository, hookScript, repositoriesRoot } from '../../src/lib/server/git/repositories.js';
import { scratchDir } from '../support/tmp.js';

describe("server git: the fleets' repositories", () => {
  const hook = { node: '/usr/bin/node-test', script: '/srv/skiff/dist/server-hooks/pre-receive.js' };

  it('a new fleet gets a bare repository whose HEAD is main, with the hook, once under concurrent first requests', async () => {
    const dataDir = scratchDir('skiff-git-repos-');
    const dirs = await Promise.all(Array.from({ length: 5 }, () => ensureRepository(dataDir, 'f00d', hook)));
    assert.equal(new Set(dirs).size, 1);
    const dir = dirs[0] ?? '';
    assert.equal(dir, path.join(repositoriesRoot(dataDir), 'f00d.git'));
    assert.equal(execFileSync('git', ['symbolic-ref', 'HEAD'], { cwd: dir, encoding: 'utf8' }).trim(), 'refs/heads/main');
    assert.equal(execFileSync('git', ['rev-parse', '--is-bare-repository'], { cwd: dir, encoding: 'utf8' }).trim(), 'true');
    assert.equal(execFileSync('git', ['config', 'receive.fsckObjects'], { cwd: dir, encoding: 'utf8' }).trim(), 'true');
    const file = path.join(dir, 'hooks', 'pre-receive');
    assert.equal(readFileSync(file, 'utf8'), hookScript(hook));
    assert.equal(statSync(file).mode & 0o111, 0o111, 'executable');
    assert.deepEqual(readdirSync(repositoriesRoot(dataDir)), ['f00d.git'], 'no temporary folder left');
  });

  it('the hook is rewritten when it was changed or the server moved, and the history stays', async () => {
    const dataDir = scratchDir('skiff-git-repos-');
    const dir = await ensureRepository(dataDir, 'beef', hook);
    execFileSync('git', ['update-ref', 'refs/heads/keep', execFileSync('git', ['commit-tree', '4b825dc642cb6eb9a060e54bf8d69288fbee4904', '-m', 'empty'], { cwd: dir, encoding: 'utf8', env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@t', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@t' } }).trim()], { cwd: dir });
    const file = path.join(dir, 'hooks', 'pre-receive');
    writeFileSync(file, '#!/bin/sh\nexit 0\n');
    await ensureRepository(dataDir, 'beef', hook);
    assert.equal(readFileSync(file, 'utf8'), hookScript(hook));
    const moved = { node: '/opt/node/bin/node', script: '/opt/skiff/dist/server-hooks/pre-receive.js' };
    await ensureRepository(dataDir, 'beef', moved);
    assert.match(readFileSync(file, 'utf8'), /exec '\/opt\/node\/bin\/node' '\/opt\/skiff\/dist\/server-hooks\/pre-receive\.js'/);
    assert.ok(execFileSync('git', ['rev-parse', 'refs/heads/keep'], { cwd: dir, encoding: 'utf8' }).trim(), 'the repository was kept');
  });
});
