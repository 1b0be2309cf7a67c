import assert from 'node:assert/strict';
import { LogBuffer, splitTimestamp } from '../../src/lib/agent/logs.js';

describe('agent log buffer', () => {
  it('keeps the newest `capacity` entries, oldest first, and tells every listener each one', () => {
    const buffer = new LogBuffer(3);
    const heard: string[] = [];
    buffer.subscribe((e) => heard.push(e.message));
    assert.deepEqual(buffer.history(), []);
    for (const m of ['a', 'b']) buffer.system(m);
    assert.deepEqual(buffer.history().map((e) => e.message), ['a', 'b']);
    for (const m of ['c', 'd', 'e', 'f', 'g']) buffer.system(m);
    assert.deepEqual(buffer.history().map((e) => e.message), ['e', 'f', 'g']);
    buffer.system('h');
    assert.deepEqual(buffer.history().map((e) => e.message), ['f', 'g', 'h']);
    assert.deepEqual(heard, ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']);
  });

  it("splits the engine's timestamp off a line, and keeps a line without one whole", () => {
    const text = 'x\n2026-11-30T21:30:12.123456789Z hello world\r\n2026-11-30T21:30:13Z \nno time here\n2026-11-30T21:30:12Z';
    const lines: { message: string; timestamp: number }[] = [];
    let start = 0;
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', start)) {
      lines.push(splitTimestamp(text, start, nl));
      start = nl + 1;
    }
    assert.equal(lines[0]?.message, 'x');
    assert.deepEqual(lines[1], { message: 'hello world', timestamp: Date.parse('2026-11-30T21:30:12.123Z') });
    assert.deepEqual(lines[2], { message: '', timestamp: Date.parse('2026-11-30T21:30:13Z') });
    assert.equal(lines[3]?.message, 'no time here');
    assert.ok(Math.abs((lines[3]?.timestamp ?? 0) - Date.now()) < 5000, 'the time of arrival');
    // The last line has no newline yet: its time is not taken from the next line's text either.
    assert.equal(splitTimestamp('2026-11-30T21:30:12Z', 0, 20).message, '2026-11-30T21:30:12Z');
  });
});
