import assert from 'node:assert/strict';
import { Chalk } from 'chalk';
import { ReplayFilter, parseLogLine, type DeviceLogEntry } from '../../src/lib/device/logs.js';
import { logLineFormatter } from '../../src/ui/log-line.js';

const T = Date.parse('2026-11-30T12:00:00.123Z');
const at = (timestamp: number, message: string, serviceName = 'main'): DeviceLogEntry => ({ message, timestamp, serviceName });

/** What a ReplayFilter lets through of `entries`, with a reconnect before each index in `reconnectAt`. */
function shown(entries: DeviceLogEntry[], reconnectAt: number[] = []): string[] {
  const f = new ReplayFilter();
  return entries.flatMap((e, i) => {
    if (reconnectAt.includes(i)) f.reconnected();
    return f.isNew(e) ? [`${e.serviceName ?? (e.isSystem ? 'system' : '')}@${e.timestamp ?? '-'}:${e.message}`] : [];
  });
}

describe('device logs: replays after a reconnect (ReplayFilter)', () => {
  it('shows identical lines as many times as they were written, even in the same millisecond', () => {
    assert.equal(shown([at(T, 'same'), at(T, 'same'), at(T, 'same')]).length, 3);
    assert.equal(shown([at(T, 'same'), at(T + 1, 'same'), at(T + 1, 'same')]).length, 3);
  });

  it('skips the replayed history after a reconnect, and shows what came after it', () => {
    const before = [at(T, 'a'), at(T + 1, 'same'), at(T + 1, 'same')];
    const replay = [...before, at(T + 2, 'new')];
    assert.deepEqual(shown([...before, ...replay], [3]), [`main@${T}:a`, `main@${T + 1}:same`, `main@${T + 1}:same`, `main@${T + 2}:new`]);
  });

  it('in the last millisecond seen, skips only as many as were shown: a third `same` written during the drop is shown', () => {
    const before = [at(T, 'same'), at(T, 'same')];
    const replay = [at(T, 'same'), at(T, 'same'), at(T, 'same')];
    assert.equal(shown([...before, ...replay], [2]).length, 3);
  });

  it('a device that replays nothing (a balenaOS supervisor) loses nothing', () => {
    const entries = [at(T, 'one'), at(T, 'one'), at(T + 5, 'two'), at(T + 5, 'two')];
    assert.equal(shown(entries, [2]).length, 4);
  });

  it('keeps a watermark per source: a slow service\'s older lines are not taken for replays of another\'s', () => {
    const before = [at(T + 10, 'web late', 'web'), at(T, 'worker early', 'worker')];
    const replay = [...before, at(T + 1, 'worker next', 'worker'), { message: 'system up', timestamp: T + 2, isSystem: true }];
    assert.deepEqual(shown([...before, ...replay], [2]), [`web@${T + 10}:web late`, `worker@${T}:worker early`, `worker@${T + 1}:worker next`, `system@${T + 2}:system up`]);
  });

  it('after the replay ends, the same timestamp counts on (several reconnects in a row)', () => {
    const first = [at(T, 'x'), at(T, 'x')];
    const second = [at(T, 'x'), at(T, 'x'), at(T, 'x')];
    const third = [at(T, 'x'), at(T, 'x'), at(T, 'x'), at(T, 'x'), at(T + 1, 'y')];
    assert.equal(shown([...first, ...second, ...third], [2, 5]).length, 5);
  });

  it('an agent restarted with an empty buffer re-reads container logs: those are skipped, its new system messages shown', () => {
    const before = [{ message: 'Agent started', timestamp: T, isSystem: true }, at(T + 1, 'same'), at(T + 1, 'same')];
    const after = [{ message: 'Agent started', timestamp: T + 500, isSystem: true }, at(T + 1, 'same'), at(T + 1, 'same'), at(T + 600, 'same')];
    assert.deepEqual(shown([...before, ...after], [3]), [`system@${T}:Agent started`, `main@${T + 1}:same`, `main@${T + 1}:same`, `system@${T + 500}:Agent started`, `main@${T + 600}:same`]);
  });

  it('entries without a timestamp cannot be placed, so they are always shown', () => {
    const streaming: DeviceLogEntry = { message: 'Streaming logs', isSystem: true };
    assert.equal(shown([streaming, at(T, 'a'), streaming, at(T, 'a')], [2]).length, 3);
  });
});

