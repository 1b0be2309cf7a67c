/** The exec stream's frame decoder (tunnel/frames.ts): frames back whatever the chunking, and its errors. */
import assert from 'node:assert/strict';
import { EXEC_FRAME, MAX_EXEC_FRAME_BYTES, type ExecFrame, type ExecFrameType } from '../../src/lib/api/tunnel.js';
import { encodeFrame, FrameDecoder } from '../../src/lib/tunnel/frames.js';

/** Feeds `bytes` in pieces of the given sizes (cycled) and collects the frames, or the error. */
async function decode(bytes: Buffer, sizes: number[]): Promise<{ frames: ExecFrame[]; error?: Error }> {
  const decoder = new FrameDecoder();
  const frames: ExecFrame[] = [];
  decoder.on('data', (f: ExecFrame) => frames.push(f));
  const ended = new Promise<Error | undefined>((resolve) => {
    decoder.on('end', () => resolve(undefined));
    decoder.on('error', resolve);
  });
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const size = sizes[i % sizes.length] ?? 1;
    decoder.write(bytes.subarray(at, at + size));
    at += size;
  }
  decoder.end();
  const error = await ended;
  return error ? { frames, error } : { frames };
}

describe('tunnel frames: FrameDecoder', () => {
  const sent: Array<[ExecFrameType, Buffer]> = [
    [EXEC_FRAME.stdout, Buffer.from('hello')],
    [EXEC_FRAME.stderr, Buffer.alloc(0)],
    [EXEC_FRAME.stdin, Buffer.alloc(300_000, 7)],
    [EXEC_FRAME.control, Buffer.from('{"type":"exit","code":3}')],
    [EXEC_FRAME.stdout, Buffer.alloc(MAX_EXEC_FRAME_BYTES, 1)],
  ];
  const bytes = Buffer.concat(sent.map(([type, payload]) => encodeFrame(type, payload)));

  for (const sizes of [[1], [3, 5, 7], [8], [16 * 1024], [bytes.length]]) {
    it(`gives the frames back in pieces of ${sizes.length > 2 ? sizes.join('/') : sizes[0]} bytes`, async () => {
      const { frames, error } = await decode(bytes, sizes);
      assert.equal(error, undefined);
      assert.deepEqual(frames.map((f) => [f.type, f.payload.length]), sent.map(([t, p]) => [t, p.length]));
      for (const [i, f] of frames.entries()) assert.ok(f.payload.equals(sent[i]?.[1] ?? Buffer.alloc(0)), `frame ${i}`);
    });
  }

  it('refuses a frame over the size limit, an unknown type, and a stream ending inside a frame', async () => {
    const big = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);
    big.writeUInt32BE(MAX_EXEC_FRAME_BYTES + 1, 4);
    assert.match((await decode(big, [4])).error?.message ?? '', /over the 1048576-byte limit/);
    assert.match((await decode(Buffer.from([9, 0, 0, 0, 0, 0, 0, 1, 0]), [2])).error?.message ?? '', /unknown exec frame type 9/);
    assert.match((await decode(encodeFrame(EXEC_FRAME.stdout, Buffer.from('abc')).subarray(0, 9), [1])).error?.message ?? '', /ended inside a frame \(9 bytes left over\)/);
  });
});
