/** The config.json model: merging, network files, dotted keys, and the errors users see. */
import assert from 'node:assert/strict';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { buildConfig, canonicalDeviceType, mergeConfig, mistypedFields, networkOf, parseConfigJson, parseOsRelease, setConfigValue, validateHostname } from '../../src/lib/os/config-json.js';
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
    assert.throws(() => networkOf({ base: { wifiSsid: 42 as unknown as string } }), usage(/^wifiSsid in --config must be a string, not 42\./));
    assert.throws(() => networkOf({ base: { wifiSsid: 'a', wifiKey: ['x'] as unknown as string } }), usage(/wifiKey in --config must be a string, not \["x"\]/));
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
    const c = setConfigValue({ hostname: 'a', listenPort: 48484 }, 'os.network.connectivity.interval', '300').config;
    assert.deepEqual(c.os, { network: { connectivity: { interval: '300' } } });
    assert.equal(setConfigValue({}, 'persistentLogging', 'true').config.persistentLogging, true);
    assert.equal(setConfigValue({}, 'listenPort', '1234').config.listenPort, 1234);
    assert.equal(setConfigValue({ custom: 5 }, 'custom', '7').config.custom, 7);
    assert.deepEqual(setConfigValue({}, 'os.sshKeys', 'ssh-ed25519 AAAA k').config.os, { sshKeys: ['ssh-ed25519 AAAA k'] });
    assert.deepEqual(setConfigValue({}, 'os.sshKeys', '["a","b"]').config.os, { sshKeys: ['a', 'b'] });
    assert.equal(setConfigValue({ hostname: 'a' }, 'hostname', 'b').config.hostname, 'b');
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

