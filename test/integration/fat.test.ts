/**
 * The FAT reader/writer against images made by mkfs.vfat, read back by mtools and checked by
 * fsck.fat: FAT12, FAT16 and FAT32, long names, subdirectories, replacing, removing, a full disk.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { BufferDevice, FatError, FatFs, planName, shortNameChecksum, type BlockDevice } from '../../src/lib/os/fat.js';
import { FileDevice } from '../../src/lib/os/partitions.js';
import { fsckFat, fsckProblems, makeFatImage, mlist, mread, mwrite, run, tempDir } from '../support/os-images.js';

const SIZES = { 12: 2, 16: 20, 32: 40 } as const;

function assertClean(image: string): void {
  const { status, output } = fsckFat(image);
  assert.deepEqual(fsckProblems(output), [], output);
  assert.equal(status, 0, output);
}

describe('FAT file system (fat.ts)', () => {
  const tmp = tempDir('skiff-fat-');
  after(() => tmp.remove());

  for (const fat of [12, 16, 32] as const) {
    describe(`FAT${fat}`, () => {
      let image: string;
      beforeEach(function () {
        image = path.join(tmp.dir, `${this.currentTest?.title.replace(/\W+/g, '-')}-${fat}.img`);
        makeFatImage(image, { fat, sizeMiB: SIZES[fat], label: 'resin-boot' });
      });

      it('reads the label, and files mtools wrote (long names, subdirectories)', async () => {
        mwrite(image, 0, 'A Long File Name.json', '{"x":1}', tmp.dir);
        run('mmd', ['-i', image, '::/system-connections']);
        mwrite(image, 0, 'system-connections/resin-sample.ignore', '[connection]\nid=x\n', tmp.dir);
        mwrite(image, 0, 'SHORT.TXT', 'short', tmp.dir);
        const fs = await FatFs.open(new BufferDevice(readFileSync(image)));
        assert.equal(fs.type, fat);
        assert.equal(fs.label.toLowerCase(), 'resin-boot');
        assert.deepEqual((await fs.list('/')).map((e) => e.name).sort(), ['A Long File Name.json', 'SHORT.TXT', 'system-connections']);
        assert.equal((await fs.readFile('a long file name.JSON')).toString(), '{"x":1}');
        assert.equal((await fs.readFile('/system-connections/resin-sample.ignore')).toString(), '[connection]\nid=x\n');
        assert.equal((await fs.readFile('short.txt')).toString(), 'short');
        assert.equal(await fs.stat('nope/x'), undefined);
        await assert.rejects(fs.readFile('missing.json'), (e: unknown) => e instanceof FatError && e.code === 'notFound');
      });

      it('writes files mtools reads and fsck.fat accepts: long names, 8.3 names, nested directories, a multi-cluster file', async () => {
        const device = await FileDevice.open(image, { write: true });
        const fs = await FatFs.open(device);
        const big = Buffer.alloc(fat === 12 ? 300_000 : 1_500_000);
        for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
        await fs.writeFile('config.json', Buffer.from('{"deviceType":"raspberrypi4-64"}'));
        await fs.writeFile('README.TXT', Buffer.from('upper'));
        await fs.writeFile('lower.txt', Buffer.from('lower'));
        await fs.mkdir('system-connections/nested/deeper', { recursive: true });
        await fs.writeFile('system-connections/resin-wifi', Buffer.from('[wifi]\nssid=x\n'));
        await fs.writeFile('system-connections/nested/deeper/Ünïcode naмe.bin', big);
        await fs.writeFile('empty', Buffer.alloc(0));
        await fs.flush();
        await device.close();
        assertClean(image);
        assert.equal(mread(image, 0, 'config.json'), '{"deviceType":"raspberrypi4-64"}');
        assert.equal(mread(image, 0, 'README.TXT'), 'upper');
        assert.equal(mread(image, 0, 'lower.txt'), 'lower');
        assert.equal(mread(image, 0, 'system-connections/resin-wifi'), '[wifi]\nssid=x\n');
        assert.deepEqual(mlist(image, 0).sort(), ['README.TXT', 'config.json', 'empty', 'lower.txt', 'system-connections/']);
        assert.deepEqual(mlist(image, 0, 'system-connections/nested/deeper'), ['system-connections/nested/deeper/Ünïcode naмe.bin']);
        const back = await FatFs.open(new BufferDevice(readFileSync(image)));
        assert.ok((await back.readFile('system-connections/nested/deeper/ünïcode naмe.bin')).equals(big));
        const entry = (await back.list('/')).find((e) => e.name === 'config.json');
        assert.equal(entry?.shortName, 'CONFIG~1.JSO');
      });

      it('replaces a file (bigger, then smaller) and removes one, freeing their clusters', async () => {
        const buffer = readFileSync(image);
        const fs = await FatFs.open(new BufferDevice(buffer));
        const free = fs.freeBytes;
        await fs.writeFile('config.json', Buffer.alloc(10_000, 'a'));
        await fs.writeFile('other file.txt', Buffer.alloc(3000, 'o'));
        await fs.writeFile('config.json', Buffer.alloc(50_000, 'b'));
        await fs.writeFile('config.json', Buffer.from('small'));
        await fs.flush();
        writeFileSync(image, buffer);
        assertClean(image);
        assert.equal(mread(image, 0, 'config.json'), 'small');
        assert.equal(mread(image, 0, 'other file.txt'), 'o'.repeat(3000));
        assert.equal(await fs.remove('other file.txt'), true);
        assert.equal(await fs.remove('other file.txt'), false);
        await fs.flush();
        writeFileSync(image, buffer);
        assertClean(image);
        assert.equal(fs.freeBytes, free - fs.clusterSize);
        assert.deepEqual(mlist(image, 0), ['config.json']);
      });

      it('grows a directory past one cluster, with ~N short names that stay unique', async () => {
        const buffer = readFileSync(image);
        const fs = await FatFs.open(new BufferDevice(buffer));
        await fs.mkdir('many');
        const names = Array.from({ length: 60 }, (_, i) => `a long connection name ${i}.nmconnection`);
        for (const name of names) await fs.writeFile(`many/${name}`, Buffer.from(name));
        await fs.flush();
        writeFileSync(image, buffer);
        assertClean(image);
        const listed = await fs.list('many');
        assert.deepEqual(listed.map((e) => e.name), names);
        assert.equal(new Set(listed.map((e) => e.shortName)).size, names.length);
        assert.equal(listed[0]?.shortName, 'ALONGC~1.NMC');
        assert.equal(listed[10]?.shortName, 'ALONG~11.NMC');
        assert.equal(mread(image, 0, `many/${names[42]}`), names[42]);
      });

      it('refuses a file larger than the free space, leaving the file system as it was', async () => {
        const buffer = readFileSync(image);
        const fs = await FatFs.open(new BufferDevice(buffer));
        await fs.writeFile('config.json', Buffer.from('{}'));
        await fs.flush();
        const before = Buffer.from(buffer);
        const tooBig = fs.freeBytes + fs.clusterSize * 2;
        await assert.rejects(fs.writeFile('huge.bin', Buffer.alloc(tooBig)), (e: unknown) => {
          assert.ok(e instanceof FatError && e.code === 'noSpace');
          assert.ok((e.space?.needed ?? 0) > (e.space?.free ?? 0));
          return true;
        });
        assert.deepEqual(await fs.shortfall([{ path: 'huge.bin', size: tooBig }]), { free: fs.freeBytes, needed: Math.ceil(tooBig / fs.clusterSize) * fs.clusterSize });
        await fs.flush();
        assert.ok(buffer.equals(before), 'nothing was written');
        // Filling it exactly works, and fsck agrees it is full and sound.
        await fs.writeFile('fill.bin', Buffer.alloc(fs.freeBytes, 'f'));
        await fs.flush();
        assert.equal(fs.freeBytes, 0);
        writeFileSync(image, buffer);
        assertClean(image);
      });
    });
  }

  it('keeps FAT32 FSInfo free count and both FAT copies in step (fsck -n compares them)', async () => {
    const image = path.join(tmp.dir, 'fsinfo.img');
    makeFatImage(image, { fat: 32, sizeMiB: 40 });
    const buffer = readFileSync(image);
    const fs = await FatFs.open(new BufferDevice(buffer));
    await fs.writeFile('a.bin', Buffer.alloc(200_000, 1));
    await fs.flush();
    const g = fs.geometry;
    const fatBytes = g.fatSectors * g.bytesPerSector;
    const first = buffer.subarray(g.reservedSectors * g.bytesPerSector, g.reservedSectors * g.bytesPerSector + fatBytes);
    const second = buffer.subarray(g.reservedSectors * g.bytesPerSector + fatBytes, g.reservedSectors * g.bytesPerSector + 2 * fatBytes);
    assert.ok(first.equals(second));
    const info = buffer.subarray(g.fsInfoSector * 512, g.fsInfoSector * 512 + 512);
    assert.equal(info.readUInt32LE(488) * fs.clusterSize, fs.freeBytes);
    writeFileSync(image, buffer);
    assertClean(image);
  });

  describe('cut off at any point (a killed process, a pulled card)', () => {
    /**
     * Records every write, in epochs cut by sync(): after a crash a drive holds every earlier
     * epoch, plus any part of the one under way (the kernel and the card may reorder writes
     * between flushes). The file system code and the images are real; only the crash is made up.
     */
    class RecordingDevice implements BlockDevice {
      readonly epochs: Array<Array<{ offset: number; data: Buffer }>> = [[]];
      constructor(private readonly inner: BufferDevice) {}
      get size(): number {
        return this.inner.size;
      }
      read(offset: number, length: number): Promise<Buffer> {
        return this.inner.read(offset, length);
      }
      async write(offset: number, data: Buffer): Promise<void> {
        this.epochs.at(-1)?.push({ offset, data: Buffer.from(data) });
        await this.inner.write(offset, data);
      }
      async sync(): Promise<void> {
        if (this.epochs.at(-1)?.length) this.epochs.push([]);
      }
    }

    /**
     * fsck.fat's complaints a cut-off write may leave, none of which loses a file: clusters marked
     * used that no file names, a stale free count, and the FAT copies out of step (the first is
     * the one used, by fsck as by Linux and mtools, and every file is checked through it below).
     * (fsck.fat follows each with "Auto-correcting", and -n with "Leaving filesystem unchanged".)
     */
    const harmless = (line: string) => /unused clusters|free cluster summary|lost clusters|Reclaimed|FATs differ but appear to be intact|Using first FAT|^\s*Auto-correcting|^Leaving filesystem unchanged/i.test(line);

    for (const fat of [12, 16, 32] as const) {
      it(`FAT${fat}: replacing config.json and adding system-connections/resin-wifi leaves the old or the new file, never a broken one`, async () => {
        const image = path.join(tmp.dir, `crash-${fat}.img`);
        makeFatImage(image, { fat, sizeMiB: SIZES[fat], label: 'resin-boot', clusterSectors: 1 });
        const oldConfig = `{"deviceType":"raspberrypi4-64","old":"${'o'.repeat(1500)}"}`;
        mwrite(image, 0, 'config.json', oldConfig, tmp.dir);
        const original = readFileSync(image);
        const newConfig = `{"deviceType":"raspberrypi4-64","hostname":"new","pad":"${'n'.repeat(3000)}"}`;
        const wifi = '[connection]\nid=resin-wifi\ntype=wifi\n';

        const device = new RecordingDevice(new BufferDevice(Buffer.from(original)));
        const fs = await FatFs.open(device);
        await fs.writeFile('config.json', Buffer.from(newConfig));
        await fs.mkdir('system-connections', { recursive: true });
        await fs.writeFile('system-connections/resin-wifi', Buffer.from(wifi));
        await fs.flush();
        await device.sync();

        const epochs = device.epochs.filter((e) => e.length > 0);
        assert.ok(epochs.length >= 4, `the writes are ordered by flushes (${epochs.length} epochs)`);
        const crashImage = path.join(tmp.dir, `crash-${fat}-cut.img`);
        let cases = 0;
        for (let e = 0; e < epochs.length; e++) {
          const epoch = epochs[e] ?? [];
          // Every subset of the epoch under way (all of them while small, else every prefix).
          const subsets = epoch.length <= 8 ? Array.from({ length: 1 << epoch.length }, (_, m) => epoch.filter((_w, i) => m & (1 << i))) : epoch.map((_w, i) => epoch.slice(0, i));
          for (const landed of subsets) {
            const disk = Buffer.from(original);
            for (const w of [...epochs.slice(0, e).flat(), ...landed]) w.data.copy(disk, w.offset);
            writeFileSync(crashImage, disk);
            cases++;
            const what = `cut in epoch ${e + 1} of ${epochs.length} with ${landed.length} of its ${epoch.length} writes`;
            const fsck = fsckFat(crashImage).output;
            assert.deepEqual(fsckProblems(fsck).filter((l) => !harmless(l)), [], `${what}: fsck.fat -n says\n${fsck}`);
            const config = mread(crashImage, 0, 'config.json');
            assert.ok(config === oldConfig || config === newConfig, `${what}: config.json is neither the old nor the new one`);
            const names = mlist(crashImage, 0).includes('system-connections') ? mlist(crashImage, 0, 'system-connections') : [];
            if (names.includes('system-connections/resin-wifi')) assert.equal(mread(crashImage, 0, 'system-connections/resin-wifi'), wifi, what);
          }
        }
        assert.ok(cases > epochs.length);
      });
    }
  });

  it('plans names as VFAT does: 8.3 with case flags when it fits, else long entries with a checksummed alias', () => {
    assert.equal(planName('README.TXT', new Set()).long.length, 0);
    const lower = planName('lower.txt', new Set());
    assert.equal(lower.long.length, 0);
    assert.equal(lower.caseFlags, 0x18);
    const long = planName('config.json', new Set());
    assert.equal(long.short.toString('latin1'), 'CONFIG~1JSO');
    assert.equal(long.long.length, 1);
    assert.equal(long.long[0]?.[13], shortNameChecksum(long.short));
    assert.equal(planName('config.json', new Set(['CONFIG~1.JSO'])).short.toString('latin1'), 'CONFIG~2JSO');
    assert.equal(planName('ReadMe.txt', new Set()).short.toString('latin1'), 'README  TXT');
    assert.equal(planName('x'.repeat(30), new Set()).long.length, 3);
    assert.throws(() => planName('a:b', new Set()), (e: unknown) => e instanceof FatError && e.code === 'invalidName');
  });
});

