/**
 * Block maps in bmaptool's XML format (versions 1.x and 2.x): which blocks of an image hold data.
 * Flashing writes (and verifies) only those; the rest of the target is left as it is, which is
 * fine because the file systems in the image do not read unmapped blocks.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { SkiffError } from '../errors/errors.js';

export interface BmapRange {
  /** Byte offsets, end exclusive. */
  start: number;
  end: number;
  /** Hex checksum of the range's bytes, when the bmap has one. */
  checksum?: string;
}

export interface Bmap {
  imageSize: number;
  blockSize: number;
  checksumType?: 'sha1' | 'sha256';
  ranges: BmapRange[];
  /** Bytes the ranges cover. */
  mappedBytes: number;
}

/** Parses a bmap document; a malformed one is a user error naming the file. */
export function parseBmap(xml: string, file = 'bmap'): Bmap {
  const bad = (why: string) => new SkiffError('usage', `${file} is not a valid bmap file: ${why}`, { hint: 'make it again with bmaptool create, or remove it' });
  const version = /<bmap\s+version="(\d+)\.\d+"/.exec(xml)?.[1];
  if (!version) throw bad('no <bmap version="..."> element');
  if (Number(version) > 2) throw bad(`version ${version}.x is not supported`);
  const number = (tag: string) => {
    const m = new RegExp(`<${tag}>\\s*(\\d+)\\s*</${tag}>`).exec(xml);
    if (!m) throw bad(`no <${tag}>`);
    return Number(m[1]);
  };
  const imageSize = number('ImageSize');
  const blockSize = number('BlockSize');
  if (blockSize <= 0) throw bad('BlockSize must be positive');
  const declared = /<ChecksumType>\s*(\w+)\s*<\/ChecksumType>/.exec(xml)?.[1];
  const checksumType = declared === 'sha256' || declared === 'sha1' ? declared : version === '1' ? 'sha1' : undefined;
  if (declared && !checksumType) throw bad(`checksum type ${declared} is not supported`);

  const ranges: BmapRange[] = [];
  let mappedBytes = 0;
  const rangeRe = /<Range\b([^>]*)>\s*(\d+)(?:\s*-\s*(\d+))?\s*<\/Range>/g;
  for (const m of xml.matchAll(rangeRe)) {
    const first = Number(m[2]);
    const last = m[3] === undefined ? first : Number(m[3]);
    if (last < first) throw bad(`range ${m[2]}-${m[3]} ends before it starts`);
    const start = first * blockSize;
    const end = Math.min((last + 1) * blockSize, imageSize);
    if (start >= imageSize) throw bad(`range ${m[2]}${m[3] ? `-${m[3]}` : ''} lies beyond the image size`);
    const checksum = /(?:chksum|sha1)="([0-9a-fA-F]+)"/.exec(m[1] ?? '')?.[1]?.toLowerCase();
    const previous = ranges.at(-1);
    if (previous && start < previous.end) throw bad('ranges overlap or are out of order');
    ranges.push({ start, end, ...(checksum ? { checksum } : {}) });
    mappedBytes += end - start;
  }
  return { imageSize, blockSize, ...(checksumType ? { checksumType } : {}), ranges, mappedBytes };
}

/** Reads and parses a bmap file, checking its own checksum (BmapFileChecksum/BmapFileSHA1) when present. */
export async function readBmap(file: string): Promise<Bmap> {
  const xml = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new SkiffError('error', `cannot read ${file}: ${err.code ?? err.message}`);
  });
  const bmap = parseBmap(xml, file);
  const own = /<(BmapFileChecksum|BmapFileSHA1)>\s*([0-9a-fA-F]+)\s*<\/\1>/.exec(xml)?.[2];
  if (own && bmap.checksumType) {
    // The file's checksum is taken with its own value replaced by zeros.
    const zeroed = xml.replace(own, '0'.repeat(own.length));
    const actual = createHash(bmap.checksumType).update(zeroed).digest('hex');
    if (actual !== own.toLowerCase()) throw new SkiffError('usage', `${file} is damaged: its checksum does not match`, { hint: 'make it again with bmaptool create, or remove it' });
  }
  return bmap;
}
