/**
 * The pure parts of the server's tunnel routes: what a session's query opens on the device and
 * how its log row names it, and the exit status read from an exec stream whatever its chunking.
 */
import assert from 'node:assert/strict';
import { clientAddressOf, describeSession } from '../../src/lib/server/http/routes/tunnels.js';
import { ExecExitWatcher } from '../../src/lib/tunnel/exec-exit.js';
import { encodeControl, encodeFrame, encodeFrames } from '../../src/lib/tunnel/frames.js';
import { EXEC_FRAME } from '../../src/lib/api/tunnel.js';

describe('server: tunnel sessions (routes/tunnels.ts, tunnel/exec-exit.ts)', () => {
  it('describes each kind of session as the device opens it and the log names it', () => {
    const table: Array<[Parameters<typeof describeSession>, ReturnType<typeof describeSession>]> = [
      [['tunnel', { port: '80' }], { open: { kind: 'tcp', port: 80 }, kind: 'tunnel', target: 'port 80' }],
      [['tunnel', { port: '8080', service: 'web' }], { open: { kind: 'tcp', port: 8080, service: 'web' }, kind: 'tunnel', target: 'web port 8080' }],
      [['exec', { service: 'web' }], { open: { kind: 'exec', tty: false, service: 'web' }, kind: 'ssh', target: 'web' }],
      [['exec', { service: 'web', command: 'ls -l', tty: '1', cols: '80', rows: '24', term: 'xterm' }],
        { open: { kind: 'exec', tty: true, service: 'web', command: 'ls -l', cols: 80, rows: 24, term: 'xterm' }, kind: 'ssh', target: 'web: ls -l' }],
      [['exec', { tty: '0' }], { open: { kind: 'exec', tty: false }, kind: 'ssh-host', target: 'host' }],
      [['exec', { command: 'uptime' }], { open: { kind: 'exec', tty: false, command: 'uptime' }, kind: 'ssh-host', target: 'host: uptime' }],
    ];
    for (const [args, expected] of table) assert.deepEqual(describeSession(...args), expected, JSON.stringify(args));
  });

  it('logs a relayed session\'s client address with the relay\'s own, and ignores a claim that is not an address', () => {
    assert.equal(clientAddressOf('10.0.0.5', true, '203.0.113.9'), '203.0.113.9 via 10.0.0.5');
    assert.equal(clientAddressOf('10.0.0.5', true, '2001:db8::1'), '2001:db8::1 via 10.0.0.5');
    assert.equal(clientAddressOf('10.0.0.5', false, '203.0.113.9'), '10.0.0.5', 'not relayed: the claim is not read');
    assert.equal(clientAddressOf('10.0.0.5', true, 'evil<script>'), '10.0.0.5');
    assert.equal(clientAddressOf('10.0.0.5', true, ['1.2.3.4', '5.6.7.8']), '10.0.0.5');
    assert.equal(clientAddressOf('10.0.0.5', true, undefined), '10.0.0.5');
  });

  it('reads the exit status from the device\'s frames, split at every byte boundary', () => {
    const stream = Buffer.concat([
      ...encodeFrames(EXEC_FRAME.stdout, Buffer.alloc(70_000, 1)),
      encodeFrame(EXEC_FRAME.stderr, Buffer.alloc(0)),
      encodeControl({ type: 'exit', code: 3 }),
    ]);
    const tail = stream.length - 40;
    for (let cut = tail; cut < stream.length; cut++) {
      const w = new ExecExitWatcher();
      w.feed(stream.subarray(0, 1));
      w.feed(stream.subarray(1, cut));
      assert.equal(w.exit, undefined, `cut ${cut}: no exit before its frame ends`);
      w.feed(stream.subarray(cut));
      assert.equal(w.exit, 3, `cut ${cut}`);
    }
    const byByte = new ExecExitWatcher();
    for (let i = 0; i < stream.length; i++) byByte.feed(stream.subarray(i, i + 1));
    assert.equal(byByte.exit, 3);
  });

  it('keeps the device\'s error message; stops watching (silently) a stream that is not frames', () => {
    const w = new ExecExitWatcher();
    w.feed(encodeControl({ type: 'error', message: 'no such service' }));
    assert.equal(w.error, 'no such service');
    const junk = new ExecExitWatcher();
    junk.feed(Buffer.from('HTTP/1.1 200 OK\r\n\r\n'));
    junk.feed(encodeControl({ type: 'exit', code: 0 }));
    assert.equal(junk.exit, undefined);
    const huge = new ExecExitWatcher();
    const header = Buffer.alloc(8);
    header[0] = EXEC_FRAME.control;
    header.writeUInt32BE(5000, 4);
    huge.feed(Buffer.concat([header, Buffer.alloc(5000, 0x20), encodeControl({ type: 'exit', code: 7 })]));
    assert.equal(huge.exit, 7, 'an oversized control frame is skipped, the next one read');
  });
});
