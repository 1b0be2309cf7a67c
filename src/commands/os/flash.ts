import { Args, Flags } from '@oclif/core';
import { SkiffCommand } from '../../cli/base-command.js';
import { SkiffError } from '../../lib/errors/errors.js';
import { isPromptCancel } from '../../cli/report.js';
import { isInteractive } from '../../ui/terminal.js';
import type { FlashResult } from '../../lib/os/flash.js';
import type { Target } from '../../lib/os/drives.js';

/** Said when the user declines or leaves a prompt. */
const CANCELLED = 'flash cancelled; nothing was written';

export default class OsFlash extends SkiffCommand<FlashResult> {
  static override summary = 'Write an OS image to SD cards, USB sticks or image files, and verify it.';
  static override description = `The image is a local file or an http(s) URL: raw (.img, .raw, .iso) or compressed (.gz, .xz, .zst, .bz2, or a .zip holding one image), told by its content and decompressed as it is written. Several --drive flags write several drives from one read of the image.

Compressed images go through the system's zstd, xz or bzip2 (lbzip2 if there) when installed, several times faster than the built-in decoders used otherwise; SKIFF_SYSTEM_DECOMPRESSORS=0 keeps to the built-in ones, and --debug says which is used. The result's checksum is the image's XXH64 (as 'xxhsum -H64' prints it); --checksum sha256 gives its SHA-256 instead, at some cost in speed.

System drives (holding the mounted root, /boot or swap, or skiff itself) are refused, as are read-only and too-small drives. Mounted partitions of the drive are unmounted first. A .bmap file next to the image limits writing to the blocks that hold data. After writing, the drives are read back and compared (skip with --no-verify).

Without --drive, a terminal offers the removable drives to pick from ('skiff util available-drives' lists them); elsewhere --drive and --yes are required.`;
  static override examples = [
    '<%= config.bin %> os flash balena.img.zip',
    '<%= config.bin %> os flash skiff-rpi4.img.xz --drive /dev/sdb --yes',
    '<%= config.bin %> os flash https://example.com/os.img.zst -d /dev/sdb -d /dev/sdc -y',
    '<%= config.bin %> os flash os.img --drive out.img --no-verify --json',
    '<%= config.bin %> os flash os.img.xz --drive /dev/sdb --yes --checksum sha256',
  ];
  static override args = {
    image: Args.string({ description: 'Image file or http(s) URL (.img, .raw, .iso, .zip, .gz, .xz, .zst, .bz2).', required: true }),
  };
  static override flags = {
    drive: Flags.string({ char: 'd', description: 'Drive to write (a device such as /dev/sdb, or an image file); repeat for several.', multiple: true }),
    yes: Flags.boolean({ char: 'y', description: "Don't ask for confirmation." }),
    verify: Flags.boolean({ description: 'Read the drives back and compare them with the image.', default: true, allowNo: true }),
    bmap: Flags.string({ description: 'Block map (bmaptool format) of the image; default: a .bmap file next to it.' }),
    checksum: Flags.string({ description: 'Checksum of the image to report: xxh64 (as `xxhsum -H64` prints it; costs nothing) or sha256 (to compare with a published digest; computed on a second thread).', options: ['xxh64', 'sha256'], default: 'xxh64' }),
  };

  async run(): Promise<FlashResult> {
    const { args, flags } = await this.parse(OsFlash);
    const interactive = isInteractive();
    if (!interactive && (!flags.drive?.length || !flags.yes)) {
      const missing = [...(flags.drive?.length ? [] : ['--drive']), ...(flags.yes ? [] : ['--yes'])];
      throw new SkiffError('notInteractive', `flashing erases the drive: without a terminal, pass ${missing.join(' and ')}`, { hint: "'skiff util available-drives' lists the drives" });
    }
    const out = await this.output();
    const [plans, drives, { openImageSource }, { formatBytes }] = await Promise.all([import('../../lib/os/flash-plan.js'), import('../../lib/os/drives.js'), import('../../lib/os/source.js'), import('../../ui/format.js')]);
    const controller = new AbortController();
    const inspection = await plans.inspectFlash({ image: args.image, drives: flags.drive ?? [], signal: controller.signal });
    const cancelled = (err: unknown) => {
      throw isPromptCancel(err) ? new SkiffError('interrupted', CANCELLED) : err;
    };
    const prompt = await import('../../ui/prompt.js');
    if (inspection.targets.length === 0) {
      const offered = await plans.offerDrives();
      const choices = offered.map((d) => ({ name: `${drives.driveLabel(d, formatBytes)}${d.mountpoints.length ? `  mounted on ${d.mountpoints.join(', ')}` : ''}`, value: d.device }));
      const picked = await prompt.select('Drive to erase and write', choices).catch(cancelled);
      inspection.targets.push(await drives.inspectTarget(picked));
    }
    const label = (t: Target) => drives.targetLabel(t, formatBytes);
    if (!flags.yes && !(await prompt.confirm(`Erase ${inspection.targets.map(label).join(', ')} and write ${args.image} to it?`).catch(cancelled))) {
      throw new SkiffError('interrupted', CANCELLED);
    }
    const plan = await plans.prepareFlash(inspection, flags.bmap === undefined ? {} : { bmap: flags.bmap });
    for (const { target, points } of plan.unmounted) out.info(`Unmounted ${points.join(', ')} on ${target.path}`);

    const { source, targets, bmap } = plan;
    const [{ flashImage }, { FlashProgressRenderer }] = await Promise.all([import('../../lib/os/flash.js'), import('../../ui/progress.js')]);
    const renderer = new FlashProgressRenderer(out);
    out.info(`Writing ${source.entryName ? `${source.entryName} from ` : ''}${args.image} (${source.format}${source.size !== undefined ? `, ${formatBytes(source.size)}` : ''}${bmap ? `, ${formatBytes(bmap.map.mappedBytes)} mapped by ${bmap.file}` : ''}) to ${targets.map(label).join(', ')}`);
    if (this.debugEnabled && source.format !== 'raw') out.info(`Decompressing with ${await source.decoderName()}`);
    try {
      const result = await this.cancellable((signal) => flashImage({
        source,
        targets,
        verify: flags.verify,
        checksum: flags.checksum === 'sha256' ? 'sha256' : 'xxh64',
        ...(bmap ? { bmap } : {}),
        signal,
        onProgress: (p) => renderer.update(p),
        reopen: () => openImageSource(args.image),
      }), () => {
        controller.abort(new Error('interrupted')); // a download still under way stops too
        renderer.finishLine();
        out.info('Stopping (Ctrl-C again to quit at once)...');
      });
      renderer.finishLine();
      if (this.debugEnabled) for (const d of result.drives) out.info(`${d.drive}: ${d.direct ? 'direct I/O' : 'written through the page cache'}`);
      const rate = `${(result.throughput / 1048576).toFixed(1)} MB/s`;
      const verified = result.drives.every((d) => d.verified) ? `, verified in ${result.verifySeconds?.toFixed(1)}s` : ' (not verified)';
      out.result(`Flashed ${formatBytes(result.size)} to ${result.drives.map((d) => d.drive).join(', ')} in ${result.writeSeconds.toFixed(1)}s (${rate})${verified}.${result.checksum ? ` ${result.checksum.algorithm} ${result.checksum.value}` : ''}`);
      return result;
    } finally {
      renderer.finishLine();
    }
  }
}
