/** Partition tables made by sfdisk, file systems by mkfs.vfat and mke2fs: which one is the boot partition. */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { FileDevice, findBootPartition, readPartitionTable } from '../../src/lib/os/partitions.js';
import { makeDisk, makeFatImage, tempDir } from '../support/os-images.js';

async function tableOf(image: string) {
  const device = await FileDevice.open(image);
  try {
    return await readPartitionTable(device);
  } finally {
    await device.close();
  }
}

async function boot(image: string) {
  const device = await FileDevice.open(image);
  try {
    const found = await findBootPartition(device, image);
    return { index: found.partition.index, offset: found.partition.offset, label: found.label.toLowerCase(), fat: found.fatType, scheme: found.scheme };
  } finally {
    await device.close();
  }
}

describe('partition tables and the boot partition (partitions.ts)', () => {
  const tmp = tempDir('skiff-parts-');
  after(() => tmp.remove());
  const file = (name: string) => path.join(tmp.dir, name);

  it('MBR: the FAT partition labelled resin-boot, after an ext4 one', async () => {
    const image = file('mbr.img');
    const parts = makeDisk(image, 'mbr', [{ sizeMiB: 4, fs: 'ext4' }, { sizeMiB: 20, fs: { fat: 16 } }, { sizeMiB: 20, fs: { fat: 16, label: 'resin-boot' } }]);
    const table = await tableOf(image);
    assert.equal(table.scheme, 'mbr');
    assert.deepEqual(table.partitions.map((p) => [p.index, p.offset, p.type]), [[1, parts[0]?.offset, '83'], [2, parts[1]?.offset, '0c'], [3, parts[2]?.offset, '0c']]);
    assert.deepEqual(await boot(image), { index: 3, offset: parts[2]?.offset, label: 'resin-boot', fat: 16, scheme: 'mbr' });
  });

  it('MBR with logical partitions: balena-boot in logical partition 6', async () => {
    const image = file('logical.img');
    const parts = makeDisk(image, 'mbr', [{ sizeMiB: 2 }, { sizeMiB: 2 }, { sizeMiB: 2 }, { sizeMiB: 2, fs: 'ext4' }, { sizeMiB: 8, fs: { fat: 12, label: 'balena-boot' } }]);
    const found = await boot(image);
    assert.equal(found.index, 6);
    assert.equal(found.offset, parts[4]?.offset);
    assert.equal(found.fat, 12);
  });

  it('GPT: the FAT32 partition labelled skiff-boot; without a known label, the first FAT one', async () => {
    const image = file('gpt.img');
    const parts = makeDisk(image, 'gpt', [{ sizeMiB: 4, fs: 'ext4', name: 'rootA' }, { sizeMiB: 34, fs: { fat: 32 } }, { sizeMiB: 34, fs: { fat: 32, label: 'skiff-boot' } }]);
    const table = await tableOf(image);
    assert.equal(table.scheme, 'gpt');
    assert.equal(table.partitions[0]?.name, 'rootA');
    assert.deepEqual(await boot(image), { index: 3, offset: parts[2]?.offset, label: 'skiff-boot', fat: 32, scheme: 'gpt' });
    const plain = file('gpt-plain.img');
    const plainParts = makeDisk(plain, 'gpt', [{ sizeMiB: 4, fs: 'ext4' }, { sizeMiB: 8, fs: { fat: 12, label: 'DATA' } }, { sizeMiB: 8, fs: { fat: 12 } }]);
    assert.equal((await boot(plain)).offset, plainParts[1]?.offset);
  });

  it('a superfloppy (FAT at offset 0, no table)', async () => {
    const image = file('floppy.img');
    makeFatImage(image, { fat: 12, sizeMiB: 2, label: 'resin-boot' });
    assert.deepEqual(await boot(image), { index: 1, offset: 0, label: 'resin-boot', fat: 12, scheme: 'none' });
  });

  it('no FAT partition, or no table at all: one clear error naming the target', async () => {
    const ext = file('ext-only.img');
    makeDisk(ext, 'mbr', [{ sizeMiB: 4, fs: 'ext4' }]);
    await assert.rejects(boot(ext), (e: unknown) => e instanceof SkiffError && e.message === `${ext} has no FAT boot partition (1 MBR partition, none of them FAT)`);
    const zeros = file('zeros.img');
    writeFileSync(zeros, Buffer.alloc(1024 * 1024));
    await assert.rejects(boot(zeros), /has no FAT boot partition \(no partition table and no FAT file system\)/);
  });

  it('a missing image, or a directory: a usage error, not a stack', async () => {
    await assert.rejects(FileDevice.open(file('nope.img')), (e: unknown) => e instanceof SkiffError && e.code === 'usage' && /does not exist/.test(e.message));
    await assert.rejects(FileDevice.open(tmp.dir), (e: unknown) => e instanceof SkiffError && /is a directory/.test(e.message));
  });
});
