import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { Chalk } from 'chalk';
import type { BuildEvent } from '../../src/lib/builder/release.js';
import type { BuildProgress } from '../../src/lib/docker/image-build.js';
import { cells, displayLine, fit, liveFrame, type LiveClock } from '../../src/ui/build-live-view.js';
import { BuildRenderer } from '../../src/ui/build-renderer.js';
import { Output } from '../../src/ui/output.js';

const T0 = Date.UTC(2026, 11, 1, 6, 0, 0);

/** A clock whose time moves only when the test says, and whose timers run then. */
function fakeClock(): LiveClock & { advance(ms: number): void; pending(): number } {
  let t = T0;
  const timers: Array<{ at: number; fn: () => void; live: boolean }> = [];
  return {
    now: () => t,
    schedule(fn, ms) {
      const timer = { at: t + ms, fn, live: true };
      timers.push(timer);
      return () => { timer.live = false; };
    },
    advance(ms) {
      const end = t + ms;
      for (;;) {
        const due = timers.filter((x) => x.live && x.at <= end).sort((a, b) => a.at - b.at)[0];
        if (!due) break;
        t = due.at;
        due.live = false;
        due.fn();
      }
      t = end;
    },
    pending: () => timers.filter((x) => x.live).length,
  };
}

/**
 * What a terminal `columns` wide shows after these writes: enough of a VT100 for what the view
 * sends (newline, carriage return, cursor up, erase below, erase line). A long line wraps as on a
 * terminal, so a frame line that wrapped would leave garbage the assertions see.
 */
function screen(text: string, columns: number): string[] {
  const rows: string[] = [''];
  let row = 0;
  let col = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] ?? '';
    if (ch === '\u001b') {
      // eslint-disable-next-line no-control-regex -- parsing escape sequences is the point
      const m = /^\u001b\[(\d*)([A-Za-z])/.exec(text.slice(i));
      assert.ok(m, `unknown escape at ${JSON.stringify(text.slice(i, i + 8))}`);
      const n = Number(m[1] || '1');
      if (m[2] === 'A') row = Math.max(0, row - n);
      else if (m[2] === 'J') { rows[row] = (rows[row] ?? '').slice(0, col); rows.length = row + 1; }
      else if (m[2] === 'K') rows[row] = '';
      else if (m[2] !== 'm') assert.fail(`unexpected escape ${m[0]}`);
      i += m[0].length - 1;
    } else if (ch === '\n') {
      row++;
      col = 0;
      while (rows.length <= row) rows.push('');
    } else if (ch === '\r') col = 0;
    else {
      if (col === columns) {
        row++;
        col = 0;
        while (rows.length <= row) rows.push('');
      }
      const line = rows[row] ?? '';
      rows[row] = line.slice(0, col).padEnd(col) + ch + line.slice(col + 1);
      col++;
    }
  }
  if (rows.at(-1) === '') rows.pop();
  return rows;
}

function setup(options: { tty: boolean; columns?: number; live?: boolean; showLogs?: boolean }) {
  const chunks: string[] = [];
  const stderr = new Writable({ write(chunk: Buffer, _enc, done) { chunks.push(chunk.toString()); done(); } });
  let stdout = '';
  const columns = options.columns ?? 80;
  const out = new Output({
    json: false, terminal: { interactive: options.tty, stderrIsTTY: options.tty, colorLevel: 0, columns },
    chalk: new Chalk({ level: 0 }), stderr, stdout: new Writable({ write(chunk: Buffer, _enc, done) { stdout += chunk.toString(); done(); } }),
  });
  const clock = fakeClock();
  const renderer = new BuildRenderer(out, { showLogs: options.showLogs ?? true, live: options.live ?? true, clock });
  return {
    renderer, clock, chunks,
    feed: (events: BuildEvent[]) => { for (const e of events) renderer.event(e); },
    text: () => chunks.join(''),
    screen: () => screen(chunks.join(''), columns),
    stdout: () => stdout,
  };
}

const PIP = '[stage-0 3/7] RUN pip install -r requirements.txt';
const pip = (over: Partial<BuildProgress> = {}): BuildProgress => ({
  done: 2, cached: 2, total: 7, running: [{ name: PIP, startedAt: T0 - 12_400 }],
  lastLines: ['Collecting click', 'Collecting flask', 'Downloading flask-3.0.0-py3-none-any.whl (101 kB)'], ...over,
});
const start: BuildEvent[] = [
  { kind: 'plan', services: ['web', 'worker'], deviceType: 'intel-nuc', arch: 'amd64', platform: 'linux/amd64', engine: 'local' },
  { kind: 'builder', builder: 'buildkit', message: 'Building with BuildKit (engine 20.10.24)' },
  { kind: 'service-start', service: 'web' },
];

