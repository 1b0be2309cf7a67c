/**
 * The agent started where it cannot keep its state: one line saying where and why, an exit code,
 * never "a bug in skiff" or a hang.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { runCli } from '../support/cli.js';
import { isRoot, requireOrSkip } from '../support/prerequisites.js';
import { scratchDir } from '../support/tmp.js';

const agentArgs = (dataDir: string) => ['agent', '--data-dir', dataDir, '--listen-address', '127.0.0.1', '--listen-port', '48999', '--engine-port', '0', '--no-advertise'];

function oneLine(stderr: string, message: RegExp): void {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0] ?? '', message);
  assert.doesNotMatch(stderr, /bug in skiff|at .*\.js:\d+/);
}

describe('agent start: a data folder it cannot use', () => {
  it('a file in the way: exit 1, one line naming the folder', async () => {
    const file = path.join(scratchDir('skiff-agent-start-'), 'file');
    writeFileSync(file, 'x');
    const r = await runCli(agentArgs(path.join(file, 'sub')));
    assert.equal(r.code, 1);
    oneLine(r.stderr, /^Error: cannot use .*file\/sub for the agent's state: a file is in the way \(not a folder\)/);
  });

  it('a kernel file system (/proc, where mkdir would never return): exit 2 at once', async () => {
    const r = await runCli(agentArgs('/proc/skiff-nope'));
    assert.equal(r.code, 2);
    oneLine(r.stderr, /^Error: cannot keep the agent's state in \/proc\/skiff-nope: it is a kernel file system/);
  });

  it('a folder this user may not write: exit 1, "permission denied" and what to do', async function () {
    const nobody = spawnSync('id', ['-u', 'nobody']).status === 0;
    requireOrSkip(this, isRoot() && nobody, 'root and a nobody user, to run the agent as a user without write access');
    const dir = path.join(scratchDir('skiff-agent-start-'), 'locked');
    mkdirSync(dir);
    chmodSync(path.dirname(dir), 0o755);
    chmodSync(dir, 0o755); // owned by root: nobody may not write in it
    const r = await runCli(agentArgs(dir), { wrap: ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'] });
    assert.equal(r.code, 1, r.stderr);
    oneLine(r.stderr, /cannot use .*locked for the agent's state: permission denied\. Run the agent as root, or pass --data-dir/);
  });
});
