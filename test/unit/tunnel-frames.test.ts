import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { EXEC_FRAME, MAX_EXEC_FRAME_BYTES, type ExecFrame } from '../../src/lib/api/tunnel.js';
import { encodeControl, encodeFrame, encodeFrames, FrameDecoder, parseControl } from '../../src/lib/tunnel/frames.js';
import { parseOpen } from '../../src/lib/tunnel/mux.js';

async function decodeAll(chunks: Buffer[]): Promise<ExecFrame[]> {
  const out: ExecFrame[] = [];
  for await (const f of Readable.from(chunks).pipe(new FrameDecoder())) out.push(f as ExecFrame);
  return out;
}

describe('tunnel exec frames (Docker attach header)', () => {
  it('encodes the 8-byte header: type, three zero bytes, big-endian length', () => {
    const f = encodeFrame(EXEC_FRAME.stderr, Buffer.from('hey'));
    assert.deepEqual([...f.subarray(0, 8)], [2, 0, 0, 0, 0, 0, 0, 3]);
    assert.equal(f.subarray(8).toString(), 'hey');
  });

  it('cuts frames back out whatever the chunking (byte by byte, all at once, split headers)', async () => {
    const frames = [encodeFrame(EXEC_FRAME.stdout, Buffer.from('out')), encodeFrame(EXEC_FRAME.stderr, Buffer.alloc(0)), encodeControl({ type: 'exit', code: 3 })];
    const all = Buffer.concat(frames);
    for (const chunks of [[all], [...all].map((b) => Buffer.from([b])), [all.subarray(0, 5), all.subarray(5, 13), all.subarray(13)]]) {
      const got = await decodeAll(chunks);
      assert.deepEqual(got.map((f) => [f.type, f.payload.toString()]), [[1, 'out'], [2, ''], [3, '{"type":"exit","code":3}']]);
    }
  });

  it('joins large frames cut in many pieces (16 KiB, as HTTP/2 cuts them, or odd sizes) byte for byte', async () => {
    const payloads = [Buffer.alloc(300_000, 7), Buffer.from('between'), Buffer.alloc(MAX_EXEC_FRAME_BYTES, 1)];
    const all = Buffer.concat(payloads.map((p) => encodeFrame(EXEC_FRAME.stdin, p)));
    for (const size of [16 * 1024, 4093]) {
      const chunks: Buffer[] = [];
      for (let at = 0; at < all.length; at += size) chunks.push(all.subarray(at, at + size));
      const got = await decodeAll(chunks);
      assert.equal(got.length, payloads.length);
      for (const [i, f] of got.entries()) assert.ok(f.payload.equals(payloads[i] ?? Buffer.alloc(0)), `frame ${i} in pieces of ${size}`);
    }
  });

  it('splits a large payload into frames of at most the given size', () => {
    const parts = encodeFrames(EXEC_FRAME.stdin, Buffer.alloc(150_000, 1), 64 * 1024);
    assert.deepEqual(parts.map((p) => p.length - 8), [65536, 65536, 150_000 - 131072]);
  });

  it('refuses an unknown type, a frame over the limit, and a stream that ends inside a frame', async () => {
    const bad = Buffer.from([9, 0, 0, 0, 0, 0, 0, 0]);
    await assert.rejects(decodeAll([bad]), /unknown exec frame type 9/);
    const big = Buffer.alloc(8);
    big[0] = 1;
    big.writeUInt32BE(MAX_EXEC_FRAME_BYTES + 1, 4);
    await assert.rejects(decodeAll([big]), /over the 1048576-byte limit/);
    await assert.rejects(decodeAll([encodeFrame(1, Buffer.from('abcdef')).subarray(0, 10)]), /ended inside a frame/);
  });

  const controls: Array<[string, unknown]> = [
    ['{"type":"resize","cols":120,"rows":40}', { type: 'resize', cols: 120, rows: 40 }],
    ['{"type":"resize","cols":0,"rows":40}', undefined],
    ['{"type":"resize","cols":1.5,"rows":40}', undefined],
    ['{"type":"signal","signal":"SIGINT"}', { type: 'signal', signal: 'SIGINT' }],
    ['{"type":"signal","signal":"SIGSTOP"}', undefined],
    ['{"type":"exit","code":0}', { type: 'exit', code: 0 }],
    ['{"type":"exit","code":256}', undefined],
    ['{"type":"error","message":"x"}', { type: 'error', message: 'x' }],
    ['{"type":"later-version"}', undefined],
    ['not json', undefined],
    ['null', undefined],
  ];
  for (const [text, want] of controls) {
    it(`control ${text} → ${JSON.stringify(want)}`, () => assert.deepEqual(parseControl(Buffer.from(text)), want));
  }
});

describe('tunnel open requests (the OPEN frame\'s JSON)', () => {
  it('round-trips every kind', () => {
    for (const open of [
      { kind: 'tcp', port: 80 }, { kind: 'tcp', port: 65535, service: 'web' },
      { kind: 'exec', tty: true, service: 'web', cols: 80, rows: 24, term: 'xterm-256color' },
      { kind: 'exec', tty: false, command: "echo 'a b' | wc -c" },
    ] as const) assert.deepEqual(parseOpen(JSON.stringify(open)), open);
  });

  const bad: Array<[string, unknown]> = [
    ['port 0', { kind: 'tcp', port: 0 }], ['port 65536', { kind: 'tcp', port: 65536 }], ['port as text', { kind: 'tcp', port: '80' }],
    ['service with a slash', { kind: 'tcp', port: 80, service: '../x' }], ['unknown kind', { kind: 'udp', port: 53 }],
    ['exec without tty', { kind: 'exec' }], ['empty command', { kind: 'exec', tty: false, command: '' }],
    ['cols 0', { kind: 'exec', tty: true, cols: 0 }], ['TERM with a space', { kind: 'exec', tty: true, term: 'x y' }],
  ];
  for (const [name, value] of bad) {
    it(`refuses ${name}`, () => assert.equal(parseOpen(JSON.stringify(value)), undefined));
  }
  it('refuses null, a list, and what is not JSON', () => {
    assert.equal(parseOpen('null'), undefined);
    assert.equal(parseOpen('["a","b"]'), undefined);
    assert.equal(parseOpen('%%%'), undefined);
  });
});
