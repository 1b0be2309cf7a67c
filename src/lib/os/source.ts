/**
 * Where an OS image comes from: a local file or an http(s) URL, raw or compressed (gzip, xz, zstd,
 * bzip2, or a zip holding one image). The format is told by the first bytes, not the name. The
 * image is decompressed as a stream; its size is known up front where the container says it (file
 * size, gzip trailer, xz index, zstd frame header, zip entry, Content-Length).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { access, open, stat } from 'node:fs/promises';
import { constants as fsConstants, createReadStream } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { PassThrough, Readable, Transform, pipeline, type Duplex } from 'node:stream';
import { SkiffError } from '../errors/errors.js';

export type ImageFormat = 'raw' | 'gzip' | 'xz' | 'zstd' | 'bzip2' | 'zip';

/** How the image's size was learnt, when it was. */
export type SizeOrigin = 'file' | 'gzip-trailer' | 'xz-index' | 'zstd-header' | 'zip-entry' | 'content-length';

/** Names inside a zip that count as an image when the zip holds other files too. */
const IMAGE_EXTENSIONS = ['.img', '.raw', '.iso', '.bin', '.wic', '.sdcard', '.hddimg'];

export interface ImageSource {
  /** The path or URL as given. */
  readonly location: string;
  readonly isUrl: boolean;
  readonly format: ImageFormat;
  /** The image's size in bytes, when known before reading it. */
  readonly size?: number;
  readonly sizeOrigin?: SizeOrigin;
  /** Bytes of the file or download itself (compressed), when known: progress while decompressing. */
  readonly compressedSize?: number;
  /** The image's name inside a zip. */
  readonly entryName?: string;
  /** A `.bmap` file found next to a local image. */
  readonly bmapPath?: string;
  /** For a raw local image: its path, so the writer can read blocks at offsets (and only the mapped ones of a bmap). */
  readonly file?: string;
  /** What decompresses it: a built-in decoder, or a system tool used instead because it is much faster. */
  decoderName(): Promise<string>;
  /** Compressed bytes read so far. */
  bytesRead(): number;
  /**
   * The decompressed image as a stream. Call once: a URL is downloaded once. Errors it emits are
   * raw (zlib, decoder); pass them to {@link sourceError}.
   */
  open(signal?: AbortSignal): Promise<Readable>;
}

/** Tells the format from an image's first bytes (at least 6 of them). */
export function detectFormat(head: Buffer): ImageFormat {
  const starts = (...bytes: number[]) => bytes.every((b, i) => head[i] === b);
  if (starts(0x1f, 0x8b)) return 'gzip';
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return 'xz';
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) return 'zstd';
  if (starts(0x42, 0x5a, 0x68) && head[3] !== undefined && head[3] >= 0x31 && head[3] <= 0x39) return 'bzip2';
  if (starts(0x50, 0x4b, 0x03, 0x04) || starts(0x50, 0x4b, 0x05, 0x06)) return 'zip';
  return 'raw';
}

/** A decompression or download failure as the one line a user reads. */
export function sourceError(source: Pick<ImageSource, 'location' | 'format'>, err: unknown): SkiffError {
  if (err instanceof SkiffError) return err;
  const e = err as NodeJS.ErrnoException;
  const detail = decoderDetail(source.format, ((e?.message ?? String(err)).split('\n', 1)[0] ?? '').replace(/\.$/, ''));
  if (source.format === 'raw') return new SkiffError('error', `could not read ${source.location}: ${detail}`, { cause: err });
  return new SkiffError('error', `${source.location} is corrupt or truncated (${source.format}: ${detail})`, {
    hint: 'download the image again',
    cause: err,
  });
}

/** What the decoders say, in words a user reads (xz-decompress gives liblzma-style codes, unbzip2-stream jokes). */
function decoderDetail(format: string, message: string): string {
  if (format === 'xz') {
    const code = /error code (\d+)/.exec(message)?.[1];
    const xzCodes: Record<string, string> = { '2': 'unsupported integrity check', '3': 'out of memory', '4': 'needs more memory', '5': 'not an xz stream', '6': 'unsupported options', '7': 'corrupt data', '8': 'unexpected end of data' };
    if (code && xzCodes[code]) return xzCodes[code];
  }
  if (format === 'bzip2') return /unexpected end|undefined/i.test(message) ? 'unexpected end of data' : /crc|monkey/i.test(message) ? 'corrupt data (CRC mismatch)' : message;
  return message;
}

