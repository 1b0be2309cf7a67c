import assert from 'node:assert/strict';
import { localLabel, parsePortSpec, parsePortSpecs, remoteLabel, type PortSpec } from '../../src/lib/cloud/port-spec.js';
import { ExitCode, SkiffError } from '../../src/lib/errors/errors.js';

describe('device tunnel port specs (parsePortSpec)', () => {
  const good: Array<[string, Omit<PortSpec, 'spec'>]> = [
    ['80', { localAddress: '127.0.0.1', localPort: 80, remotePort: 80 }],
    ['65535', { localAddress: '127.0.0.1', localPort: 65535, remotePort: 65535 }],
    ['8080:80', { localAddress: '127.0.0.1', localPort: 8080, remotePort: 80 }],
    ['1:1', { localAddress: '127.0.0.1', localPort: 1, remotePort: 1 }],
    ['0.0.0.0:8080:80', { localAddress: '0.0.0.0', localPort: 8080, remotePort: 80 }],
    ['192.168.1.5:2222:22', { localAddress: '192.168.1.5', localPort: 2222, remotePort: 22 }],
    ['localhost:8080:80', { localAddress: 'localhost', localPort: 8080, remotePort: 80 }],
    ['[::1]:8080:80', { localAddress: '::1', localPort: 8080, remotePort: 80 }],
    ['5432:db:5432', { localAddress: '127.0.0.1', localPort: 5432, remotePort: 5432, service: 'db' }],
    ['8080:my-web_1.x:80', { localAddress: '127.0.0.1', localPort: 8080, remotePort: 80, service: 'my-web_1.x' }],
    ['0.0.0.0:8080:web:80', { localAddress: '0.0.0.0', localPort: 8080, remotePort: 80, service: 'web' }],
    ['[::]:8080:web:80', { localAddress: '::', localPort: 8080, remotePort: 80, service: 'web' }],
    [' 8080:80 ', { localAddress: '127.0.0.1', localPort: 8080, remotePort: 80 }],
  ];
  for (const [input, expected] of good) {
    it(`accepts ${JSON.stringify(input)}`, () => {
      assert.deepEqual(parsePortSpec(input), { spec: input, ...expected });
    });
  }

  const bad: Array<[string, RegExp]> = [
    ['', /port '': empty/],
    ['   ', /empty/],
    ['0', /the remote port 0 is outside 1-65535/],
    ['70000', /the remote port 70000 is outside 1-65535/],
    ['8080:0', /the remote port 0 is outside/],
    ['0:80', /the local port 0 is outside/],
    ['70000:80', /the local port 70000 is outside/],
    ['abc', /the remote port 'abc' is not a number/],
    ['-1', /the remote port '-1' is not a number/],
    ['80.5', /not a number/],
    ['web:80', /the local port 'web' is not a number/],
    ['8080:', /an empty part/],
    [':80', /an empty part/],
    ['8080::80', /an empty part/],
    ['1.2.3.4:80', /ambiguous: '1.2.3.4' is an address, so the local port is missing/],
    ['localhost:80', /ambiguous/],
    ['1.2.3:80:80', /'1.2.3' is not an IP address/],
    ['1.2.3.4:8080:80:90', /'80' is not a service name|not an IP address/],
    ['8080:-web:80', /'-web' is not a service name/],
    ['8080:we b:80', /'we b' is not a service name/],
    ['1:2:3:4:5', /too many parts/],
    ['[::1:8080:80', /IPv6 address in brackets/],
    ['::1:8080:80', /an empty part/],
    ['[1.2.3.4]:8080:80', /'1.2.3.4' is not an IPv6 address/],
    ['1.2.3.4:abc:80', /the local port 'abc' is not a number/],
  ];
  for (const [input, message] of bad) {
    it(`refuses ${JSON.stringify(input)} (one line, usage)`, () => {
      assert.throws(() => parsePortSpec(input), (err: unknown) => {
        assert.ok(err instanceof SkiffError);
        assert.equal(err.exitCode, ExitCode.usage);
        assert.match(err.message, message);
        assert.doesNotMatch(err.toLine(), /\n/);
        return true;
      });
    });
  }

  it('refuses two specs on the same local address and port, and none at all', () => {
    assert.throws(() => parsePortSpecs(['8080:80', '8080:81']), /127.0.0.1:8080 is already forwarded/);
    assert.throws(() => parsePortSpecs([]), /name at least one port/);
    assert.equal(parsePortSpecs(['8080:80', '0.0.0.0:8080:81']).length, 2);
  });

  it('labels both ends as people write them', () => {
    assert.equal(localLabel(parsePortSpec('[::1]:8080:80')), '[::1]:8080');
    assert.equal(localLabel(parsePortSpec('8080:80')), '127.0.0.1:8080');
    assert.equal(remoteLabel(parsePortSpec('8080:web:80')), 'web:80');
    assert.equal(remoteLabel(parsePortSpec('8080:80')), '80');
  });
});