describe('build: the live view of BuildKit builds', () => {
  it('a frame for one service at 80 columns: step, elapsed, cached, the last 3 lines under the step', () => {
    const lines = liveFrame([{ service: 'web', progress: pip() }], { now: T0, columns: 80, nameWidth: 6 });
    assert.deepEqual(lines, [
      'web     [3/7] RUN pip install -r requirements.txt  12.4s · 2 cached',
      '        Collecting click',
      '        Collecting flask',
      '        Downloading flask-3.0.0-py3-none-any.whl (101 kB)',
    ]);
  });

  it('two services at 40 columns: the step name gives way first, output lines are cut, nothing reaches the edge', () => {
    const worker: BuildProgress = { done: 1, cached: 0, total: 5, running: [{ name: '[stage-0 2/5] COPY . .', startedAt: T0 - 300 }], lastLines: [] };
    const lines = liveFrame([{ service: 'web', progress: pip() }, { service: 'worker', progress: worker }], { now: T0, columns: 40, nameWidth: 6 });
    assert.deepEqual(lines, [
      'web     [3/7] RUN pi…  12.4s · 2 cached',
      '        Collecting click',
      '        Collecting flask',
      '        Downloading flask-3.0.0-py3-no…',
      'worker  [2/5] COPY . .  0.3s',
    ]);
    for (const l of lines) assert.ok(cells(l) < 40, l);
  });

  it('a very narrow terminal: names and steps are cut, still no line reaches the edge', () => {
    for (const columns of [12, 20, 30]) {
      const lines = liveFrame([{ service: 'a-long-service-name', progress: pip() }, { service: 'db' }], { now: T0, columns, nameWidth: 19 });
      for (const l of lines) assert.ok(cells(l) < columns, `${columns}: ${l}`);
      assert.equal(lines.length, 5);
    }
  });

  it('several steps at once: the oldest, "+N more"; a service not started yet says "preparing"', () => {
    const p = pip({ running: [{ name: PIP, startedAt: T0 - 2000 }, { name: '[builder 2/4] RUN make', startedAt: T0 - 1000 }, { name: '[builder 3/4] RUN x', startedAt: T0 }] });
    const lines = liveFrame([{ service: 'web', progress: p }, { service: 'db' }], { now: T0, columns: 80, nameWidth: 3 });
    assert.equal(lines[0], 'web  [3/7] RUN pip install -r requirements.txt  +2 more  2.0s · 2 cached');
    assert.equal(lines.at(-1), 'db   preparing');
  });

  it('many services keep the area small enough for a small terminal: fewer output lines, then "+N more services"', () => {
    const six = ['a', 'b', 'c', 'd', 'e', 'f'].map((service) => ({ service, progress: pip() }));
    const lines = liveFrame(six, { now: T0, columns: 80, nameWidth: 1 });
    assert.equal(lines.length, 6 * 2, 'one output line each');
    const many = Array.from({ length: 20 }, (_, i) => ({ service: `s${i}`, progress: pip() }));
    const capped = liveFrame(many, { now: T0, columns: 80, nameWidth: 3 });
    assert.equal(capped.length, 16);
    assert.equal(capped.at(-1), '+5 more services building');
    // A short terminal: the area stays two lines under its height (found with 6 services in 80x14).
    const short = liveFrame(six, { now: T0, columns: 80, rows: 7, nameWidth: 1 });
    assert.equal(short.length, 5);
    assert.equal(short.at(-1), '+2 more services building');
  });

  it('output lines as a terminal shows them: the last \\r frame, no escapes or tabs; wide characters counted as two cells', () => {
    assert.equal(displayLine('10%\r50%\r100% done\r'), '100% done');
    assert.equal(displayLine('\u001b[31mred\u001b[0m\tx\u0007'), 'red    x');
    assert.equal(fit('日本語のテキスト', 7), '日本語…');
    assert.equal(cells(fit('日本語のテキスト', 7)), 7);
    assert.equal(fit('short', 10), 'short');
  });

  it('on a terminal: BuildKit log lines are not printed, the frame is drawn in place and the done line stays above it', () => {
    const s = setup({ tty: true });
    s.feed([...start, { kind: 'service-start', service: 'worker' }, { kind: 'progress', service: 'web', progress: pip() }]);
    s.feed([{ kind: 'log', service: 'web', line: '#7 [stage-0 3/7] RUN pip install -r requirements.txt' }, { kind: 'log', service: 'web', line: '#7 0.512 Collecting flask' }]);
    s.clock.advance(100);
    assert.doesNotMatch(s.text(), /#7/, 'no log line in live mode');
    assert.deepEqual(s.screen().slice(2), [
      'web     [3/7] RUN pip install -r requirements.txt  12.5s · 2 cached',
      '        Collecting click',
      '        Collecting flask',
      '        Downloading flask-3.0.0-py3-none-any.whl (101 kB)',
      'worker  preparing',
    ]);
    s.feed([{ kind: 'service-done', service: 'worker', result: { service: 'worker', image: 'app_worker:latest', imageId: 'sha256:1', size: 1, architecture: 'amd64', source: 'build', buildSeconds: 4.1, steps: 5, cachedSteps: 5, builder: 'buildkit', stepTimes: [] } }]);
    const after = s.screen();
    assert.equal(after[2], '[worker] done app_worker:latest (4.1s, 5/5 steps cached)');
    assert.match(after[3] ?? '', /^web {5}\[3\/7\]/);
    assert.equal(after.length, 7);
    s.renderer.stop();
    assert.equal(s.clock.pending(), 0, 'no timer left running');
  });

  it('redraws at most every 100 ms, with the latest state, and keeps the step clock ticking', () => {
    const s = setup({ tty: true });
    s.feed(start);
    const frames = () => s.chunks.filter((c) => c.includes('web     ')).length;
    for (let i = 0; i < 50; i++) s.feed([{ kind: 'progress', service: 'web', progress: pip({ lastLines: [`line ${i}`] }) }]);
    // The first frame ('preparing') is drawn at once; the 50 snapshots wait for the next frame.
    assert.equal(frames(), 1);
    s.clock.advance(99);
    assert.equal(frames(), 1);
    s.clock.advance(1);
    assert.equal(frames(), 2);
    assert.deepEqual(s.screen().slice(2), ['web     [3/7] RUN pip install -r requirements.txt  12.5s · 2 cached', '        line 49']);
    s.clock.advance(1000);
    assert.equal(frames(), 12, 'one frame per 100 ms while nothing else happens');
    assert.match(s.screen()[2] ?? '', /13\.5s · 2 cached$/);
    s.renderer.stop();
    assert.equal(s.clock.pending(), 0);
    s.clock.advance(1000);
    assert.equal(frames(), 12, 'nothing drawn after stop()');
  });

  it('a warning printed during the view appears once, above the frame, which is drawn again under it', () => {
    const s = setup({ tty: true });
    s.feed([...start, { kind: 'progress', service: 'web', progress: pip({ lastLines: [] }) }, { kind: 'warning', message: 'the build context is over 1 GB' }]);
    assert.equal(s.text().split('Warning: the build context is over 1 GB').length - 1, 1);
    assert.deepEqual(s.screen().slice(2), ['Warning: the build context is over 1 GB', 'web     [3/7] RUN pip install -r requirements.txt  12.4s · 2 cached']);
    s.renderer.stop();
  });

  it('stop() (a failed or cancelled build) erases the view: only the lines printed for good remain', () => {
    const s = setup({ tty: true, columns: 40 });
    s.feed([...start, { kind: 'service-start', service: 'worker' }, { kind: 'progress', service: 'web', progress: pip() }, { kind: 'service-failed', service: 'worker', message: 'boom' }]);
    s.clock.advance(250);
    s.renderer.stop();
    assert.deepEqual(s.screen().slice(-2), ['Building with BuildKit (engine 20.10.24)', '[worker] failed']);
    assert.doesNotMatch(s.screen().join('\n'), /RUN pip|Collecting|preparing/);
    assert.equal(s.clock.pending(), 0);
  });

  it('the classic builder in live mode shows every log line as today', () => {
    const s = setup({ tty: true });
    s.feed([start[0] as BuildEvent, { kind: 'builder', builder: 'classic', message: 'Building with the classic builder' }, { kind: 'service-start', service: 'web' }, { kind: 'log', service: 'web', line: 'Step 1/2 : FROM busybox' }]);
    assert.match(s.text(), /^\[web\] {4}Step 1\/2 : FROM busybox$/m);
    assert.ok(!s.text().includes('\u001b'), 'no live area');
    assert.equal(s.clock.pending(), 0);
  });

  it('without a terminal the output is what it was: prefixed lines, no escape sequences, progress ignored', () => {
    const s = setup({ tty: false });
    s.feed([...start, { kind: 'progress', service: 'web', progress: pip() }, { kind: 'log', service: 'web', line: '#5 [stage-0 2/6] COPY . .' }, { kind: 'log', service: 'web', line: '#5 DONE 0.3s' }]);
    assert.equal(s.text(), [
      'Building 2 services (web, worker) for intel-nuc (amd64, linux/amd64) on local',
      'Building with BuildKit (engine 20.10.24)',
      '[web]    building',
      '[web]    #5 [stage-0 2/6] COPY . .',
      '[web]    #5 DONE 0.3s',
      '',
    ].join('\n'));
    assert.equal(s.clock.pending(), 0);
  });
});