describe('config write does not replace a value of another type, but repairs a known field (setConfigValue)', () => {
  /** config.json as read from a file: any field may hold any type. */
  const stored = (config: Record<string, unknown>) => config;
  const refused = (config: Record<string, unknown>, key: string, value: string, pattern: RegExp) =>
    assert.throws(() => setConfigValue(config, key, value), usage(pattern), `${key}=${value} over ${JSON.stringify(config)}`);

  it('a key under a value that is not an object: refused, naming the key and both types, at any depth', () => {
    refused({ hostname: 'kiosk' }, 'hostname.sub', 'x', /^cannot set hostname\.sub: hostname holds a string, not an object\./);
    refused({ listenPort: 48484 }, 'listenPort.x', 'x', /cannot set listenPort\.x: listenPort holds a number, not an object/);
    refused({ developmentMode: true }, 'developmentMode.a.b', 'x', /developmentMode holds a boolean, not an object/);
    refused({ os: { sshKeys: ['k'] } }, 'os.sshKeys.0', 'x', /cannot set os\.sshKeys\.0: os\.sshKeys holds a list, not an object/);
    refused({ os: { network: { connectivity: 'off' } } }, 'os.network.connectivity.interval', '300', /os\.network\.connectivity holds a string, not an object/);
  });

  it('an object replaced by a value: refused', () => {
    refused({ os: { sshKeys: [] } }, 'os', 'x', /^cannot set os: it holds an object, which a string would replace\./);
    refused({ a: { b: { c: 1 } } }, 'a.b', '2', /cannot set a\.b: it holds an object/);
  });

  it('a field of unknown type holding another type than the value converts to: refused', () => {
    refused({ custom: 5 }, 'custom', 'five', /^custom is a number, not 'five'\.$/);
    refused({ flag: false }, 'flag', 'maybe', /flag is true or false, not 'maybe'/);
    refused({ custom: ['a'] }, 'custom', '["a"', /^invalid JSON value: /);
  });

  it('a field of known type stored as another type (as balena-cli writes it): repaired by a value that converts, and said', () => {
    const repairs: Array<[string, unknown, string, unknown, string]> = [
      ['listenPort', '48484', '48485', 48485, 'string'],
      ['listenPort', true, '48485', 48485, 'boolean'],
      ['listenPort', ['48484'], '1', 1, 'list'],
      ['applicationId', '1234', '1234', 1234, 'string'],
      ['appUpdatePollInterval', '600000', '900000', 900000, 'string'],
      ['vpnPort', '443', '443', 443, 'string'],
      ['persistentLogging', 'false', 'true', true, 'string'],
      ['persistentLogging', 1, 'false', false, 'number'],
      ['developmentMode', 'yes', 'true', true, 'string'],
      ['localMode', 'true', 'false', false, 'string'],
    ];
    for (const [key, stored, value, written, held] of repairs) {
      const reads = typeof written === 'number' ? 'number' : 'boolean';
      const { config, repaired } = setConfigValue({ [key]: stored, hostname: 'h' }, key, value);
      assert.deepEqual(config, { [key]: written, hostname: 'h' }, `${key}=${value} over ${JSON.stringify(stored)}`);
      assert.deepEqual(repaired, { key, held, reads });
    }
    const keys = setConfigValue(stored({ os: { sshKeys: 'ssh-ed25519 AAAA k', udevRules: {} } }), 'os.sshKeys', 'ssh-ed25519 AAAA k');
    assert.deepEqual(keys.config, { os: { sshKeys: ['ssh-ed25519 AAAA k'], udevRules: {} } });
    assert.deepEqual(keys.repaired, { key: 'os.sshKeys', held: 'string', reads: 'list' });
    assert.deepEqual(setConfigValue(stored({ os: { sshKeys: 7 } }), 'os.sshKeys', '["a","b"]'), { config: { os: { sshKeys: ['a', 'b'] } }, repaired: { key: 'os.sshKeys', held: 'number', reads: 'list' } });
    // The right type, a missing field or a null repairs nothing.
    assert.deepEqual(setConfigValue({ listenPort: 1 }, 'listenPort', '2'), { config: { listenPort: 2 } });
    assert.deepEqual(setConfigValue({}, 'persistentLogging', 'true'), { config: { persistentLogging: true } });
    assert.deepEqual(setConfigValue(stored({ listenPort: null }), 'listenPort', '2'), { config: { listenPort: 2 } });
    // An unknown field keeps its stored type: a string stays a string, with no note.
    assert.deepEqual(setConfigValue({ custom: '5' }, 'custom', '7'), { config: { custom: '7' } });
  });

  it('a repair still needs a value that converts, and never replaces an object or goes under a non-object', () => {
    refused({ listenPort: '48484' }, 'listenPort', 'http', /^listenPort is a number, not 'http'\.$/);
    refused({ developmentMode: 'yes' }, 'developmentMode', 'yes', /developmentMode is true or false, not 'yes'/);
    refused({ os: { sshKeys: 'k' } }, 'os.sshKeys', '["a"', /^invalid JSON value: /);
    refused({ listenPort: { port: 1 } }, 'listenPort', '1', /^cannot set listenPort: it holds an object, which a number would replace\./);
    refused({ os: { sshKeys: { a: 'k' } } }, 'os.sshKeys', 'k', /^cannot set os\.sshKeys: it holds an object, which a list would replace\./);
    refused({ os: 'x' }, 'os.sshKeys', 'k', /^cannot set os\.sshKeys: os holds a string, not an object\./);
    refused({ listenPort: '48484' }, 'listenPort.x', '1', /^cannot set listenPort\.x: listenPort holds a string, not an object\./);
  });

  it('mistypedFields names each known field stored as another type (what config inject warns of)', () => {
    assert.deepEqual(mistypedFields(stored({ listenPort: '48484', persistentLogging: 'false', hostname: 'h', custom: '1', os: { sshKeys: 'notalist' } })), [
      { key: 'persistentLogging', held: 'string', reads: 'boolean' },
      { key: 'listenPort', held: 'string', reads: 'number' },
      { key: 'os.sshKeys', held: 'string', reads: 'list' },
    ]);
    assert.deepEqual(mistypedFields(stored({ listenPort: 48484, developmentMode: true, applicationId: null, os: { sshKeys: [] } })), []);
    assert.deepEqual(mistypedFields(stored({ os: 'x' })), [], 'a field under a non-object is not looked at');
    assert.deepEqual(mistypedFields({ vpnPort: { a: 1 } }), [{ key: 'vpnPort', held: 'object', reads: 'number' }]);
  });

  it('the same type, a missing key or a null (unset) is written; the input object is never changed', () => {
    const config = { hostname: 'a', os: { network: {} }, n: null };
    assert.equal(setConfigValue(config, 'hostname', 'b').config.hostname, 'b');
    assert.deepEqual(setConfigValue(config, 'os.network.connectivity.interval', '300').config.os, { network: { connectivity: { interval: '300' } } });
    assert.deepEqual(setConfigValue(config, 'n.x', 'y').config.n, { x: 'y' });
    assert.equal(setConfigValue(config, 'n', 'y').config.n, 'y');
    // Numeric segments name object fields, as in balena-cli: udevRules stays a dictionary.
    assert.deepEqual(setConfigValue({ os: { udevRules: { '56': 'a' } } }, 'os.udevRules.101', 'b').config.os, { udevRules: { '56': 'a', '101': 'b' } });
    assert.deepEqual(setConfigValue({}, 'os.udevRules.101', 'b').config.os, { udevRules: { '101': 'b' } });
    assert.deepEqual(config, { hostname: 'a', os: { network: {} }, n: null });
  });
});
