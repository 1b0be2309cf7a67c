/**
 * `skiff os flash` and `skiff util available-drives` as a user runs them, against image files and
 * real loop devices (tests run as root). Fixture images are made here with sfdisk, mkfs.vfat and
 * mke2fs. Every loop device made here is detached in after(), even on failure.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCli, startCli } from '../support/cli.js';
import { KEYS, startTty } from '../support/tty.js';
import { fsckFat, fsckProblems, makeDisk, mread, mwrite } from '../support/os-images.js';
import { isRoot, requireOrSkip } from '../support/prerequisites.js';
import { firstByte, waitFor } from '../support/wait.js';

const MiB = 1 << 20;
const sh = (cmd: string, cwd?: string) => execFileSync('sh', ['-c', cmd], { cwd, encoding: 'utf8' }).trim();

/** The first n bytes of a file or device, read-only. */
function head(file: string, n: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(n);
    const got = readSync(fd, b, 0, n, 0);
    return b.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

const errorLines = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('Error:'));

describe('skiff os flash (the binary, real loop devices)', function () {
  this.timeout(120000);
  let dir: string;
  let image: Buffer;
  let imagePath: string;
  const loops: string[] = [];

  function loop(file: string, size: number, readOnly = false, partitions = false): string {
    sh(`truncate -s ${size} ${file}`);
    const dev = sh(`losetup -f --show ${readOnly ? '-r ' : ''}${partitions ? '-P ' : ''}${file}`);
    loops.push(dev);
    return dev;
  }

  before(function () {
    requireOrSkip(this, isRoot(), 'root (flashing loop devices needs losetup)');
    dir = mkdtempSync(path.join(tmpdir(), 'skiff-flash-'));
    // A 48 MiB MBR image: a FAT boot partition and an ext4 root, as balenaOS lays them out.
    imagePath = path.join(dir, 'os.img');
    sh('truncate -s 48M os.img && printf "2048,32768,c,*\\n34816,,83\\n" | sfdisk -q os.img', dir);
    sh('mkfs.vfat -C -n RESIN-BOOT boot.part 16384 >/dev/null && echo hello > hello.txt && mcopy -i boot.part hello.txt ::hello.txt', dir);
    sh('truncate -s 14M root.part && mke2fs -q -F -t ext4 -L resin-rootA root.part && head -c 3M /dev/urandom > noise', dir);
    sh('dd if=boot.part of=os.img bs=512 seek=2048 conv=notrunc status=none && dd if=root.part of=os.img bs=512 seek=34816 conv=notrunc status=none && dd if=noise of=os.img bs=1M seek=40 conv=notrunc status=none', dir);
    // A GPT image too.
    sh('truncate -s 24M gpt.img && printf "label: gpt\\n,8M,U\\n,\\n" | sfdisk -q gpt.img && mkfs.vfat --offset 2048 gpt.img 8192 >/dev/null', dir);
    image = readFileSync(imagePath);
    sh('gzip -k os.img && xz -k -T1 os.img && zstd -q os.img && bzip2 -k os.img && zip -q os.zip os.img', dir);
    sh('cp os.img.xz truncated.img.xz && truncate -s -200000 truncated.img.xz', dir);
  });

  after(() => {
    for (const dev of loops) spawnSync('losetup', ['-d', dev]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('flashes an image file to a loop device and verifies it; --json gives the result', async () => {
    const dev = loop(path.join(dir, 't1.bin'), 64 * MiB);
    const r = await runCli(['os', 'flash', imagePath, '--drive', dev, '--yes', '--json', '--checksum', 'sha256']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { status: string; result: { size: number; bytesWritten: number; throughput: number; checksum: { algorithm: string; value: string }; drives: Array<{ drive: string; direct: boolean; verified: boolean }> } };
    assert.equal(doc.status, 'ok');
    assert.equal(doc.result.size, image.length);
    assert.deepEqual(doc.result.checksum, { algorithm: 'sha256', value: createHash('sha256').update(image).digest('hex') });
    assert.deepEqual(doc.result.drives.map((d) => [d.drive, d.direct, d.verified]), [[dev, true, true]], 'written with direct I/O, and verified');
    assert.ok(doc.result.throughput > 0);
    assert.ok(head(dev, image.length).equals(image), 'the loop device holds the image');
    assert.equal(r.stderr, '', 'nothing on stderr under --json');
  });

  it('writes an image whose end is no whole sector: direct I/O for the blocks, the page cache for the tail', async () => {
    // 9 MiB + 300 bytes: two full 4 MiB blocks, then 1 MiB + 300 bytes; over a device whose old
    // bytes are cached in the page cache, which must not win over what was written around it.
    const odd = Buffer.concat([image.subarray(0, 9 * MiB), Buffer.from('x'.repeat(300))]);
    const oddPath = path.join(dir, 'odd.img');
    writeFileSync(oddPath, odd);
    const dev = loop(path.join(dir, 't-odd.bin'), 16 * MiB);
    sh(`head -c ${10 * MiB} /dev/urandom | dd of=${dev} bs=1M status=none && cat ${dev} > /dev/null`);
    const r = await runCli(['os', 'flash', oddPath, '--drive', dev, '--yes', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { result: { size: number; drives: Array<{ direct: boolean; verified: boolean }> } };
    assert.equal(doc.result.size, odd.length);
    assert.deepEqual(doc.result.drives.map((d) => [d.direct, d.verified]), [[true, true]]);
    sh(`blockdev --flushbufs ${dev}`);
    assert.ok(head(dev, odd.length).equals(odd), 'the device holds every byte, the tail included');
  });

  it('flashes a GPT image to a file, with progress lines and a summary', async () => {
    const gpt = path.join(dir, 'gpt.img');
    const out = path.join(dir, 'gpt-copy.img');
    const r = await runCli(['os', 'flash', gpt, '-d', out, '-y']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(readFileSync(out).equals(readFileSync(gpt)));
    assert.match(r.stderr, /^Writing .*gpt\.img \(raw, 24\.0 MB\) to .*gpt-copy\.img \(file\)/m);
    assert.match(r.stderr, /Verifying/);
    // XXH64 by default, as xxhsum -H64 prints it.
    const { create64 } = await (await import('xxhash-wasm')).default();
    const xxh64 = create64().update(readFileSync(gpt)).digest().toString(16).padStart(16, '0');
    assert.match(r.stdout, new RegExp(`Flashed 24\\.0 MB to .*gpt-copy\\.img in [\\d.]+s \\([\\d.]+ MB/s\\), verified in [\\d.]+s\\. xxh64 ${xxh64}\n$`));
  });

  // Each compressed format through the system tool (zstd, xz, bzip2) and through the built-in decoder.
  for (const [file, env] of ['os.img.gz', 'os.img.xz', 'os.img.zst', 'os.img.bz2', 'os.zip'].flatMap((f) => [[f, '1'], [f, '0']] as const)) {
    it(`flashes ${file} (decompressed as it streams${env === '0' ? ', built-in decoder' : ''}) to a file and a loop device at once`, async () => {
      const dev = loop(path.join(dir, `t-${file}-${env}.bin`), 64 * MiB);
      const out = path.join(dir, `copy-${file}-${env}.img`);
      const r = await runCli(['os', 'flash', path.join(dir, file), '--drive', dev, '--drive', out, '--yes', '--debug'], { env: { SKIFF_SYSTEM_DECOMPRESSORS: env } });
      if (env === '0' || file.endsWith('.gz') || file.endsWith('.zip')) assert.doesNotMatch(r.stderr, /Decompressing with .*system tool/);
      else assert.match(r.stderr, /Decompressing with \/\S+\/(zstd|xz|l?bzip2) -dc .*\(system tool; SKIFF_SYSTEM_DECOMPRESSORS=0 uses/);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`${dev}: direct I/O`), 'the loop device is written around the page cache');
      assert.ok(readFileSync(out).equals(image), 'file target equals the image');
      assert.ok(head(dev, image.length).equals(image), 'loop target holds the image');
    });
  }

  it('flashes from an http URL', async () => {
    const server = createServer((_req, res) => res.writeHead(200, { 'content-length': String(image.length) }).end(image));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const out = path.join(dir, 'from-url.img');
      const r = await runCli(['os', 'flash', `http://127.0.0.1:${(server.address() as AddressInfo).port}/os.img`, '-d', out, '-y']);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(readFileSync(out).equals(image));
    } finally {
      server.close();
    }
  });

  it('writes only the ranges of a .bmap next to the image', async () => {
    const bmapDir = mkdtempSync(path.join(dir, 'bmap-'));
    const img = path.join(bmapDir, 'sparse.img');
    // 16 MiB: data in blocks 0-3 and 1024 (4 KiB blocks), zeros elsewhere.
    const data = Buffer.alloc(16 * MiB);
    data.fill(0xa5, 0, 4 * 4096);
    data.fill(0x5a, 1024 * 4096, 1025 * 4096);
    writeFileSync(img, data);
    const sum = (from: number, to: number) => createHash('sha256').update(data.subarray(from, to)).digest('hex');
    writeFileSync(path.join(bmapDir, 'sparse.bmap'), `<?xml version="1.0" ?>\n<bmap version="2.0">\n  <ImageSize> ${data.length} </ImageSize>\n  <BlockSize> 4096 </BlockSize>\n  <BlocksCount> 4096 </BlocksCount>\n  <MappedBlocksCount> 5 </MappedBlocksCount>\n  <ChecksumType> sha256 </ChecksumType>\n  <BlockMap>\n    <Range chksum="${sum(0, 16384)}"> 0-3 </Range>\n    <Range chksum="${sum(1024 * 4096, 1025 * 4096)}"> 1024 </Range>\n  </BlockMap>\n</bmap>\n`);
    const backing = path.join(dir, 'bmap-target.bin');
    writeFileSync(backing, Buffer.alloc(16 * MiB, 0xee)); // old data outside the ranges stays
    const dev = loop(backing, 16 * MiB);
    const r = await runCli(['os', 'flash', img, '-d', dev, '-y', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { result: { bytesWritten: number; bmap: { mappedBytes: number } } };
    assert.equal(doc.result.bytesWritten, 5 * 4096);
    assert.equal(doc.result.bmap.mappedBytes, 5 * 4096);
    const after = head(dev, 16 * MiB);
    assert.ok(after.subarray(0, 16384).equals(data.subarray(0, 16384)));
    assert.ok(after.subarray(1024 * 4096, 1025 * 4096).equals(data.subarray(1024 * 4096, 1025 * 4096)));
    assert.equal(after[20000], 0xee, 'an unmapped block was not written');
  });

  it('configures an image, flashes it, and reads the config back from the loop device', async () => {
    // A balenaOS-like image: FAT32 resin-boot with a config.json, and an ext4 root.
    const img = path.join(dir, 'configured.img');
    const [boot] = makeDisk(img, 'mbr', [{ sizeMiB: 40, fs: { fat: 32, label: 'resin-boot' } }, { sizeMiB: 8, fs: 'ext4' }]);
    assert.ok(boot);
    mwrite(img, boot.offset, 'config.json', '{"deviceType":"raspberrypi4-64","uuid":"0123abcd"}', dir);
    const c = await runCli(['os', 'configure', img, '--fleet', 'myfleet', '--hostname', 'kiosk-9', '--config-network', 'wifi', '--config-wifi-ssid', 'Home Net', '--config-wifi-key', 'password123']);
    assert.equal(c.code, 0, c.stderr);

    const dev = loop(path.join(dir, 'configured.bin'), 64 * MiB);
    const f = await runCli(['os', 'flash', img, '-d', dev, '-y']);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /verified in/);

    const read = await runCli(['config', 'read', '--drive', dev, '--json']);
    assert.equal(read.code, 0, read.stderr);
    const config = (JSON.parse(read.stdout) as { result: Record<string, unknown> }).result;
    assert.deepEqual([config.deviceType, config.uuid, config.applicationName, config.hostname], ['raspberrypi4-64', '0123abcd', 'myfleet', 'kiosk-9']);
    // Debian's mtools and fsck.fat read the boot partition on the device the same way.
    assert.deepEqual(JSON.parse(mread(dev, boot.offset, 'config.json')), config);
    assert.match(mread(dev, boot.offset, 'system-connections/resin-wifi'), /ssid=Home Net\n[\s\S]*psk=password123\n/);
    const { status, output } = fsckFat(dev, boot.offset, boot.size);
    assert.deepEqual(fsckProblems(output), [], output);
    assert.equal(status, 0, output);
  });

  it('refuses this machine\'s root disk and writes nothing to it', async () => {
    const source = sh('findmnt -n -o SOURCE /').replace(/\[.*\]$/, '');
    if (!source.startsWith('/dev/')) return; // an overlay root (a container): no disk to test against
    const parent = sh(`lsblk -n -o PKNAME ${source} | head -1`);
    const disk = parent ? `/dev/${parent}` : source;
    // Read-only hash of its first MiBs; some sandboxes forbid even opening the disk (then the
    // kernel would refuse a write too, and the refusal message shows skiff never tried).
    const hash = () => { try { return createHash('sha256').update(head(disk, 4 * MiB)).digest('hex'); } catch (err) { if ((err as NodeJS.ErrnoException).code === 'EPERM') return 'unreadable'; throw err; } };
    const before = hash();
    const r = await runCli(['os', 'flash', imagePath, '--drive', disk, '--yes']);
    assert.equal(r.code, 1, r.stderr);
    assert.deepEqual(errorLines(r.stderr), [errorLines(r.stderr)[0]]);
    assert.match(r.stderr, /refusing to write .*: it is a system drive \(.*mounted root file system/);
    assert.equal(hash(), before, 'the root disk is unchanged');
    const list = JSON.parse((await runCli(['util', 'available-drives', '--json'])).stdout) as { result: Array<{ device: string }> };
    assert.ok(!list.result.some((d) => d.device === disk), 'the root disk is not offered');
  });

  it('refuses a too-small drive and a read-only one before writing a byte', async () => {
    const small = loop(path.join(dir, 'small.bin'), 8 * MiB);
    const r = await runCli(['os', 'flash', path.join(dir, 'os.img.xz'), '-d', small, '-y']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Error: .* is too small: 8388608 bytes, the image needs 50331648/);
    assert.ok(head(small, 8 * MiB).equals(Buffer.alloc(8 * MiB)), 'nothing written');
    // A compressed stream without a size (bzip2): the partition table tells.
    const r2 = await runCli(['os', 'flash', path.join(dir, 'os.img.bz2'), '-d', small, '-y']);
    assert.match(r2.stderr, /too small: .*\(from its partition table\)/);

    const roFile = path.join(dir, 'ro.bin');
    const ro = loop(roFile, 64 * MiB, true);
    const r3 = await runCli(['os', 'flash', imagePath, '-d', ro, '-y']);
    assert.equal(r3.code, 1);
    assert.match(r3.stderr, /Error: .* is read-only/);
    assert.equal(errorLines(r3.stderr).length, 1);
  });

  it('bad sources: truncated archive, zip with several images, missing file', async () => {
    const out = path.join(dir, 'bad-out.img');
    for (const [env, detail] of [['1', 'unexpected end of input'], ['0', 'unexpected end of data']]) {
      const t = await runCli(['os', 'flash', path.join(dir, 'truncated.img.xz'), '-d', out, '-y'], { env: { SKIFF_SYSTEM_DECOMPRESSORS: env } });
      assert.equal(t.code, 1);
      assert.match(t.stderr, new RegExp(`Error: .*truncated\\.img\\.xz is corrupt or truncated \\(xz: ${detail}\\)`));
      assert.equal(errorLines(t.stderr).length, 1);
      assert.doesNotMatch(t.stderr, /\n\s+at /, 'no stack trace');
    }
    sh('cp os.img a.img && cp os.img b.img && zip -q two.zip a.img b.img', dir);
    const z = await runCli(['os', 'flash', path.join(dir, 'two.zip'), '-d', out, '-y']);
    assert.equal(z.code, 2);
    assert.match(z.stderr, /holds 2 images \(a\.img, b\.img\)/);
    const m = await runCli(['os', 'flash', path.join(dir, 'nope.img'), '-d', out, '-y']);
    assert.equal(m.code, 2);
    assert.match(m.stderr, /image .*nope\.img does not exist/);
  });

  it('without a terminal, needs --drive and --yes (exit 6)', async () => {
    const none = await runCli(['os', 'flash', imagePath]);
    assert.equal(none.code, 6);
    assert.match(none.stderr, /pass --drive and --yes/);
    const noYes = await runCli(['os', 'flash', imagePath, '--drive', path.join(dir, 'x.img')]);
    assert.equal(noYes.code, 6);
    assert.match(noYes.stderr, /pass --yes/);
    assert.equal(errorLines(noYes.stderr).length, 1);
  });

  describe('on a terminal (a pseudo-terminal made by script(1))', () => {
    it('without --drive: offers the removable drives, asks naming the drive and its size, then writes', async () => {
      const dev = loop(path.join(dir, 'picked.bin'), 56 * MiB);
      const listed = JSON.parse((await runCli(['util', 'available-drives', '--json'])).stdout) as { result: Array<{ device: string }> };
      const index = listed.result.findIndex((d) => d.device === dev);
      assert.ok(index >= 0, `${dev} is offered`);
      const tty = startTty(['os', 'flash', imagePath, '--no-verify']);
      await tty.waitFor(/Drive to erase and write[\s\S]*loop on /);
      tty.send(KEYS.DOWN.repeat(index));
      // The list pages: the drive shows once the cursor is on it.
      await tty.waitFor(new RegExp(`❯ ${dev} \\(loop on ${path.join(dir, 'picked.bin')}, 56\\.0 MB\\)`));
      tty.send(KEYS.ENTER);
      const asked = await tty.waitFor(/Erase .* and write .* to it\? \[y\/N\]/);
      assert.match(asked, new RegExp(`Erase ${dev} \\(loop on [^,]+, 56\\.0 MB\\) and write ${imagePath} to it\\?`));
      tty.send('y\r');
      assert.equal(await tty.done, 0, tty.output());
      assert.match(tty.output(), /[█░]{30} Writing +\d+% /, 'a progress bar, not plain lines');
      assert.match(tty.output(), /[█░]{30} Flushing +100% /);
      assert.match(tty.output(), new RegExp(`Flashed 48\\.0 MB to ${dev} in `));
      assert.ok(head(dev, image.length).equals(image), 'the picked drive holds the image');
    });

    it('answering no to the confirmation, or Ctrl-C at it or at the list, writes nothing (exit 130)', async () => {
      const dev = loop(path.join(dir, 'declined.bin'), 56 * MiB);
      for (const [args, prompt, keys] of [
        [['--drive', dev], /\[y\/N\] $/, 'n\r'],
        [['--drive', dev], /\[y\/N\] $/, KEYS.CTRL_C],
        [[], /navigate/, KEYS.CTRL_C],
      ] as const) {
        const tty = startTty(['os', 'flash', imagePath, ...args]);
        await tty.waitFor(prompt);
        tty.send(keys);
        assert.equal(await tty.done, 130, tty.output());
        assert.deepEqual(errorLines(tty.output()), ['Error: flash cancelled; nothing was written.'], tty.output());
      }
      assert.ok(head(dev, 56 * MiB).equals(Buffer.alloc(56 * MiB)), 'the drive is untouched');
    });
  });

  describe('a drive with mounted partitions', () => {
    let mnt: string;
    beforeEach(() => {
      mnt = mkdtempSync(path.join(dir, 'mnt-'));
    });
    afterEach(() => {
      spawnSync('umount', [mnt]);
    });

    /**
     * A loop device holding the image, with its root partition (ext4; this kernel has no vfat)
     * mounted. Here losetup -P does not make the kernel read the partition table, so partx adds
     * the partitions; devtmpfs makes their nodes a moment later.
     */
    async function mountedDrive(name: string): Promise<string> {
      const file = path.join(dir, name);
      writeFileSync(file, image);
      const dev = loop(file, 64 * MiB, false, true);
      const part = `${dev}p2`;
      spawnSync('partx', ['-a', dev]);
      await waitFor(() => spawnSync('test', ['-b', part]).status === 0, `the device node ${part}`, 5000, 20);
      sh(`mount ${part} ${mnt}`);
      return dev;
    }

    it('unmounts them first, says so, then writes', async () => {
      const dev = await mountedDrive('mounted.bin');
      const gpt = readFileSync(path.join(dir, 'gpt.img'));
      const r = await runCli(['os', 'flash', path.join(dir, 'gpt.img'), '--drive', dev, '--yes']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`^Unmounted ${mnt} on ${dev}$`, 'm'));
      assert.equal(spawnSync('findmnt', [mnt]).status, 1, 'no longer mounted');
      assert.ok(head(dev, gpt.length).equals(gpt), 'the drive holds the new image');
    });

    it('one that cannot be unmounted (in use) stops before writing, naming it', async () => {
      const dev = await mountedDrive('busy.bin');
      const user = spawn('sleep', ['60'], { cwd: mnt, stdio: 'ignore' });
      try {
        const r = await runCli(['os', 'flash', path.join(dir, 'gpt.img'), '--drive', dev, '--yes']);
        assert.equal(r.code, 1, r.stderr);
        assert.deepEqual(errorLines(r.stderr), [`Error: cannot unmount ${mnt} on ${dev}: target is busy. Close the programs using it (lsof +f -- ${mnt}) and try again.`]);
        assert.equal(spawnSync('findmnt', [mnt]).status, 0, 'still mounted');
        // Up to the mounted partition (mounting it wrote to it): the MBR and the boot partition.
        const before = 34816 * 512;
        assert.ok(head(dev, before).equals(image.subarray(0, before)), 'the drive is untouched');
      } finally {
        user.kill();
        await new Promise((resolve) => user.once('exit', resolve));
      }
    });
  });

  it('lists loop devices in util available-drives, with backing file and size', async () => {
    const dev = loop(path.join(dir, 'listed.bin'), 32 * MiB);
    const r = await runCli(['util', 'available-drives', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const drive = (JSON.parse(r.stdout) as { result: Array<{ device: string; size: number; backingFile?: string; mountpoints: string[] }> }).result.find((d) => d.device === dev);
    assert.ok(drive, `${dev} listed`);
    assert.equal(drive.size, 32 * MiB);
    assert.equal(drive.backingFile, path.join(dir, 'listed.bin'));
    const table = await runCli(['util', 'available-drives']);
    assert.match(table.stdout, new RegExp(`${dev}\\s+32\\.0 MB\\s+loop: `));
  });

  describe('interrupted writes (a slow http source)', () => {
    let server: Server;
    let url: string;
    const big = Buffer.alloc(64 * MiB, 0x42);
    before(async () => {
      // Sends 256 KiB every 50 ms (about 5 MB/s): a write that takes several seconds.
      server = createServer((_req, res) => {
        res.writeHead(200, { 'content-length': String(big.length) });
        let at = 0;
        const timer = setInterval(() => {
          if (res.destroyed || at >= big.length) {
            clearInterval(timer);
            res.end();
            return;
          }
          res.write(big.subarray(at, at + 256 * 1024));
          at += 256 * 1024;
        }, 50);
        res.on('close', () => clearInterval(timer));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/big.img`;
    });
    after(() => {
      server.closeAllConnections();
      server.close();
    });

    it('Ctrl-C stops, says the drive is incomplete, exits 130', async () => {
      const dev = loop(path.join(dir, 'ctrlc.bin'), 80 * MiB);
      const { child, done } = startCli(['os', 'flash', url, '-d', dev, '-y']);
      await waitFor(() => firstByte(dev) === 0x42, 'the flash to start writing', 30_000);
      child.kill('SIGINT');
      const r = await done;
      assert.equal(r.code, 130, r.stderr);
      assert.match(r.stderr, /Error: interrupted: .* is incomplete \(\d+ of 67108864 bytes written\)/);
    });

    it('a drive that vanishes mid-write: stops, says it is incomplete, exits non-zero', async () => {
      // A card pulled from a reader leaves the device node with a size of 0; a loop device whose
      // backing file is emptied and whose capacity is re-read does the same.
      const backing = path.join(dir, 'vanish.bin');
      const dev = loop(backing, 80 * MiB);
      const { child, done } = startCli(['os', 'flash', url, '-d', dev, '-y']);
      await waitFor(() => firstByte(dev) === 0x42, 'the flash to start writing', 30_000);
      sh(`truncate -s 0 ${backing} && losetup -c ${dev}`);
      const r = await Promise.race([done, new Promise<never>((_, rej) => setTimeout(() => { child.kill('SIGKILL'); rej(new Error('flash did not stop')); }, 60000))]);
      assert.notEqual(r.code, 0, r.stderr);
      assert.match(r.stderr, /Error: writing .* failed at offset \d+ \((EIO|ENXIO|ENODEV|ENOMEDIUM)[^)]*\); the drive is incomplete/);
      assert.equal(errorLines(r.stderr).length, 1);
    });
  });
});
