/** The part of unbzip2-stream that sources use (it ships no types). */
declare module 'unbzip2-stream' {
  import type { Duplex } from 'node:stream';

  /** A through-stream: bzip2 in, decompressed bytes out; emits 'error' on corrupt input. */
  export default function unbzip2Stream(): Duplex;
}
