/**
 * What the cloud device actions (device restart, reboot, shutdown, purge, identify by uuid) share:
 * send the action through the server, a spinner while the device answers, and its answer as the
 * result; a device that refused or failed is an error with its reason (exit 9), an offline device
 * a conflict (exit 14), a device that did not answer in time exit 13.
 */
import { CloudCommand } from './cloud.js';
import type { DeviceActionRequest, DeviceActionResult } from '../lib/api/events.js';
import { SkiffError } from '../lib/errors/errors.js';

/** A cloud action's result: the device's answer, for --json. */
export interface CloudActionResult extends DeviceActionResult {
  device: string;
  action: DeviceActionRequest['action'];
}

export abstract class DeviceActionCommand<T> extends CloudCommand<T> {
  /**
   * Runs `request` on the cloud device `uuid`; `doing` is the spinner's text ("Restarting").
   * @throws SkiffError deviceRefused (the device said no, with its reason), conflict (offline), serverUnreachable (no answer), notFound
   */
  protected async cloudAction(uuid: string, request: DeviceActionRequest, doing: string): Promise<CloudActionResult> {
    if (!(await this.isCloudDevice(uuid))) throw new SkiffError('usage', `'${uuid}' is not a device uuid: device ${request.action} works on cloud devices`, { hint: "'skiff device list' shows their uuids" });
    const out = await this.output();
    const spinner = out.spinner(`${doing} device ${uuid.slice(0, 7)} (waiting for its answer)`);
    let result: DeviceActionResult;
    try {
      result = await (await this.cloud()).deviceAction(uuid, request);
    } catch (err) {
      spinner.fail();
      throw err;
    }
    if (!result.ok) {
      spinner.fail();
      throw new SkiffError('deviceRefused', `device ${uuid.slice(0, 7)}: ${result.message}`);
    }
    spinner.succeed(`Device ${uuid.slice(0, 7)}: ${result.message}`);
    return { device: uuid, action: request.action, ...result };
  }

  /** Whether the argument names a cloud device (a uuid) rather than a LAN address. */
  protected async isCloudDevice(arg: string): Promise<boolean> {
    return (await import('../lib/cloud/client.js')).isDeviceUuid(arg);
  }
}
