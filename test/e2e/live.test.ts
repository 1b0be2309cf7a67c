/**
 * Live updates with real parts: `skiff push` (not detached) watching a project while the real
 * agent runs it on the real engine. Files are edited as a user would and the device is checked
 * over HTTP and through the engine.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { startCli, type CliResult } from '../support/cli.js';
import { BASE_AMD64, cleanupImages, docker, ensureBaseImages, makeProject } from '../support/engine.js';
import { cleanupAgent, eventually, freePort, startAgent, type TestAgent } from '../support/agent.js';

const RUN = randomBytes(3).toString('hex');
const LOOP = (body: string) => `trap 'exit 0' TERM; ${body}; while :; do sleep 1 & wait $!; done`;

describe('push: live updates', function () {
  let agent: TestAgent;
  let webPort: number;
  let project: string;
  let push: { child: ChildProcess; done: Promise<CliResult> };
  let output = '';

  const containerIds = async (): Promise<Record<string, string>> => {
    const list = await docker.listContainers({ filters: { label: [`io.skiff.agent=${agent.uuid}`] } });
    return Object.fromEntries(list.map((c) => [c.Labels['io.balena.service-name'] ?? '', c.Id]));
  };
  const web = async () => fetch(`http://127.0.0.1:${webPort}/`).then((r) => r.text()).catch(() => '');
  const edit = (rel: string, change: (text: string) => string) => {
    const file = path.join(project, rel);
    writeFileSync(file, change(readFileSync(file, 'utf8')));
  };
  const waitOutput = (re: RegExp, what: string, timeoutMs = 60_000) => eventually(async () => re.test(output), timeoutMs, `${what}; push printed:\n${output.slice(-3000)}`);

  before(async () => {
    await ensureBaseImages();
    agent = await startAgent();
    webPort = await freePort();
    project = makeProject(
      {
        'docker-compose.yml': [
          "version: '2.1'",
          'services:',
          '  web:',
          '    build: ./web',
          `    ports: ["${webPort}:80"]`,
          '  worker:',
          '    build: ./worker',
          '  cfg:',
          '    build: ./cfg',
          '',
        ].join('\n'),
        'web/Dockerfile': `FROM ${BASE_AMD64}\nCOPY index.html /www/index.html\nCMD ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait $!"]\n`,
        'web/index.html': 'web v1\n',
        'web/notes.txt': 'not in the image\n',
        'worker/Dockerfile': `FROM ${BASE_AMD64}\nCOPY run.sh /run.sh\nRUN chmod +x /run.sh\nCMD ["/run.sh"]\n`,
        'worker/run.sh': `#!/bin/sh\n${LOOP('echo worker says one')}\n`,
        'cfg/Dockerfile': `FROM ${BASE_AMD64}\nCMD ["sh", "-c", "${LOOP('echo cfg up')}"]\n`,
      },
      `live${RUN}`,
    );
    push = startCli(['push', `127.0.0.1:${agent.port}`, '--source', project, '--dockerPort', String(agent.enginePort)]);
    push.child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    push.child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    await waitOutput(/\[Live\] Watching/, 'push did not start watching', 120_000);
    assert.equal(await web(), 'web v1\n');
  });
  after(async () => {
    if (push.child.exitCode === null) push.child.kill('SIGKILL');
    await agent.kill('SIGKILL');
    await cleanupAgent(agent.uuid);
    await cleanupImages({ label: `io.skiff.project=live${RUN}` });
  });

  it('syncs a saved source file into the running container and restarts it (same container)', async () => {
    const before = await containerIds();
    edit('web/index.html', () => 'web v2\n');
    await eventually(async () => (await web()) === 'web v2\n', 30_000, 'the new page to be served');
    await waitOutput(/\[Live\] web: synced web\/index\.html → \/www\/index\.html; restarted the service\n\[Live\] done in/, 'the sync to be reported');
    assert.deepEqual(await containerIds(), before, 'a sync keeps every container');
  });

  // The first of these two tests makes the worker change the second one checks.
  let beforeRebuild: Record<string, string>;
  it('ignores files the image does not take, and saves that change nothing', async () => {
    beforeRebuild = await containerIds();
    const mark = output.length;
    edit('web/notes.txt', (t) => `${t}more\n`);
    edit('web/index.html', (t) => t); // same content, same size: a save without changes (new mtime) does nothing
    // A change that is reported, made after them: once it is, they were looked at too (in its
    // batch of changes or an earlier one), and each file is judged on its own.
    edit('worker/run.sh', (t) => t.replace('worker says one', 'worker says two'));
    await waitOutput(/worker: 'run\.sh' is used by the build: a RUN step comes after its COPY \(line 2\); rebuilding it/, 'the rebuild to start');
    assert.deepEqual(output.slice(mark).split('\n').filter((l) => l.includes('[Live]') && !l.includes('[Live] worker:')), []);
    assert.doesNotMatch(output.slice(mark), /notes\.txt|index\.html/);
  });

  it('rebuilds and replaces only the service whose RUN step uses the changed file', async () => {
    const before = beforeRebuild;
    await waitOutput(/\[Live\] worker: rebuilt and replaced/, 'the rebuild to finish', 120_000);
    await waitOutput(/worker says two/, 'the new worker output in the logs');
    const after = await containerIds();
    assert.notEqual(after.worker, before.worker, 'worker replaced');
    assert.equal(after.web, before.web, 'web untouched');
    assert.equal(after.cfg, before.cfg, 'cfg untouched');
    assert.equal(await web(), 'web v2\n', 'web still serves its synced page');
  });

  it('a live rebuild that fails keeps the device on what it runs, and push keeps watching', async () => {
    const before = await containerIds();
    edit('worker/Dockerfile', (t) => t.replace('RUN chmod +x /run.sh', 'RUN chmod +x /run.sh && exit 3'));
    await waitOutput(/\[Live\] worker: .*The device keeps its current release\./, 'the failure to be reported', 120_000);
    assert.deepEqual(await containerIds(), before);
    edit('worker/Dockerfile', (t) => t.replace(' && exit 3', ''));
    await waitOutput(/\[Live\] worker: rebuilt and replaced[\s\S]*\[Live\] worker: rebuilt and replaced/, 'the fixed Dockerfile to be rebuilt', 120_000);
  });

  it('a compose change pushes the whole project again', async () => {
    edit('docker-compose.yml', (t) => t.replace('    build: ./cfg', '    build: ./cfg\n    environment:\n      MODE: live'));
    await waitOutput(/docker-compose\.yml changed; pushing the whole project again/, 'the re-push to start');
    await waitOutput(/\[Live\] Release [0-9a-f]{12} runs/, 'the re-push to finish', 120_000);
    const cfg = (await containerIds()).cfg;
    assert.ok(cfg);
    const info = await docker.getContainer(cfg).inspect();
    assert.ok(info.Config.Env.includes('MODE=live'));
  });

  it('a compose error is reported on one line and push keeps watching', async () => {
    const before = await containerIds();
    edit('docker-compose.yml', (t) => t.replace('services:', 'services:\n  bad: [')); // YAML syntax error
    await waitOutput(/\[Live\] docker-compose\.yml:\d+/, 'the YAML error to be reported');
    assert.deepEqual(await containerIds(), before);
  });

  it('stops on Ctrl-C (exit 0) and the release keeps running', async () => {
    push.child.kill('SIGINT');
    const r = await push.done;
    assert.equal(r.code, 0, output.slice(-2000));
    assert.equal(await web(), 'web v2\n');
  });
});
