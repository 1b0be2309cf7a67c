import { SkiffCommand } from '../../cli/base-command.js';
import type { Drive } from '../../lib/os/drives.js';

export default class UtilAvailableDrives extends SkiffCommand<Drive[]> {
  static override summary = 'List the drives an OS image can be flashed on.';
  static override description = "Removable and hot-plugged drives (SD card readers, USB sticks) and loop devices, with their size, model and mount points. System drives (holding the mounted root, /boot or swap, or skiff itself) are never listed. Use the device path with 'skiff os flash --drive'.";
  static override examples = ['<%= config.bin %> util available-drives', '<%= config.bin %> util available-drives --json'];

  async run(): Promise<Drive[]> {
    await this.parse(UtilAvailableDrives);
    const [{ availableDrives }, { formatBytes, table }] = await Promise.all([import('../../lib/os/drives.js'), import('../../ui/format.js')]);
    const drives = await availableDrives();
    const out = await this.output();
    if (drives.length === 0) {
      out.info('No removable drives found. Insert an SD card or USB stick (or attach an image with losetup).');
      return drives;
    }
    const rows = drives.map((d) => [d.device, formatBytes(d.size), d.model ?? (d.backingFile ? `loop: ${d.backingFile}` : '-'), d.readOnly ? 'yes' : 'no', d.mountpoints.join(', ') || '-']);
    out.result(table(['DEVICE', 'SIZE', 'MODEL', 'READ-ONLY', 'MOUNTED ON'], rows, (h) => out.chalk.bold(h)));
    return drives;
  }
}
