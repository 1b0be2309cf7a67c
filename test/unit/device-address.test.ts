import assert from 'node:assert/strict';
import { DEVICE_API_PORT, parseDeviceAddress } from '../../src/lib/device/client.js';
import { ExitCode, SkiffError } from '../../src/lib/errors/errors.js';

describe('device addresses (parseDeviceAddress)', () => {
  const good: Array<[string, string, number, string]> = [
    ['10.0.0.2', '10.0.0.2', DEVICE_API_PORT, 'http://10.0.0.2:48484'],
    ['0.0.0.0', '0.0.0.0', DEVICE_API_PORT, 'http://0.0.0.0:48484'],
    ['255.255.255.255:1', '255.255.255.255', 1, 'http://255.255.255.255:1'],
    ['127.0.0.1:48485', '127.0.0.1', 48485, 'http://127.0.0.1:48485'],
    [' 192.168.1.23 ', '192.168.1.23', DEVICE_API_PORT, 'http://192.168.1.23:48484'],
    ['mydevice.local', 'mydevice.local', DEVICE_API_PORT, 'http://mydevice.local:48484'],
    ['5e1b2c3.local.', '5e1b2c3.local.', DEVICE_API_PORT, 'http://5e1b2c3.local.:48484'],
    ['localhost:65535', 'localhost', 65535, 'http://localhost:65535'],
    ['a-b.example.com', 'a-b.example.com', DEVICE_API_PORT, 'http://a-b.example.com:48484'],
    [`${'a'.repeat(63)}.local`, `${'a'.repeat(63)}.local`, DEVICE_API_PORT, `http://${'a'.repeat(63)}.local:48484`],
    ['[::1]:48484', '::1', 48484, 'http://[::1]:48484'],
    ['[fe80::1%eth0]', 'fe80::1%eth0', DEVICE_API_PORT, 'http://[fe80::1%25eth0]:48484'],
  ];
  for (const [input, host, port, url] of good) {
    it(`accepts ${JSON.stringify(input)}`, () => {
      assert.deepEqual(parseDeviceAddress(input), { host, port, url });
    });
  }

  const bad: Array<[string, RegExp]> = [
    ['10.0.0.0.1', /an IPv4 address is four numbers from 0 to 255/],
    ['10.0.0', /an IPv4 address is four numbers/],
    ['10.0.0.256', /an IPv4 address is four numbers/],
    ['10.0.0.01', /an IPv4 address is four numbers/],
    ['1.2.3.4.', /an IPv4 address is four numbers/],
    ['', /the host is empty/],
    [':48484', /the host is empty/],
    ['my_device.local', /'my_device' is not a hostname label/],
    ['-dev.local', /'-dev' is not a hostname label/],
    ['dev-.local', /'dev-' is not a hostname label/],
    ['dev..local', /a hostname has no empty parts/],
    [`${'a'.repeat(64)}.local`, /is not a hostname label/],
    [`${'a.'.repeat(127)}ab`, /at most 253 characters/],
    ['http://10.0.0.2', /give the address without http:\/\//],
    ['10.0.0.2:48484:1', /too many colons/],
    ['dev.local/path', /'local\/path' is not a hostname label/],
    ['10.0.0.2:0', /the port '0' is not a number from 1 to 65535/],
    ['10.0.0.2:65536', /the port '65536' is not a number from 1 to 65535/],
    ['10.0.0.2:http', /the port 'http' is not a number/],
    ['10.0.0.2:', /the port '' is not a number/],
    ['10.0.0.2:-1', /the port '-1' is not a number/],
    ['::1', /an IPv6 address goes in brackets: \[::1\]/],
    ['[10.0.0.2]', /'10\.0\.0\.2' in brackets is not an IPv6 address/],
    ['[::g]', /in brackets is not an IPv6 address/],
    ['[::1]:99999', /the port '99999' is not a number/],
    ['[::1]x', /too many colons/],
  ];
  it("a uuid typed too short ('228', all digits, reads as an IPv4 address) says a cloud device's uuid needs 7 characters", () => {
    for (const input of ['228', '2280bd']) {
      let hint: string | undefined;
      try {
        // '2280bd' is a valid hostname: only its lookup fails, where DeviceClient gives the same hint.
        parseDeviceAddress(input);
      } catch (err) {
        hint = (err as SkiffError).hint;
      }
      if (input === '228') assert.match(hint ?? '', /cloud device's uuid needs at least 7 characters.*; or give an IPv4 address/);
      else assert.equal(hint, undefined);
    }
    assert.throws(() => parseDeviceAddress('10.0.0'), (err: unknown) => !/uuid/.test((err as SkiffError).hint ?? ''));
  });

  for (const [input, why] of bad) {
    it(`refuses ${JSON.stringify(input)} as a usage error saying why`, () => {
      assert.throws(() => parseDeviceAddress(input), (err: unknown) => {
        assert.ok(err instanceof SkiffError);
        assert.equal(err.exitCode, ExitCode.usage);
        assert.ok(err.message.startsWith(`invalid device address '${input}': `), err.message);
        assert.match(err.message, why);
        return true;
      });
    });
  }
});