/** Opens a local image file or an http(s) URL and learns its format and, where it can, its size. */
export async function openImageSource(location: string, options: { signal?: AbortSignal } = {}): Promise<ImageSource> {
  return /^https?:\/\//i.test(location) ? openUrlSource(location, options.signal) : openFileSource(location);
}

// ---------------------------------------------------------------- local files

async function openFileSource(location: string): Promise<ImageSource> {
  const file = path.resolve(location);
  const st = await stat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new SkiffError('usage', `image ${location} does not exist`, { hint: 'pass the path of an .img, .zip, .gz, .xz, .zst or .bz2 file, or an http(s) URL' });
    throw new SkiffError('error', `cannot read image ${location}: ${err.code ?? err.message}`, { cause: err });
  });
  if (!st.isFile()) throw new SkiffError('usage', `image ${location} is not a file`);
  const handle = await open(file, 'r').catch((err: NodeJS.ErrnoException) => {
    throw new SkiffError('error', `cannot read image ${location}: ${err.code ?? err.message}`, { cause: err });
  });
  let format: ImageFormat;
  let size: number | undefined;
  let sizeOrigin: SizeOrigin | undefined;
  try {
    const head = Buffer.alloc(Math.min(64, st.size));
    await handle.read(head, 0, head.length, 0);
    format = detectFormat(head);
    const tail = async (n: number, from = st.size - n) => {
      const b = Buffer.alloc(n);
      await handle.read(b, 0, n, from);
      return b;
    };
    if (format === 'raw') [size, sizeOrigin] = [st.size, 'file'];
    else if (format === 'gzip' && st.size >= 18 && st.size < 2 ** 32) [size, sizeOrigin] = [(await tail(4)).readUInt32LE(0), 'gzip-trailer'];
    else if (format === 'xz') {
      size = await xzIndexSize(tail, st.size);
      if (size !== undefined) sizeOrigin = 'xz-index';
    } else if (format === 'zstd') {
      size = zstdFrameContentSize(await tail(Math.min(18, st.size), 0));
      if (size !== undefined) sizeOrigin = 'zstd-header';
    }
  } finally {
    await handle.close();
  }
  const bmapPath = await findBmap(file);
  let read = 0;
  const base = { location, isUrl: false, format, compressedSize: st.size, ...(bmapPath ? { bmapPath } : {}), ...(format === 'raw' ? { file } : {}), bytesRead: () => read, decoderName: () => decoderName(format) };
  // Counted from a 'data' listener added once the stream is piped (earlier, it would start the flow).
  const count = (s: Readable) => s.on('data', (d: Buffer) => (read += d.length));

  if (format === 'zip') {
    const zip = await openZipEntry(file, location);
    return {
      ...base,
      size: zip.size,
      sizeOrigin: 'zip-entry',
      entryName: zip.name,
      open: async (signal) => {
        const stream = await zip.open();
        // yauzl reads the compressed entry itself: count what it hands on (close enough for stored
        // entries, and the progress of deflated ones is given by the image size anyway).
        return withAbort(count(stream), signal);
      },
    };
  }
  return {
    ...base,
    ...(size !== undefined ? { size, sizeOrigin } : {}),
    open: async (signal) => {
      const decode = await decoder(format);
      const raw = createReadStream(file, { highWaterMark: 1 << 20 });
      const out = decode(raw);
      count(raw);
      return withAbort(out, signal);
    },
  };
}

async function findBmap(image: string): Promise<string | undefined> {
  // foo.img.xz → foo.img.bmap, foo.bmap; foo.img → foo.img.bmap, foo.bmap
  const stripped = image.replace(/\.(gz|xz|zst|bz2|zip)$/i, '');
  const candidates = [...new Set([`${stripped}.bmap`, `${stripped.replace(/\.(img|raw|iso)$/i, '')}.bmap`, `${image}.bmap`])];
  for (const c of candidates) {
    if ((await stat(c).catch(() => undefined))?.isFile()) return c;
  }
  return undefined;
}

// ---------------------------------------------------------------- URLs

