/**
 * Registration's record in config.json (written atomically: provisioning key out, deviceId and
 * registered_at in, everything else as the file had it), and the small pure helpers of cloud mode.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ipAddresses, isCloudConfig, targetHash } from '../../src/lib/agent/cloud/cloud-agent.js';
import { parseBearerChallenge, repositoryOf } from '../../src/lib/agent/cloud/pull-proxy.js';
import { isRegistered, recordRegistration } from '../../src/lib/agent/cloud/register.js';
import type { DeviceConfig } from '../../src/lib/agent/config.js';
import { scratchDir } from '../support/tmp.js';

describe('agent cloud: registration record and helpers', () => {
  it('records a registration: provisioning key removed, deviceId and registered_at set, other keys as the file has them, 0600', () => {
    const file = path.join(scratchDir('skiff-cloud-reg-'), 'config.json');
    writeFileSync(file, JSON.stringify({ apiEndpoint: 'https://c.example', apiKey: 'prov', uuid: 'abcdef1', deviceApiKey: 'k'.repeat(32), listenPort: 48484, custom: { a: 1 } }), { mode: 0o644 });
    const written = recordRegistration(file, 42, 1_700_000_000_000);
    const read = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    assert.deepEqual(read, written);
    assert.deepEqual(read, { apiEndpoint: 'https://c.example', uuid: 'abcdef1', deviceApiKey: 'k'.repeat(32), listenPort: 48484, custom: { a: 1 }, deviceId: 42, registered_at: 1_700_000_000_000 });
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(isRegistered(read), true);
  });

  it('registered means registered_at set and no provisioning key left', () => {
    assert.equal(isRegistered({}), false);
    assert.equal(isRegistered({ apiKey: 'p' }), false);
    assert.equal(isRegistered({ registered_at: 1, apiKey: 'p' }), false, 'a half-written registration registers again');
    assert.equal(isRegistered({ registered_at: 1 }), true);
  });

  it('cloud mode only with an apiEndpoint', () => {
    const base: DeviceConfig = { uuid: 'abcdef1', deviceType: 'intel-nuc', listenPort: 1, developmentMode: false, deviceApiKey: 'k' };
    assert.equal(isCloudConfig(base), false);
    assert.equal(isCloudConfig({ ...base, apiEndpoint: '' }), false);
    assert.equal(isCloudConfig({ ...base, apiEndpoint: 'https://c.example' }), true);
  });

  it('a target hash ignores key order', () => {
    assert.equal(targetHash({ a: 1, b: { c: [1, { d: 2, e: 3 }] } }), targetHash({ b: { c: [1, { e: 3, d: 2 }] }, a: 1 }));
    assert.notEqual(targetHash({ a: 1 }), targetHash({ a: 2 }));
  });

  it('IP addresses leave out loopback, container bridges and link-local', () => {
    const nic = (address: string, internal = false) => ({ address, internal, family: address.includes(':') ? 'IPv6' : 'IPv4', netmask: '', mac: '', cidr: null }) as never;
    assert.equal(ipAddresses({ lo: [nic('127.0.0.1', true)], eth0: [nic('10.0.0.2'), nic('fe80::1'), nic('2001:db8::2')], docker0: [nic('172.17.0.1')], 'br-1': [nic('172.18.0.1')], veth1: [nic('fe80::2')] }), '10.0.0.2 2001:db8::2');
  });

  it("registry challenges and paths: what the proxy asks a token for", () => {
    assert.deepEqual(parseBearerChallenge('Bearer realm="https://c.example/auth/v1/token",service="c.example",scope="repository:f/web:pull"'), { realm: 'https://c.example/auth/v1/token', service: 'c.example', scope: 'repository:f/web:pull' });
    assert.equal(parseBearerChallenge('Basic realm="x"'), undefined);
    assert.equal(parseBearerChallenge(undefined), undefined);
    assert.equal(repositoryOf('/v2/f1ee/web/manifests/sha256:abc'), 'f1ee/web');
    assert.equal(repositoryOf('/v2/f1ee/web/blobs/sha256:abc?x=1'), 'f1ee/web');
    assert.equal(repositoryOf('/v2/_catalog'), undefined);
    assert.equal(repositoryOf('/v2/'), undefined);
  });
});

describe('agent cloud: apiEndpoint', () => {
  it('an http(s) URL, without its trailing slash; anything else refused', async () => {
    const { checkApiEndpoint } = await import('../../src/lib/agent/cloud/client.js');
    assert.equal(checkApiEndpoint('https://c.example/'), 'https://c.example');
    assert.equal(checkApiEndpoint(' http://127.0.0.1:48080 '), 'http://127.0.0.1:48080');
    assert.equal(checkApiEndpoint('https://c.example/api/'), 'https://c.example/api');
    assert.throws(() => checkApiEndpoint('c.example'), /is not a URL/);
    assert.throws(() => checkApiEndpoint('ftp://c.example'), /must be an http/);
  });
});
