/**
 * The public URL's pure parts: which requests the proxy takes (path and subdomain mode), the
 * headers it passes, the URL the settings show, and --public-url-domain's check.
 */
import assert from 'node:assert/strict';
import { endToEnd, publicTarget } from '../../src/lib/server/http/public-url-proxy.js';
import { parsePublicUrlDomain, publicUrlOf } from '../../src/lib/server/services/public-url.js';
import { SkiffError } from '../../src/lib/errors/errors.js';

const UUID = '0123456789abcdef0123456789abcdef';

describe('public URL: requests, headers, URLs', () => {
  it('takes /d/<uuid>/<rest> with its query, the uuid in lower case; the API keeps everything else', () => {
    assert.deepEqual(publicTarget(`/d/${UUID}/a/b?q=1`, 'cloud.test', undefined), { uuid: UUID, path: '/a/b?q=1', prefix: `/d/${UUID}` });
    assert.deepEqual(publicTarget(`/d/${UUID.toUpperCase()}/`, undefined, undefined), { uuid: UUID, path: '/', prefix: `/d/${UUID}` });
    assert.equal(publicTarget('/devices', 'cloud.test', undefined), undefined);
    assert.equal(publicTarget('/d', 'cloud.test', undefined), undefined);
    assert.equal(publicTarget('/dd/x', 'cloud.test', undefined), undefined);
  });

  it('sends /d/<uuid> (no slash) to /d/<uuid>/, keeping the query', () => {
    assert.equal(publicTarget(`/d/${UUID}`, undefined, undefined)?.redirect, `/d/${UUID}/`);
    assert.equal(publicTarget(`/d/${UUID}?x=1`, undefined, undefined)?.redirect, `/d/${UUID}/?x=1`);
  });

  it('on a domain, a Host <uuid>.<domain> (any case, any port) is the device; other hosts and labels stay the API\'s', () => {
    assert.deepEqual(publicTarget('/x?y=1', `${UUID.toUpperCase()}.Devices.Example.com:8443`, 'devices.example.com'), { uuid: UUID, path: '/x?y=1', prefix: '' });
    assert.equal(publicTarget('/devices', 'api.devices.example.com', 'devices.example.com'), undefined);
    assert.equal(publicTarget('/devices', 'devices.example.com', 'devices.example.com'), undefined);
    assert.equal(publicTarget('/devices', `${UUID}.other.example.com`, 'devices.example.com'), undefined);
    assert.equal(publicTarget('/devices', `a.${UUID}.devices.example.com`, 'devices.example.com'), undefined);
  });

  it('drops hop-by-hop headers and those Connection names; keeps Upgrade for a WebSocket', () => {
    const headers = { host: 'h', connection: 'keep-alive, x-secret', 'keep-alive': 'timeout=5', 'x-secret': '1', te: 'trailers', 'transfer-encoding': 'chunked', 'proxy-authorization': 'Basic x', accept: 'text/html', 'set-cookie': ['a=1', 'b=2'] };
    assert.deepEqual(endToEnd(headers), { host: 'h', accept: 'text/html', 'set-cookie': ['a=1', 'b=2'] });
    assert.deepEqual(endToEnd({ host: 'h', connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' }, true), { host: 'h', 'sec-websocket-key': 'k', connection: 'Upgrade', upgrade: 'websocket' });
  });

  it("shows <public URL>/d/<uuid>/, or <scheme>://<uuid>.<domain>[:port]/ on a domain", () => {
    assert.equal(publicUrlOf({ publicUrl: 'https://cloud.example.com' }, UUID), `https://cloud.example.com/d/${UUID}/`);
    assert.equal(publicUrlOf({ publicUrl: 'http://127.0.0.1:48080' }, UUID), `http://127.0.0.1:48080/d/${UUID}/`);
    assert.equal(publicUrlOf({ publicUrl: 'https://cloud.example.com:8443', publicUrlDomain: 'devices.example.com' }, UUID), `https://${UUID}.devices.example.com:8443/`);
    assert.equal(publicUrlOf({ publicUrl: 'https://cloud.example.com', publicUrlDomain: 'devices.example.com' }, UUID), `https://${UUID}.devices.example.com/`);
  });

  it('--public-url-domain takes a DNS name (lower-cased, no trailing dot) and refuses anything else as a usage error', () => {
    assert.equal(parsePublicUrlDomain('Devices.Example.COM.'), 'devices.example.com');
    assert.equal(parsePublicUrlDomain('localhost'), 'localhost');
    for (const bad of ['', '*.devices.example.com', 'https://devices.example.com', 'dev ices.example.com', '-a.example.com', 'a..b', 'a_b.example.com', `${'a'.repeat(64)}.com`, 'devices.example.com:8080']) {
      assert.throws(() => parsePublicUrlDomain(bad), (err: unknown) => err instanceof SkiffError && err.code === 'usage' && /is not a DNS name/.test(err.message), bad);
    }
  });
});