async function openUrlSource(url: string, signal?: AbortSignal): Promise<ImageSource> {
  const { response, contentLength } = await httpGet(url, signal);
  let read = 0;
  const head = await peek(response, 64).catch((err: unknown) => {
    throw new SkiffError('error', `download of ${url} failed: ${(err as Error).message}`, { cause: err });
  });
  const format = detectFormat(head);
  if (format === 'zip') {
    response.destroy();
    throw new SkiffError('usage', `${url} is a zip archive, which cannot be written while it downloads`, { hint: 'download it first and pass the file' });
  }
  let opened = false;
  return {
    location: url,
    isUrl: true,
    format,
    ...(contentLength !== undefined ? { compressedSize: contentLength } : {}),
    ...(format === 'raw' && contentLength !== undefined ? { size: contentLength, sizeOrigin: 'content-length' as const } : {}),
    ...(format === 'zstd' && zstdFrameContentSize(head) !== undefined ? { size: zstdFrameContentSize(head), sizeOrigin: 'zstd-header' as const } : {}),
    bytesRead: () => read,
    decoderName: () => decoderName(format),
    open: async (openSignal) => {
      if (opened) throw new Error(`${url} was already read`);
      opened = true;
      const decode = await decoder(format);
      const out = decode(response);
      response.on('data', (d: Buffer) => (read += d.length));
      return withAbort(out, openSignal);
    },
  };
}

async function httpGet(url: string, signal: AbortSignal | undefined, redirects = 5): Promise<{ response: Readable; contentLength?: number }> {
  const { get } = url.toLowerCase().startsWith('https:') ? await import('node:https') : await import('node:http');
  const response = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    const req = get(url, { signal, headers: { 'accept-encoding': 'identity' } }, resolve);
    req.on('error', (err: NodeJS.ErrnoException) => reject(new SkiffError('error', `cannot download ${url}: ${err.code ?? err.message}`, { cause: err })));
  });
  const status = response.statusCode ?? 0;
  if (status >= 300 && status < 400 && response.headers.location && redirects > 0) {
    response.resume();
    return httpGet(new URL(response.headers.location, url).toString(), signal, redirects - 1);
  }
  if (status !== 200) {
    response.resume();
    throw new SkiffError('error', `cannot download ${url}: HTTP ${status} ${response.statusMessage ?? ''}`.trim());
  }
  const length = Number(response.headers['content-length']);
  const contentLength = Number.isSafeInteger(length) && length >= 0 ? length : undefined;
  // Node fails a response cut short of its Content-Length with a bare 'aborted': say what happened.
  response.on('error', (err: Error) => {
    if (err.message === 'aborted') err.message = 'the connection closed before the download finished';
  });
  return { response, ...(contentLength !== undefined ? { contentLength } : {}) };
}

/** Reads at least n bytes (fewer at the end) and puts them back, so the stream still starts at 0. */
async function peek(stream: Readable, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let length = 0;
  let ended = false;
  stream.once('end', () => (ended = true));
  while (length < n && !ended) {
    const chunk = stream.read() as Buffer | null;
    if (chunk) {
      parts.push(chunk);
      length += chunk.length;
      continue;
    }
    await Promise.race([once(stream, 'readable'), once(stream, 'end')]);
  }
  const head = Buffer.concat(parts);
  if (head.length > 0) stream.unshift(head);
  return head;
}

// ---------------------------------------------------------------- decompression

/**
 * System tools that decompress several times faster than the built-in decoders (fzstd runs at
 * about 100 MB/s where `zstd -dc` does 1 GB/s; `xz -T0` decodes blocks in parallel). Used when
 * installed, unless SKIFF_SYSTEM_DECOMPRESSORS=0; gzip stays with zlib, which is as fast as gzip.
 */
const SYSTEM_DECODERS: Partial<Record<ImageFormat, Array<{ tool: string; args: string[] }>>> = {
  zstd: [{ tool: 'zstd', args: ['-dc', '-q', '--no-progress'] }],
  xz: [{ tool: 'xz', args: ['-dc', '-q', '-T0'] }],
  bzip2: [{ tool: 'lbzip2', args: ['-dc'] }, { tool: 'bzip2', args: ['-dc'] }],
};
/** Set to 0 to use the built-in decoders only (tests run both paths). */
export const SYSTEM_DECOMPRESSORS_ENV = 'SKIFF_SYSTEM_DECOMPRESSORS';

const BUILT_IN_DECODERS: Record<Exclude<ImageFormat, 'zip'>, string> = { raw: 'none', gzip: 'zlib', xz: 'xz-decompress', zstd: 'fzstd', bzip2: 'unbzip2-stream' };

