/** The configuration flags `os configure` and `os build-config` share, named as balena-cli names them. */
import { Flags } from '@oclif/core';
import type { ConfigureOptions, NetworkType } from '../lib/os/config-json.js';

export const configFlags = {
  fleet: Flags.string({ char: 'f', description: 'Fleet name (config.json applicationName), or its numeric id (applicationId).' }),
  'device-type': Flags.string({ description: "Device type slug, e.g. raspberrypi4-64 ('skiff devices supported' lists them)." }),
  version: Flags.string({ description: 'balenaOS version, e.g. 6.0.13 (default: read from the image); a production version refuses --dev.' }),
  dev: Flags.boolean({ description: 'Development mode (config.json developmentMode): unauthenticated root SSH and the engine on port 2375. --no-dev turns it off.', allowNo: true }),
  hostname: Flags.string({ description: 'Hostname of the device (config.json hostname).' }),
  'initial-device-name': Flags.string({ description: 'Name the device gets when it provisions (config.json initialDeviceName).' }),
  'ssh-key': Flags.string({ description: 'SSH public key file to allow (config.json os.sshKeys); repeatable.', multiple: true }),
  'config-network': Flags.string({ description: 'Network type: wifi writes system-connections/resin-wifi; ethernet removes it.', options: ['ethernet', 'wifi'] }),
  'config-wifi-ssid': Flags.string({ description: 'WiFi SSID (network name).' }),
  'config-wifi-key': Flags.string({ description: 'WiFi key (WPA passphrase); leave out for an open network.' }),
  'provisioning-key': Flags.string({ description: 'Provisioning API key the device registers with (config.json apiKey).' }),
  'api-endpoint': Flags.string({ description: 'Cloud API endpoint (config.json apiEndpoint), e.g. https://api.example.com.' }),
};

type ConfigFlagValues = {
  fleet?: string;
  'device-type'?: string;
  version?: string;
  dev?: boolean;
  hostname?: string;
  'initial-device-name'?: string;
  'config-network'?: string;
  'config-wifi-ssid'?: string;
  'config-wifi-key'?: string;
  'provisioning-key'?: string;
  'api-endpoint'?: string;
};

/** The flags as ConfigureOptions, validated (device type, hostname); SSH keys are read by the caller. */
export async function optionsFromFlags(flags: ConfigFlagValues, sshKeys: string[]): Promise<ConfigureOptions> {
  const { canonicalDeviceType, validateHostname } = await import('../lib/os/config-json.js');
  return {
    fleet: flags.fleet,
    deviceType: flags['device-type'] === undefined ? undefined : canonicalDeviceType(flags['device-type']),
    version: flags.version,
    dev: flags.dev,
    hostname: flags.hostname === undefined ? undefined : validateHostname(flags.hostname),
    initialDeviceName: flags['initial-device-name'],
    sshKeys,
    network: flags['config-network'] as NetworkType | undefined,
    wifiSsid: flags['config-wifi-ssid'],
    wifiKey: flags['config-wifi-key'],
    provisioningKey: flags['provisioning-key'],
    apiEndpoint: flags['api-endpoint'],
  };
}

/** The image or drive the `config` commands work on (balena-cli's --drive). */
export const driveFlag = Flags.string({ char: 'd', description: 'OS image file or drive (e.g. balena.img, /dev/sdb).', required: true });
