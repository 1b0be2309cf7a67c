import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { Chalk } from 'chalk';
import type { Build, RemoteBuildEvent } from '../../src/lib/api/builds.js';
import type { Release } from '../../src/lib/api/resources.js';
import type { PushEvent } from '../../src/lib/cloud/remote-build.js';
import { Output } from '../../src/ui/output.js';
import { RemoteBuildRenderer } from '../../src/ui/remote-build-renderer.js';

function capture(): { stream: Writable; text: () => string } {
  let text = '';
  return { stream: new Writable({ write(chunk: Buffer, _enc, done) { text += chunk.toString(); done(); } }), text: () => text };
}

function setup(options: { tty: boolean; json?: boolean }) {
  const err = capture();
  const std = capture();
  const out = new Output({
    json: options.json ?? false, terminal: { interactive: options.tty, stderrIsTTY: options.tty, colorLevel: 0, columns: 80 },
    chalk: new Chalk({ level: 0 }), stderr: err.stream, stdout: std.stream,
  });
  return { renderer: new RemoteBuildRenderer(out, { showLogs: !options.json }, err.stream), err, std };
}

const ID = `abcdef1${'0'.repeat(25)}`;
const build = { id: ID, fleet: 'kiosks', status: 'queued', contextBytes: 3000 } as Build;
const release = {
  commit: `1234567${'f'.repeat(25)}`, fleet: 'kiosks', isFinal: true,
  services: [{ name: 'main', image: `127.0.0.1:5000/x/main@sha256:${'e'.repeat(64)}`, size: 2048 }],
} as Release;

let seq = 0;
const env = (event: RemoteBuildEvent): PushEvent => ({ kind: 'build', envelope: { seq: ++seq, time: new Date(0).toISOString(), event } });

const journey: PushEvent[] = [
  { kind: 'git', info: { commit: 'c'.repeat(40), dirty: false, branch: 'main' } },
  { kind: 'packed', bytes: 3000, files: 2 },
  { kind: 'upload-progress', bytes: 1500, total: 3000 },
  { kind: 'upload-progress', bytes: 3000, total: 3000 },
  { kind: 'uploaded', build },
  env({ kind: 'queued', position: 1, behind: `7654321${'0'.repeat(25)}` }),
  env({ kind: 'started', engine: 'unix:///var/run/docker.sock' }),
  env({ kind: 'plan', services: ['main'], deviceType: 'intel-nuc', arch: 'amd64', platform: 'linux/amd64', engine: 'unix:///var/run/docker.sock' }),
  env({ kind: 'service-start', service: 'main' }),
  env({ kind: 'log', service: 'main', line: 'hello from RUN' }),
  { kind: 'reattach', attempt: 1, reason: 'other side closed' },
  env({ kind: 'push-start', service: 'main', image: 'reg/x/main:1234567' }),
  env({ kind: 'push-done', service: 'main', digest: `sha256:${'e'.repeat(64)}` }),
  env({ kind: 'release', release }),
  env({ kind: 'done', status: 'success', release: release.commit, error: null }),
];

describe('a cloud build as the user sees it', () => {
  it('without a terminal: clean prefixed lines from the upload to the release summary, no escape sequences', () => {
    const { renderer, err, std } = setup({ tty: false });
    for (const e of journey) renderer.push(e);
    renderer.summary(release);
    const text = err.text();
    const lines = text.trim().split('\n');
    assert.equal(lines[0], 'Stamping the release with git commit ccccccc (main)');
    assert.equal(lines[1], 'Uploading the project: 2 files, 2.9 KB');
    assert.doesNotMatch(text, /^Uploading\s+50%/m, 'a quick upload needs no progress line without a TTY');
    assert.match(text, /^Uploaded 2\.9 KB in .*; build abcdef1 is on the server \(skiff build-logs abcdef1 shows its output\)$/m);
    assert.match(text, /^Queued behind build 7654321 of this fleet; waiting\.\.\.$/m);
    assert.match(text, /^Building 1 service \(main\) for intel-nuc/m);
    assert.match(text, /^\[main\] hello from RUN$/m);
    assert.match(text, /re-attaching \(attempt 1\)/);
    assert.match(text, /^main: pushing reg\/x\/main:1234567$/m);
    assert.match(text, /^Release 1234567 created for fleet kiosks; devices tracking the fleet update now\.$/m);
    assert.match(std.text(), /^SERVICE\s+IMAGE\s+SIZE\nmain\s+127\.0\.0\.1:5000/);
    assert.ok(!text.includes('\u001b') && !text.includes('\r'));
  });

  it('on a terminal: the upload is one bar redrawn in place, ended before the next line', () => {
    const { renderer, err } = setup({ tty: true });
    for (const e of journey.slice(1, 5)) renderer.push(e);
    const text = err.text();
    assert.equal(text.split('\r\u001b[2K').length - 1, 2, 'the bar drawn twice, in place');
    assert.match(text, /█{30} Uploading 100%/);
    assert.match(text, /\nUploaded /, 'the bar\'s line ends before the next');
  });

  it('a dirty tree is a warning the command records; a build with nothing ahead is not "queued behind"', () => {
    const { renderer, err } = setup({ tty: false });
    const warning = renderer.push({ kind: 'git', info: { commit: 'c'.repeat(40), dirty: true } });
    assert.match(warning ?? '', /changes not committed to git.*ccccccc/);
    renderer.push(env({ kind: 'queued', position: 0, behind: null }));
    assert.doesNotMatch(err.text(), /Queued/);
  });

  it('under --json: nothing on stderr or stdout', () => {
    const { renderer, err, std } = setup({ tty: true, json: true });
    for (const e of journey) renderer.push(e);
    renderer.summary(release);
    assert.equal(err.text(), '');
    assert.equal(std.text(), '');
  });
});
