import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEPLOY_LOCK, processAlive, takeDeployLock } from '../../src/lib/server/git/deploy-lock.js';

describe('git deploy lock: one deploying push per repository', () => {
  let dir = '';
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'skiff-lock-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const holder = (pid: number, commit = 'a'.repeat(40)) => ({ pid, commit, since: '2026-11-30T00:00:00.000Z' });

  it('the first push takes it and names itself in the file', () => {
    assert.deepEqual(takeDeployLock(dir, holder(10), () => true), { taken: true });
    assert.equal(JSON.parse(readFileSync(path.join(dir, DEPLOY_LOCK), 'utf8')).pid, 10);
  });
  it('a second push is told who holds it while that push lives', () => {
    takeDeployLock(dir, holder(10, 'b'.repeat(40)), () => true);
    assert.deepEqual(takeDeployLock(dir, holder(11), (pid) => pid === 10), { taken: false, holder: holder(10, 'b'.repeat(40)) });
  });
  it('a lock whose push is gone is taken over', () => {
    takeDeployLock(dir, holder(10), () => true);
    assert.deepEqual(takeDeployLock(dir, holder(11), () => false), { taken: true });
    assert.equal(JSON.parse(readFileSync(path.join(dir, DEPLOY_LOCK), 'utf8')).pid, 11);
  });
  it('a half-written lock is stale', () => {
    writeFileSync(path.join(dir, DEPLOY_LOCK), '{"pi');
    assert.deepEqual(takeDeployLock(dir, holder(11), () => true), { taken: true });
  });
  it('the same process taking it again is not blocked by itself', () => {
    takeDeployLock(dir, holder(10), () => true);
    assert.deepEqual(takeDeployLock(dir, holder(10), () => true), { taken: true });
  });
  it('processAlive: this process lives, an unused pid does not', () => {
    assert.equal(processAlive(process.pid), true);
    assert.equal(processAlive(2 ** 22 + 1), false);
  });
});
