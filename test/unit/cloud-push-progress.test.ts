import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { Chalk } from 'chalk';
import { describePush, PushProgressRenderer } from '../../src/ui/push-progress.js';
import { Output } from '../../src/ui/output.js';

function capture(): { stream: Writable; text: () => string } {
  let text = '';
  return { stream: new Writable({ write(chunk: Buffer, _enc, done) { text += chunk.toString(); done(); } }), text: () => text };
}

const MB = 1048576;

describe('deploy: push progress', () => {
  it('a line with percent, bytes, speed and ETA', () => {
    assert.equal(describePush(12 * MB, 48 * MB, 4), ' 25%  12.0 MB of 48.0 MB  3.0 MB/s  ETA 12.0s');
    assert.equal(describePush(0, 0, 0), '0 B');
    assert.equal(describePush(48 * MB, 48 * MB, 4), '100%  48.0 MB of 48.0 MB  12.0 MB/s');
  });

  it('without a terminal: plain lines (start, at most one progress line per 5 s, done), no escape sequences', () => {
    const err = capture();
    const out = new Output({ json: false, terminal: { interactive: false, stderrIsTTY: false, colorLevel: 0, columns: 80 }, chalk: new Chalk({ level: 0 }), stderr: err.stream, stdout: capture().stream });
    const r = new PushProgressRenderer(out, err.stream);
    r.start('main', 'reg/app/main:abc');
    for (let i = 1; i <= 100; i++) r.progress('main', i * MB, 100 * MB);
    r.done('main', `sha256:${'a'.repeat(64)}`);
    const lines = err.text().trim().split('\n');
    assert.equal(lines[0], 'main: pushing reg/app/main:abc');
    assert.match(lines.at(-1) ?? '', /^main: pushed sha256:aaaaaaaaaaaa \(100 MB in /);
    assert.ok(lines.length <= 3, lines.join('\n'));
    assert.ok(!err.text().includes('\u001b'));
  });

  it('under --json: nothing at all', () => {
    const err = capture();
    const out = new Output({ json: true, terminal: { interactive: true, stderrIsTTY: true, colorLevel: 0, columns: 80 }, chalk: new Chalk({ level: 0 }), stderr: err.stream, stdout: capture().stream });
    const r = new PushProgressRenderer(out, err.stream);
    r.start('main', 'x');
    r.progress('main', 1, 2);
    r.done('main', 'sha256:00');
    assert.equal(err.text(), '');
  });

  it('on a terminal: one bar per service, redrawn in place', () => {
    const err = capture();
    const out = new Output({ json: false, terminal: { interactive: true, stderrIsTTY: true, colorLevel: 0, columns: 80 }, chalk: new Chalk({ level: 0 }), stderr: err.stream, stdout: capture().stream });
    const r = new PushProgressRenderer(out, err.stream);
    r.start('main', 'x');
    r.start('db', 'y');
    r.progress('main', 5 * MB, 10 * MB);
    assert.ok(err.text().includes('\u001b[2A'), 'moves up over the two bars');
    assert.match(err.text(), /main █{12}░{12} {2}50% {2}5\.0 MB of 10\.0 MB/);
  });
});