/** The system tool that decompresses this format, when there is one and it is allowed. */
async function systemDecoder(format: ImageFormat): Promise<{ tool: string; path: string; args: string[] } | undefined> {
  if (process.env[SYSTEM_DECOMPRESSORS_ENV] === '0') return undefined;
  for (const candidate of SYSTEM_DECODERS[format] ?? []) {
    const found = await onPath(candidate.tool);
    if (found) return { ...candidate, path: found };
  }
  return undefined;
}

async function onPath(tool: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter).filter(Boolean)) {
    const full = path.join(dir, tool);
    if (await access(full, fsConstants.X_OK).then(() => true, () => false)) return full;
  }
  return undefined;
}

/** Which decoder an image of this format goes through (for --debug). */
async function decoderName(format: ImageFormat): Promise<string> {
  if (format === 'zip') return 'yauzl (inflate) with a CRC-32 check';
  const tool = await systemDecoder(format);
  return tool ? `${tool.path} ${tool.args.join(' ')} (system tool; ${SYSTEM_DECOMPRESSORS_ENV}=0 uses ${BUILT_IN_DECODERS[format]})` : BUILT_IN_DECODERS[format];
}

/** A function that turns the compressed stream into the image's bytes (the decoder loaded first). */
async function decoder(format: Exclude<ImageFormat, 'zip'>): Promise<(raw: Readable) => Readable> {
  const tool = await systemDecoder(format);
  if (tool) return (raw) => throughTool(raw, tool);
  switch (format) {
    case 'raw':
      return (raw) => raw;
    case 'gzip': {
      const { createGunzip } = await import('node:zlib');
      return (raw) => chain(raw, createGunzip({ chunkSize: 1 << 20 }));
    }
    case 'xz': {
      // A webpack-built CommonJS bundle: Node's ESM import sees only its default export.
      const xz = (await import('xz-decompress')) as typeof import('xz-decompress') & { default?: typeof import('xz-decompress') };
      const XzReadableStream = xz.XzReadableStream ?? xz.default?.XzReadableStream;
      return (raw) => {
        const web = Readable.toWeb(raw) as unknown as ReadableStream<Uint8Array>;
        return Readable.fromWeb(new XzReadableStream(web) as unknown as import('node:stream/web').ReadableStream<Uint8Array>);
      };
    }
    case 'zstd': {
      const [{ Decompress }, { default: xxhash }] = await Promise.all([import('fzstd'), import('xxhash-wasm')]);
      const { create64 } = await xxhash();
      return (raw) => chain(raw, zstdTransform(Decompress, create64));
    }
    case 'bzip2': {
      const { default: unbzip2 } = await import('unbzip2-stream');
      // unbzip2-stream is an old-style through stream: a PassThrough makes it a modern Readable.
      return (raw) => pipeline(raw, unbzip2(), new PassThrough({ highWaterMark: 1 << 20 }), () => {});
    }
  }
}

/**
 * The compressed stream piped through a system decompressor. The output ends only once the tool
 * has exited 0: a tool that fails (corrupt or truncated input) fails the stream with its message,
 * so a truncated image is never taken for a whole one.
 */
function throughTool(raw: Readable, tool: { tool: string; path: string; args: string[] }): Readable {
  const child = spawn(tool.path, tool.args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4096)));
  const exited = new Promise<Error | undefined>((resolve) => {
    child.once('error', (err) => resolve(err));
    child.once('close', (code, signal) => resolve(code === 0 ? undefined : new Error(toolMessage(tool.tool, stderr) || `${tool.tool} ${signal ? `was killed (${signal})` : `exited with ${code}`}`)));
  });
  const out = new Transform({
    readableHighWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc, done) {
      done(null, chunk);
    },
    flush(done) {
      void exited.then((err) => done(err));
    },
    destroy(err, done) {
      raw.unpipe(child.stdin);
      raw.destroy();
      if (child.exitCode === null) child.kill();
      done(err);
    },
  });
  // The tool stops reading when the data is bad: its EPIPE is not the error to report.
  child.stdin.on('error', () => {});
  raw.on('error', (err) => out.destroy(err));
  raw.pipe(child.stdin);
  child.stdout.pipe(out);
  child.once('error', (err) => out.destroy(new Error(`cannot run ${tool.path}: ${(err as NodeJS.ErrnoException).code ?? err.message}`)));
  return out;
}

