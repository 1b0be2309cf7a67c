/** The engine's exec output re-framed for a session (agent/cloud/tunnel.ts engineFrames), whatever the engine's chunking. */
import assert from 'node:assert/strict';
import { EXEC_FRAME, MAX_EXEC_FRAME_BYTES, type ExecFrame } from '../../src/lib/api/tunnel.js';
import { engineFrames } from '../../src/lib/agent/cloud/tunnel.js';
import { FrameDecoder } from '../../src/lib/tunnel/frames.js';

/** A frame as the engine writes it: [stream, 0, 0, 0, length uint32 BE] then the bytes. */
function engineFrame(stream: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

/** Runs `bytes` through engineFrames in pieces of `size`, and decodes what comes out. */
async function reframe(bytes: Buffer, size: number): Promise<ExecFrame[]> {
  const transform = engineFrames();
  const decoder = new FrameDecoder();
  const frames: ExecFrame[] = [];
  transform.pipe(decoder);
  decoder.on('data', (f: ExecFrame) => frames.push(f));
  const ended = new Promise((resolve, reject) => decoder.on('end', resolve).on('error', reject));
  for (let at = 0; at < bytes.length; at += size) transform.write(bytes.subarray(at, at + size));
  transform.end();
  await ended;
  return frames;
}

describe('agent tunnel: the engine\'s exec frames re-framed', () => {
  const big = Buffer.alloc(MAX_EXEC_FRAME_BYTES * 2 + 5, 9);
  const input = Buffer.concat([
    engineFrame(1, Buffer.from('out')),
    engineFrame(2, Buffer.from('err')),
    engineFrame(1, Buffer.alloc(0)),
    engineFrame(3, Buffer.from('engine says no')),
    engineFrame(1, big),
    engineFrame(2, Buffer.from('last')),
  ]);

  for (const size of [1, 7, 8, 9, 32 * 1024, input.length]) {
    it(`keeps streams, order and bytes in pieces of ${size} bytes; cuts a frame over the limit; the engine's errors are stderr`, async () => {
      const frames = await reframe(input, size);
      const summary = frames.map((f) => [f.type, f.payload.length]);
      assert.deepEqual(summary, [
        [EXEC_FRAME.stdout, 3], [EXEC_FRAME.stderr, 3], [EXEC_FRAME.stderr, 14],
        [EXEC_FRAME.stdout, MAX_EXEC_FRAME_BYTES], [EXEC_FRAME.stdout, MAX_EXEC_FRAME_BYTES], [EXEC_FRAME.stdout, 5],
        [EXEC_FRAME.stderr, 4],
      ]);
      assert.equal(frames[2]?.payload.toString(), 'engine says no');
      assert.ok(Buffer.concat(frames.slice(3, 6).map((f) => f.payload)).equals(big));
    });
  }
});
