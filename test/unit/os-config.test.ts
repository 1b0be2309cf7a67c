/** The config.json model: merging, network files, dotted keys, and the errors users see. */
import assert from 'node:assert/strict';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { buildConfig, canonicalDeviceType, mergeConfig, networkOf, parseConfigJson, parseOsRelease, setConfigValue, validateHostname } from '../../src/lib/os/config-json.js';
import { wifiConnection } from '../../src/lib/os/network-connections.js';

const usage = (pattern: RegExp) => (e: unknown) => e instanceof SkiffError && e.code === 'usage' && pattern.test(e.toLine());

describe('balenaOS config.json (os/config-json.ts, os/network-connections.ts)', () => {
  it('merges: the image first, then --config, then flags; fields not given are kept', () => {
    const existing = { deviceType: 'raspberrypi3', uuid: 'abc123', hostname: 'old', os: { sshKeys: ['ssh-ed25519 AAAA one'], udevRules: { '56': 'x' } } };
    const merged = mergeConfig(existing, {
      base: { applicationName: 'from-file', persistentLogging: true },
      fleet: 'myfleet',
      hostname: 'kiosk-1',
      dev: true,
      sshKeys: ['ssh-ed25519 AAAA one', 'ssh-rsa BBBB two'],
      provisioningKey: 'pk',
      apiEndpoint: 'https://api.example.com',
      initialDeviceName: 'first',
    });
    assert.deepEqual(merged, {
      deviceType: 'raspberrypi3',
      uuid: 'abc123',
      hostname: 'kiosk-1',
      os: { sshKeys: ['ssh-ed25519 AAAA one', 'ssh-rsa BBBB two'], udevRules: { '56': 'x' } },
      applicationName: 'myfleet',
      persistentLogging: true,
      developmentMode: true,
      apiKey: 'pk',
      apiEndpoint: 'https://api.example.com',
      initialDeviceName: 'first',
      listenPort: 48484,
    });
    assert.equal(mergeConfig({}, { fleet: '1234' }).applicationId, 1234);
    assert.equal(mergeConfig({ developmentMode: true }, { dev: false }).developmentMode, false);
    assert.equal(mergeConfig({ developmentMode: true }, {}).developmentMode, true);
  });

  it('build-config records WiFi as wifiSsid/wifiKey, as balena-generated configs do', () => {
    assert.deepEqual(buildConfig({ deviceType: 'intel-nuc', network: 'wifi', wifiSsid: 'home', wifiKey: 'password1' }), { deviceType: 'intel-nuc', listenPort: 48484, wifiSsid: 'home', wifiKey: 'password1' });
    assert.deepEqual(buildConfig({ deviceType: 'intel-nuc', network: 'ethernet' }), { deviceType: 'intel-nuc', listenPort: 48484 });
  });

  it('reads the network from flags or --config, and refuses WiFi without an SSID or with a short key', () => {
    assert.deepEqual(networkOf({ base: { wifiSsid: 'a', wifiKey: 'password1' } }), { type: 'wifi', ssid: 'a', key: 'password1' });
    assert.deepEqual(networkOf({ network: 'ethernet' }), { type: 'ethernet' });
    assert.equal(networkOf({}), undefined);
    assert.throws(() => networkOf({ network: 'wifi' }), usage(/needs its SSID.*--config-wifi-ssid/));
    assert.throws(() => networkOf({ network: 'wifi', wifiSsid: 'x', wifiKey: 'short' }), usage(/8 to 63 characters/));
  });

  it('writes a NetworkManager keyfile; a template keeps its other settings; an open network has no security', () => {
    const file = wifiConnection('My Net', 'password1');
    assert.match(file, /^\[connection\]\nid=resin-wifi\ntype=wifi\n/);
    assert.match(file, /\[wifi\]\n(.*\n)*ssid=My Net\n/);
    assert.match(file, /\[wifi-security\]\n(.*\n)*key-mgmt=wpa-psk\npsk=password1\n/);
    assert.match(file, /\[ipv4\]\nmethod=auto/);
    const open = wifiConnection('cafe', undefined);
    assert.doesNotMatch(open, /wifi-security|psk/);
    const templated = wifiConnection('x', 'password2', '[connection]\nid=custom\ntype=wifi\n\n[wifi]\nssid=old\nmode=infrastructure\n\n[ipv4]\nmethod=manual\naddress1=10.0.0.2/24\n');
    assert.match(templated, /id=custom/);
    assert.match(templated, /ssid=x/);
    assert.match(templated, /address1=10\.0\.0\.2\/24/);
    assert.match(templated, /psk=password2/);
  });

  it('config write: dotted keys make objects; strings as balena writes them; typed fields converted', () => {
    const c = setConfigValue({ hostname: 'a', listenPort: 48484 }, 'os.network.connectivity.interval', '300');
    assert.deepEqual(c.os, { network: { connectivity: { interval: '300' } } });
    assert.equal(setConfigValue({}, 'persistentLogging', 'true').persistentLogging, true);
    assert.equal(setConfigValue({}, 'listenPort', '1234').listenPort, 1234);
    assert.equal(setConfigValue({ custom: 5 }, 'custom', '7').custom, 7);
    assert.deepEqual(setConfigValue({}, 'os.sshKeys', 'ssh-ed25519 AAAA k').os, { sshKeys: ['ssh-ed25519 AAAA k'] });
    assert.deepEqual(setConfigValue({}, 'os.sshKeys', '["a","b"]').os, { sshKeys: ['a', 'b'] });
    assert.equal(setConfigValue({ hostname: 'a' }, 'hostname', 'b').hostname, 'b');
    assert.throws(() => setConfigValue({}, 'developmentMode', 'yes'), usage(/true or false/));
    assert.throws(() => setConfigValue({}, 'listenPort', 'http'), usage(/is a number/));
    assert.throws(() => setConfigValue({}, '__proto__.x', '1'), usage(/not a valid/));
  });

  it('invalid JSON names file:line:col', () => {
    assert.throws(() => parseConfigJson('{\n  "a": 1,\n  "b": }\n', 'cfg.json'), (e: unknown) => e instanceof SkiffError && e.where === 'cfg.json:3:8' && /^cfg\.json:3:8: invalid JSON/.test(e.toLine()));
    assert.throws(() => parseConfigJson('{"a": 1', 'c.json'), (e: unknown) => e instanceof SkiffError && e.where === 'c.json:1:8');
    assert.throws(() => parseConfigJson('[1]', 'c.json'), usage(/must hold a JSON object/));
  });

  it('device types: aliases become slugs; a typo gets a did-you-mean', () => {
    assert.equal(canonicalDeviceType('rpi4'), 'raspberrypi4-64');
    assert.equal(canonicalDeviceType('intel-nuc'), 'intel-nuc');
    assert.throws(() => canonicalDeviceType('raspberypi4-64'), usage(/unknown device type 'raspberypi4-64' \(did you mean 'raspberrypi4-64'\?\)/));
    assert.throws(() => canonicalDeviceType('toaster'), usage(/^unknown device type 'toaster'\. 'skiff devices supported' lists them\.$/));
  });

  it('hostnames and os-release', () => {
    assert.equal(validateHostname('kiosk-1'), 'kiosk-1');
    assert.throws(() => validateHostname('-bad'), usage(/not a valid hostname/));
    assert.throws(() => validateHostname('a.b'), usage(/not a valid hostname/));
    assert.deepEqual(parseOsRelease('NAME="balenaOS"\nVERSION="6.0.13"\nVERSION_ID=6.0.13\n'), { NAME: 'balenaOS', VERSION: '6.0.13', VERSION_ID: '6.0.13' });
  });
});