/** The tool's complaint without its name and file prefix: `zstd: /*stdin*\: unexpected end of file` → `unexpected end of file`. */
function toolMessage(tool: string, stderr: string): string {
  const line = stderr.split('\n').map((l) => l.trim()).find((l) => l !== '' && !/^(\(stdin\)|\/\*stdin\*\\?): *$/.test(l)) ?? '';
  const bare = line.replace(new RegExp(`^(\\S*/)?${tool}: `), '').replace(/^(\(stdin\)|\/\*stdin\*\\?)\s*:\s*/, '').replace(/\s*\(\d+\)\s*:\s*/g, ': ').replace(/[.;:]\s*$/, '');
  return bare.charAt(0).toLowerCase() + bare.slice(1);
}

function chain(raw: Readable, decoder: Duplex): Readable {
  return pipeline(raw, decoder, () => {});
}

/**
 * fzstd as a Transform. fzstd does not check the frame's content checksum, so this does (XXH64 of
 * the output, low 32 bits, in the last 4 bytes of a single-frame stream, as `zstd` writes it).
 */
function zstdTransform(Decompress: typeof import('fzstd').Decompress, create64: () => { update(b: Uint8Array): unknown; digest(): bigint }): Transform {
  let push: (chunk: Buffer) => void = () => {};
  let header: Buffer | undefined = Buffer.alloc(0);
  let checksummed = false;
  let contentSize: number | undefined;
  let produced = 0;
  let tail: Buffer = Buffer.alloc(0);
  const hash = create64();
  const decoder = new Decompress((data) => {
    if (data.length === 0) return;
    produced += data.length;
    hash.update(data);
    // fzstd may hand out views of its window: copy before the next block overwrites it.
    push(Buffer.from(data));
  });
  const run = (self: Transform, chunk: Uint8Array, final: boolean, done: (err?: Error) => void) => {
    push = (b) => self.push(b);
    try {
      decoder.push(chunk, final);
      done();
    } catch (err) {
      done(err as Error);
    }
  };
  return new Transform({
    readableHighWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc, done) {
      if (header) {
        header = Buffer.concat([header, chunk]);
        if (header.length >= 18) {
          checksummed = header.readUInt32LE(0) === 0xfd2fb528 && ((header.readUInt8(4) >> 2) & 1) === 1;
          contentSize = zstdFrameContentSize(header);
          header = undefined;
        }
      }
      tail = chunk.length >= 4 ? chunk.subarray(chunk.length - 4) : Buffer.concat([tail, chunk]).subarray(-4);
      run(this, chunk, false, done);
    },
    flush(done) {
      run(this, new Uint8Array(0), true, (err) => {
        if (err) return done(err);
        // One frame (its declared size is all there was): its checksum must match.
        if (checksummed && contentSize === produced && tail.length === 4) {
          const expected = tail.readUInt32LE(0);
          const actual = Number(hash.digest() & 0xffffffffn);
          if (expected !== actual) return done(new Error('content checksum mismatch'));
        }
        done();
      });
    },
  });
}

function withAbort(stream: Readable, signal: AbortSignal | undefined): Readable {
  if (!signal) return stream;
  if (signal.aborted) stream.destroy(new Error('interrupted'));
  else signal.addEventListener('abort', () => stream.destroy(new Error('interrupted')), { once: true });
  return stream;
}

// ---------------------------------------------------------------- sizes from containers

/** Size of the first zstd frame's content, when its header says it (zstd writes it by default). */
export function zstdFrameContentSize(head: Buffer): number | undefined {
  if (head.length < 6 || head.readUInt32LE(0) !== 0xfd2fb528) return undefined;
  const fhd = head.readUInt8(4);
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const dictIdBytes = [0, 1, 2, 4][fhd & 3] ?? 0;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag] ?? 0;
  if (fcsBytes === 0) return undefined;
  const at = 5 + (singleSegment ? 0 : 1) + dictIdBytes;
  if (head.length < at + fcsBytes) return undefined;
  switch (fcsBytes) {
    case 1: return head.readUInt8(at);
    case 2: return head.readUInt16LE(at) + 256;
    case 4: return head.readUInt32LE(at);
    default: {
      const v = head.readBigUInt64LE(at);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
    }
  }
}

/**
 * The uncompressed size from an xz file's index, when the file is one stream (what `xz` writes).
 * Anything unexpected gives undefined: the size is then learnt by reading.
 */
