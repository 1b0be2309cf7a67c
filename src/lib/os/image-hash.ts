/**
 * SHA-256 of an image on a worker thread. On one core SHA-256 runs at about 2 GB/s, as fast as a
 * loop device takes writes, so hashing on the main thread would hold the writes up; on a worker
 * it overlaps them. Blocks backed by a SharedArrayBuffer are handed over without a copy; a block
 * may be reused once its update() has resolved.
 */
import { Worker } from 'node:worker_threads';

// Plain CommonJS, evaluated by the worker: no file to find next to the compiled module.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hash = createHash('sha256');
parentPort.on('message', (m) => {
  if (m.digest) parentPort.postMessage({ digest: hash.digest('hex') });
  else {
    hash.update(new Uint8Array(m.buffer, m.offset, m.length));
    parentPort.postMessage({});
  }
});
`;

interface Waiter {
  resolve: (digest?: string) => void;
  reject: (err: Error) => void;
}

/** A running SHA-256 fed block by block, in order. */
export class ImageHasher {
  private readonly worker: Worker;
  /** Replies come back in the order of the requests. */
  private readonly waiting: Waiter[] = [];
  private failure?: Error;

  constructor() {
    this.worker = new Worker(WORKER_SOURCE, { eval: true });
    this.worker.unref();
    this.worker.on('message', (m: { digest?: string }) => this.waiting.shift()?.resolve(m.digest));
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`the hashing thread exited (${code})`)));
  }

  /** Hashes `length` bytes of `buf`; a buffer not backed by shared memory is copied over. */
  update(buf: Buffer, length: number): Promise<void> {
    const shared = buf.buffer instanceof SharedArrayBuffer;
    const view = shared ? buf : Buffer.from(buf.subarray(0, length));
    return this.request({ buffer: view.buffer, offset: shared ? buf.byteOffset : view.byteOffset, length }).then(() => {});
  }

  /** The hex digest of everything fed so far. */
  async digest(): Promise<string> {
    const digest = await this.request({ digest: true });
    if (digest === undefined) throw new Error('the hashing thread gave no digest');
    return digest;
  }

  close(): void {
    this.failure ??= new Error('closed');
    void this.worker.terminate();
  }

  private request(message: object): Promise<string | undefined> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.worker.postMessage(message);
    });
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    for (const w of this.waiting.splice(0)) w.reject(err);
  }
}

/** A block buffer the hashing thread can read without a copy. */
export function sharedBlock(size: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(size));
}