describe('device logs: entries of any shape (parseLogLine)', () => {
  it('reads the wire shape', () => {
    assert.deepEqual(parseLogLine(JSON.stringify({ message: 'hi', timestamp: T, isSystem: false, isStdErr: true, serviceName: 'main', serviceId: 3, appId: 1 })), { message: 'hi', timestamp: T, isStdErr: true, serviceName: 'main', serviceId: 3 });
  });

  const odd: Array<[string, string, DeviceLogEntry]> = [
    ['balena\'s first line, without a timestamp', '{"message":"Streaming logs","isSystem":true}', { message: 'Streaming logs', isSystem: true }],
    ['a line that is not JSON', 'plain text\r', { message: 'plain text' }],
    ['half a JSON object', '{"message":"cut', { message: '{"message":"cut' }],
    ['JSON that is not an object', '42', { message: '42' }],
    ['a JSON string', '"just words"', { message: 'just words' }],
    ['an array', '[1,2]', { message: '[1,2]' }],
    ['null', 'null', { message: 'null' }],
    ['a message that is a number', '{"message":7,"timestamp":1}', { message: '7', timestamp: 1 }],
    ['a message that is an object', '{"message":{"a":1},"serviceName":"w"}', { message: '{"a":1}', serviceName: 'w' }],
    ['no message at all', '{"timestamp":5,"serviceName":"w"}', { message: '{"timestamp":5,"serviceName":"w"}', timestamp: 5, serviceName: 'w' }],
    ['a timestamp as an ISO string', '{"message":"m","timestamp":"2026-11-30T12:00:00.123Z"}', { message: 'm', timestamp: T }],
    ['a timestamp as a string of digits', `{"message":"m","timestamp":"${T}"}`, { message: 'm', timestamp: T }],
    ['a timestamp that is not one', '{"message":"m","timestamp":"soon"}', { message: 'm' }],
    ['fields of the wrong type', '{"message":"m","isSystem":"yes","serviceName":5,"serviceId":"3"}', { message: 'm' }],
    ['a service id without a name', '{"message":"m","serviceId":3,"isStdout":false}', { message: 'm', serviceId: 3, isStdErr: true }],
  ];
  for (const [what, line, entry] of odd) {
    it(`${what}: printed as well as it can be`, () => {
      assert.deepEqual(parseLogLine(line), entry);
    });
  }
});

describe('device logs: one line for people (logLineFormatter)', () => {
  const format = logLineFormatter(new Chalk({ level: 0 }));

  it('time, [service] and message; [system] for the agent', () => {
    assert.equal(format({ message: 'hello', timestamp: T, serviceName: 'web' }), '2026-11-30 12:00:00 [web] hello');
    assert.equal(format({ message: 'Applied', timestamp: T, isSystem: true }), '2026-11-30 12:00:00 [system] Applied');
  });

  it('never throws on what a device may send: no timestamp, an impossible one, no service name', () => {
    const blank = ' '.repeat(19);
    assert.equal(format({ message: 'Streaming logs', isSystem: true }), `${blank} [system] Streaming logs`);
    assert.equal(format({ message: 'm', timestamp: 9e15, serviceName: 'web' }), `${blank} [web] m`);
    assert.equal(format({ message: 'm', timestamp: T, serviceId: 3 }), '2026-11-30 12:00:00 [service 3] m');
    assert.equal(format({ message: 'raw line' }), `${blank} raw line`);
  });

  it("shows a device's control sequences instead of obeying them, but keeps its colours and tabs (a service or a device key wrote the owner's clipboard with OSC 52)", () => {
    const osc = '\u001b]52;c;cm0gLXJmIH4K\u0007';
    assert.equal(format({ message: `a${osc}b`, timestamp: T, serviceName: 'web' }), '2026-11-30 12:00:00 [web] a\\x1b]52;c;cm0gLXJmIH4K\\x07b');
    assert.equal(format({ message: 'fake\rline', timestamp: T, isSystem: true }), '2026-11-30 12:00:00 [system] fake\\x0dline');
    assert.equal(format({ message: 'x', timestamp: T, serviceName: 'w\u001b[2Jeb' }), '2026-11-30 12:00:00 [w\\x1b[2Jeb] x');
    assert.equal(format({ message: '\u001b[31mred\u001b[0m\tcol \u001b[1;32mgreen\u001b[m', timestamp: T, serviceName: 'web' }), '2026-11-30 12:00:00 [web] \u001b[31mred\u001b[0m\tcol \u001b[1;32mgreen\u001b[m');
  });
});