async function xzIndexSize(read: (n: number, from?: number) => Promise<Buffer>, fileSize: number): Promise<number | undefined> {
  if (fileSize < 32) return undefined;
  const footer = await read(12);
  if (footer.toString('latin1', 10, 12) !== 'YZ') return undefined;
  const indexSize = (footer.readUInt32LE(4) + 1) * 4;
  if (indexSize + 24 > fileSize) return undefined;
  const index = await read(indexSize, fileSize - 12 - indexSize);
  if (index[0] !== 0) return undefined;
  let pos = 1;
  const varint = (): number | undefined => {
    let value = 0;
    for (let i = 0; i < 9 && pos < index.length; i++) {
      const b = index.readUInt8(pos++);
      value += (b & 0x7f) * 2 ** (7 * i);
      if ((b & 0x80) === 0) return value;
    }
    return undefined;
  };
  const records = varint();
  if (records === undefined) return undefined;
  let total = 0;
  let blocks = 0;
  for (let i = 0; i < records; i++) {
    const unpadded = varint();
    const uncompressed = varint();
    if (unpadded === undefined || uncompressed === undefined) return undefined;
    blocks += Math.ceil(unpadded / 4) * 4;
    total += uncompressed;
  }
  // One stream only: header + blocks + index + footer must be the whole file.
  return 12 + blocks + indexSize + 12 === fileSize ? total : undefined;
}

// ---------------------------------------------------------------- zip

/**
 * Entries that are no file of the archive's content: directories, and what macOS's Finder adds
 * when it compresses (`__MACOSX/` with an AppleDouble `._NAME` of each file's resource fork and
 * extended attributes, `.DS_Store` folder settings). `._disk.img` is no image.
 */
export function isArchiveMetadata(name: string): boolean {
  const base = name.split('/').filter(Boolean).at(-1) ?? '';
  return name.endsWith('/') || name.startsWith('__MACOSX/') || base.startsWith('._') || base === '.DS_Store';
}

async function openZipEntry(file: string, location: string): Promise<{ name: string; size: number; open: () => Promise<Readable> }> {
  const yauzl = await import('yauzl');
  const zip = await yauzl.openPromise(file, { lazyEntries: true, autoClose: false }).catch((err: Error) => {
    throw new SkiffError('error', `${location} is corrupt or truncated (zip: ${err.message.replace(/\.$/, '')})`, { hint: 'download the image again', cause: err });
  });
  const files: import('yauzl').Entry[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      zip.on('entry', (entry: import('yauzl').Entry) => {
        if (!isArchiveMetadata(entry.fileName)) files.push(entry);
        zip.readEntry();
      });
      zip.once('end', resolve);
      zip.once('error', reject);
      zip.readEntry();
    });
  } catch (err) {
    zip.close();
    throw new SkiffError('error', `${location} is corrupt or truncated (zip: ${(err as Error).message})`, { hint: 'download the image again', cause: err });
  }
  const images = files.length === 1 ? files : files.filter((f) => IMAGE_EXTENSIONS.includes(path.extname(f.fileName).toLowerCase()));
  if (images.length !== 1) {
    zip.close();
    const listed = files.slice(0, 5).map((f) => f.fileName).join(', ') + (files.length > 5 ? `, and ${files.length - 5} more` : '');
    const what = files.length === 0 ? 'no files' : images.length === 0 ? `no image (${listed})` : `${images.length} images (${images.map((f) => f.fileName).slice(0, 5).join(', ')})`;
    throw new SkiffError('usage', `${location} holds ${what}; it must hold exactly one image`, { hint: `an image is a file ending in ${IMAGE_EXTENSIONS.join(', ')}` });
  }
  const entry = images[0];
  if (!entry) throw new Error('unreachable: one image was found');
  return {
    name: entry.fileName,
    size: entry.uncompressedSize,
    open: async () => {
      const stream = await zip.openReadStreamPromise(entry);
      // yauzl checks sizes but not the CRC-32: check it here.
      const { crc32 } = await import('node:zlib');
      let crc = 0;
      const out = new Transform({
        readableHighWaterMark: 1 << 20,
        transform(chunk: Buffer, _enc, done) {
          crc = crc32(chunk, crc);
          done(null, chunk);
        },
        flush(done) {
          done(crc === entry.crc32 ? undefined : new Error(`CRC-32 mismatch in ${entry.fileName}`));
        },
      });
      pipeline(stream, out, () => zip.close());
      return out;
    },
  };
}
