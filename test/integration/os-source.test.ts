/**
 * Image sources: formats told by content, sizes from containers, streamed decompression, and
 * corrupt, truncated or ambiguous inputs reported as one line. Fixtures are made with the
 * system's gzip, xz, zstd, bzip2 and zip in a temp dir.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { detectFormat, isArchiveMetadata, openImageSource, sourceError, zstdFrameContentSize } from '../../src/lib/os/source.js';
import { parseBmap } from '../../src/lib/os/bmap.js';
import { partitionTableEnd } from '../../src/lib/os/flash.js';
import { SkiffError } from '../../src/lib/errors/errors.js';

async function readAll(location: string): Promise<{ format: string; size?: number; data: Buffer }> {
  const source = await openImageSource(location);
  const stream = await source.open();
  const parts: Buffer[] = [];
  try {
    for await (const c of stream as AsyncIterable<Buffer>) parts.push(c);
  } catch (err) {
    throw sourceError(source, err);
  }
  return { format: source.format, ...(source.size !== undefined ? { size: source.size } : {}), data: Buffer.concat(parts) };
}

describe('os image sources', function () {
  this.timeout(60000);
  let dir: string;
  let image: Buffer;
  const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { cwd: dir });

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'skiff-source-'));
    // Half random, half zeros: like an image with free space.
    image = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(3 << 20)]);
    writeFileSync(path.join(dir, 'os.img'), image);
    sh('gzip -k os.img && xz -k -T1 os.img && zstd -q os.img && bzip2 -k os.img && cp os.img plain.bin && zip -q one.zip os.img');
    sh('mkdir -p several && cp os.img several/a.img && cp os.img several/b.img && cd several && zip -q ../several.zip a.img b.img');
    sh('echo hello > readme.txt && echo x > notes.md && zip -q noimage.zip readme.txt notes.md');
    for (const ext of ['gz', 'xz', 'zst', 'bz2']) {
      const full = readFileSync(path.join(dir, `os.img.${ext}`));
      writeFileSync(path.join(dir, `truncated.img.${ext}`), full.subarray(0, Math.floor(full.length * 0.6)));
      const corrupt = Buffer.from(full);
      corrupt.fill(0x55, Math.floor(full.length / 2), Math.floor(full.length / 2) + 16);
      writeFileSync(path.join(dir, `corrupt.img.${ext}`), corrupt);
    }
    const zip = readFileSync(path.join(dir, 'one.zip'));
    writeFileSync(path.join(dir, 'truncated.zip'), zip.subarray(0, zip.length >> 1));
    const corruptZip = Buffer.from(zip);
    corruptZip.fill(0x55, zip.length >> 1, (zip.length >> 1) + 16);
    writeFileSync(path.join(dir, 'corrupt.zip'), corruptZip);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('tells formats by their first bytes', () => {
    assert.equal(detectFormat(Buffer.from([0x1f, 0x8b, 8, 0, 0, 0])), 'gzip');
    assert.equal(detectFormat(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0])), 'xz');
    assert.equal(detectFormat(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0])), 'zstd');
    assert.equal(detectFormat(Buffer.from('BZh91AY')), 'bzip2');
    assert.equal(detectFormat(Buffer.from('PK\u0003\u0004xx')), 'zip');
    assert.equal(detectFormat(Buffer.from('BZh0xx')), 'raw');
    assert.equal(detectFormat(Buffer.alloc(512)), 'raw');
  });

  // Every decoding test runs twice: through the system tools (zstd, xz, bzip2) when installed, and
  // through the built-in decoders they stand in for.
  for (const [name, env] of [['system decompressors', '1'], ['built-in decoders', '0']] as const) {
    describe(name, () => {
      let saved: string | undefined;
      before(() => {
        saved = process.env.SKIFF_SYSTEM_DECOMPRESSORS;
        process.env.SKIFF_SYSTEM_DECOMPRESSORS = env;
      });
      after(() => {
        if (saved === undefined) delete process.env.SKIFF_SYSTEM_DECOMPRESSORS;
        else process.env.SKIFF_SYSTEM_DECOMPRESSORS = saved;
      });

      it('names its decoder', async () => {
        const decoder = await (await openImageSource(path.join(dir, 'os.img.zst'))).decoderName();
        if (env === '0') assert.equal(decoder, 'fzstd');
        else assert.match(decoder, /zstd -dc .*\(system tool; SKIFF_SYSTEM_DECOMPRESSORS=0 uses fzstd\)|^fzstd$/);
      });

      const formats: Array<[string, string, boolean]> = [
        ['os.img', 'raw', true], ['os.img.gz', 'gzip', true], ['os.img.xz', 'xz', true], ['os.img.zst', 'zstd', true],
        ['os.img.bz2', 'bzip2', false], ['one.zip', 'zip', true], ['plain.bin', 'raw', true],
      ];
      for (const [file, format, sized] of formats) {
        it(`${file}: ${format}, streamed back byte for byte${sized ? ', size known up front' : ''}`, async () => {
          const r = await readAll(path.join(dir, file));
          assert.equal(r.format, format);
          if (sized) assert.equal(r.size, image.length);
          assert.ok(r.data.equals(image), 'decompressed bytes equal the image');
        });
      }

      for (const ext of ['gz', 'xz', 'zst', 'bz2']) {
        for (const kind of ['truncated', 'corrupt']) {
          it(`${kind} .${ext} is reported as one line`, async () => {
            await assert.rejects(readAll(path.join(dir, `${kind}.img.${ext}`)), (err: SkiffError) => {
              assert.ok(err instanceof SkiffError);
              assert.match(err.toLine(), /is corrupt or truncated \(\w+: [^\n]+\)\. Download the image again\.$/);
              assert.doesNotMatch(err.toLine(), /monkey|get_next_output|undefined/);
              return true;
            });
          });
        }
      }
    });
  }

  it('tells the format by content, not by name', async () => {
    writeFileSync(path.join(dir, 'misnamed.img'), readFileSync(path.join(dir, 'os.img.xz')));
    const r = await readAll(path.join(dir, 'misnamed.img'));
    assert.equal(r.format, 'xz');
    assert.ok(r.data.equals(image));
  });

  it('a truncated or corrupt zip is reported', async () => {
    await assert.rejects(readAll(path.join(dir, 'truncated.zip')), /truncated.zip is corrupt or truncated \(zip: /);
    await assert.rejects(readAll(path.join(dir, 'corrupt.zip')), /corrupt.zip is corrupt or truncated/);
  });

  it('a zip with no image or several names what it holds', async () => {
    await assert.rejects(openImageSource(path.join(dir, 'noimage.zip')), (err: SkiffError) => {
      assert.equal(err.code, 'usage');
      assert.match(err.message, /holds no image \((readme\.txt, notes\.md|notes\.md, readme\.txt)\); it must hold exactly one image/);
      return true;
    });
    await assert.rejects(openImageSource(path.join(dir, 'several.zip')), /holds 2 images \(a\.img, b\.img\)/);
  });

  it('a missing image is a usage error', async () => {
    await assert.rejects(openImageSource(path.join(dir, 'nope.img')), (err: SkiffError) => err.code === 'usage' && /does not exist/.test(err.message));
  });

  it('finds a .bmap next to the image', async () => {
    writeFileSync(path.join(dir, 'os.bmap'), '<bmap version="2.0"></bmap>');
    assert.equal((await openImageSource(path.join(dir, 'os.img.xz'))).bmapPath, path.join(dir, 'os.bmap'));
  });

  it('reads zstd frame content sizes of every width', () => {
    for (const n of [0, 200, 300, 70000]) {
      const file = path.join(dir, `z${n}`);
      sh(`head -c ${n} /dev/zero > ${file}.in && zstd -q -f ${file}.in -o ${file}.zst`);
      assert.equal(zstdFrameContentSize(readFileSync(`${file}.zst`)), n);
    }
    // 8-byte field, hand-made: FHD with FCS flag 3, single segment.
    const head = Buffer.alloc(14);
    head.writeUInt32LE(0xfd2fb528, 0);
    head[4] = 0xe0;
    head.writeBigUInt64LE(5_000_000_000n, 5);
    assert.equal(zstdFrameContentSize(head), 5_000_000_000);
  });

  describe('over http', () => {
    let server: Server;
    let base: string;
    before(async () => {
      server = createServer((req, res) => {
        const file = path.join(dir, (req.url ?? '/').slice(1));
        if (req.url === '/redirect') {
          res.writeHead(302, { location: '/os.img.gz' }).end();
          return;
        }
        if (req.url === '/cut') {
          // Promises the whole image, sends half, then hangs up.
          res.writeHead(200, { 'content-length': String(image.length) });
          res.write(image.subarray(0, image.length >> 1), () => res.destroy());
          return;
        }
        try {
          const body = readFileSync(file);
          res.writeHead(200, { 'content-length': String(body.length) }).end(body);
        } catch {
          res.writeHead(404).end();
        }
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    after(() => new Promise<void>((r) => server.close(() => r())));

    it('streams a raw image with its size from Content-Length', async () => {
      const r = await readAll(`${base}/os.img`);
      assert.equal(r.format, 'raw');
      assert.equal(r.size, image.length);
      assert.ok(r.data.equals(image));
    });

    it('streams compressed images, following redirects', async () => {
      for (const url of [`${base}/os.img.xz`, `${base}/os.img.zst`, `${base}/redirect`]) {
        const r = await readAll(url);
        assert.equal(createHash('sha256').update(r.data).digest('hex'), createHash('sha256').update(image).digest('hex'), url);
      }
    });

    it('reports HTTP errors, cut downloads and zips it cannot stream', async () => {
      await assert.rejects(openImageSource(`${base}/missing.img`), /HTTP 404/);
      await assert.rejects(readAll(`${base}/cut`), /the connection closed before the download finished/);
      await assert.rejects(openImageSource(`${base}/one.zip`), /is a zip archive, which cannot be written while it downloads/);
    });
  });

  describe('bmap and partition tables', () => {
    it('parses bmaptool files (v2 with sha256, v1 with sha1) and refuses bad ones', () => {
      const v2 = parseBmap(`<?xml version="1.0" ?>\n<bmap version="2.0">\n<ImageSize> 10000 </ImageSize>\n<BlockSize> 4096 </BlockSize>\n<BlocksCount> 3 </BlocksCount>\n<ChecksumType> sha256 </ChecksumType>\n<BlockMap>\n<Range chksum="ab"> 0 </Range>\n<Range chksum="cd"> 2 </Range>\n</BlockMap>\n</bmap>`);
      assert.deepEqual(v2.ranges, [{ start: 0, end: 4096, checksum: 'ab' }, { start: 8192, end: 10000, checksum: 'cd' }]);
      assert.equal(v2.mappedBytes, 4096 + 1808);
      const v1 = parseBmap('<bmap version="1.4"><ImageSize>8192</ImageSize><BlockSize>4096</BlockSize><BlockMap><Range sha1="ef">0-1</Range></BlockMap></bmap>');
      assert.equal(v1.checksumType, 'sha1');
      assert.deepEqual(v1.ranges, [{ start: 0, end: 8192, checksum: 'ef' }]);
      assert.throws(() => parseBmap('<xml/>', 'x.bmap'), /x\.bmap is not a valid bmap file/);
      assert.throws(() => parseBmap('<bmap version="2.0"><ImageSize>100</ImageSize><BlockSize>4096</BlockSize><Range>5</Range></bmap>'), /beyond the image size/);
    });

    it('learns the size an image needs from MBR and GPT', () => {
      mkdirSync(path.join(dir, 'pt'), { recursive: true });
      sh('truncate -s 64M pt/mbr.img && printf "2048,20480,c\\n22528,,83\\n" | sfdisk -q pt/mbr.img');
      assert.equal(partitionTableEnd(readFileSync(path.join(dir, 'pt/mbr.img')).subarray(0, 65536)), 64 << 20);
      sh('truncate -s 48M pt/gpt.img && printf "label: gpt\\n,10M\\n,\\n" | sfdisk -q pt/gpt.img');
      const end = partitionTableEnd(readFileSync(path.join(dir, 'pt/gpt.img')).subarray(0, 65536));
      assert.ok(end !== undefined && end > (47 << 20) && end <= 48 << 20, String(end));
      assert.equal(partitionTableEnd(Buffer.alloc(4096)), undefined);
    });
  });
});

describe('a zip made on macOS (Finder adds __MACOSX/ and .DS_Store)', function () {
  this.timeout(60000);
  let dir: string;
  let image: Buffer;
  const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { cwd: dir });

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'skiff-maczip-'));
    image = randomBytes(1 << 20);
    // What Finder's "Compress" stores: the file, and in __MACOSX/ an AppleDouble file (magic
    // 0x00051607) with its extended attributes, under the same name with ._ in front.
    const appleDouble = Buffer.concat([Buffer.from([0x00, 0x05, 0x16, 0x07, 0x00, 0x02, 0x00, 0x00]), Buffer.alloc(4000, 0x41)]);
    mkdirSync(path.join(dir, 'mac/__MACOSX/images'), { recursive: true });
    mkdirSync(path.join(dir, 'mac/images'), { recursive: true });
    writeFileSync(path.join(dir, 'mac/disk.img'), image);
    writeFileSync(path.join(dir, 'mac/__MACOSX/._disk.img'), appleDouble);
    writeFileSync(path.join(dir, 'mac/.DS_Store'), Buffer.alloc(6148, 1));
    writeFileSync(path.join(dir, 'mac/images/disk.img'), image);
    writeFileSync(path.join(dir, 'mac/images/._disk.img'), appleDouble);
    writeFileSync(path.join(dir, 'mac/__MACOSX/images/._disk.img'), appleDouble);
    sh('cd mac && zip -q ../finder.zip disk.img __MACOSX/._disk.img .DS_Store');
    // Folders stored as entries too, and an AppleDouble file beside the image (as ditto leaves it).
    sh('cd mac && zip -q ../folder.zip images/ images/disk.img images/._disk.img __MACOSX/ __MACOSX/images/ __MACOSX/images/._disk.img');
    sh('cd mac && zip -q ../only-metadata.zip __MACOSX/._disk.img .DS_Store');
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  it('flashes disk.img: __MACOSX/, ._ files, .DS_Store and directories are no images', async () => {
    assert.match(execFileSync('unzip', ['-l', path.join(dir, 'finder.zip')], { encoding: 'utf8' }), /__MACOSX\/\._disk\.img/, 'the fixture holds the metadata entry');
    for (const [zip, entry] of [['finder.zip', 'disk.img'], ['folder.zip', 'images/disk.img']] as const) {
      const source = await openImageSource(path.join(dir, zip));
      assert.equal(source.entryName, entry, zip);
      assert.equal(source.size, image.length);
      const { data } = await readAll(path.join(dir, zip));
      assert.ok(data.equals(image), `${zip}: the image, byte for byte`);
    }
  });

  it('a zip holding only metadata holds no files', async () => {
    await assert.rejects(openImageSource(path.join(dir, 'only-metadata.zip')), /only-metadata\.zip holds no files; it must hold exactly one image/);
  });

  it('tells metadata entries from files', () => {
    for (const name of ['__MACOSX/', '__MACOSX/._disk.img', '__MACOSX/a/._b.img', '._disk.img', 'a/._disk.img', '.DS_Store', 'a/.DS_Store', 'dir/']) assert.ok(isArchiveMetadata(name), name);
    for (const name of ['disk.img', 'a/disk.img', 'MACOSX/disk.img', '_disk.img', 'a._disk.img', '.hidden.img']) assert.ok(!isArchiveMetadata(name), name);
  });
});
