import assert from 'node:assert/strict';
import { basicCredentials, FailedAuthLimiter, MAX_CGI_HEAD, parseCgiHead, parseGitPath } from '../../src/lib/server/git/smart-http.js';
import { hookScript } from '../../src/lib/server/git/repositories.js';
import { hookEnv, readHookEnv, socketUrl } from '../../src/lib/server/git/hook-env.js';

describe('git smart HTTP: request paths', () => {
  const ok: Array<[string, string | undefined, { fleet: string; rest: string; access: 'read' | 'write' }]> = [
    ['/git/robots.git/info/refs', 'git-upload-pack', { fleet: 'robots', rest: '/info/refs', access: 'read' }],
    ['/git/robots.git/info/refs', 'git-receive-pack', { fleet: 'robots', rest: '/info/refs', access: 'write' }],
    ['/git/robots.git/git-upload-pack', undefined, { fleet: 'robots', rest: '/git-upload-pack', access: 'read' }],
    ['/git/robots.git/git-receive-pack', undefined, { fleet: 'robots', rest: '/git-receive-pack', access: 'write' }],
    ['/git/robots/info/refs', 'git-upload-pack', { fleet: 'robots', rest: '/info/refs', access: 'read' }],
    ['/git/my.fleet.git.git/git-upload-pack', undefined, { fleet: 'my.fleet.git', rest: '/git-upload-pack', access: 'read' }],
    ['/git/a%2Db.git/git-upload-pack', undefined, { fleet: 'a-b', rest: '/git-upload-pack', access: 'read' }],
  ];
  for (const [path, service, expected] of ok) {
    it(`${path}${service ? `?service=${service}` : ''} → ${expected.fleet} ${expected.access}`, () => assert.deepEqual(parseGitPath(path, service), expected));
  }
  const bad: Array<[string, string | undefined, number, RegExp]> = [
    ['/git/', undefined, 404, /\/git\/<fleet>\.git/],
    ['/git/robots.git/info/refs', undefined, 403, /smart HTTP/],
    ['/git/robots.git/info/refs', 'git-upload-archive', 403, /unknown git service/],
    ['/git/robots.git/objects/info/packs', undefined, 404, /not a smart HTTP path/],
    ['/git/robots.git/HEAD', undefined, 404, /not a smart HTTP path/],
    ['/git/robots.git', undefined, 404, /not a smart HTTP path/],
    ['/git/..%2F..%2Fetc.git/info/refs', 'git-upload-pack', 404, /repository not found/],
    ['/git/%E0%A4%A.git/info/refs', 'git-upload-pack', 404, /repository not found/],
    ['/git/-x.git/info/refs', 'git-upload-pack', 404, /repository not found/],
  ];
  for (const [path, service, status, message] of bad) {
    it(`${path}${service ? `?service=${service}` : ''} → ${status}`, () => {
      const answer = parseGitPath(path, service);
      assert.ok('status' in answer, JSON.stringify(answer));
      assert.equal(answer.status, status);
      assert.match(answer.message, message);
    });
  }
});

describe('git smart HTTP: basic credentials', () => {
  const basic = (text: string) => `Basic ${Buffer.from(text).toString('base64')}`;
  it('reads user and password', () => assert.deepEqual(basicCredentials(basic('me@x.io:ska_123')), { user: 'me@x.io', password: 'ska_123' }));
  it('keeps colons in the password', () => assert.deepEqual(basicCredentials(basic('u:a:b')), { user: 'u', password: 'a:b' }));
  it('an empty username is fine', () => assert.deepEqual(basicCredentials(basic(':tok')), { user: '', password: 'tok' }));
  for (const header of [undefined, '', 'Bearer abc', 'Basic', `Basic ${Buffer.from('nocolon').toString('base64')}`, 'Basic !!!']) {
    it(`none in ${JSON.stringify(header)}`, () => assert.equal(basicCredentials(header), undefined));
  }
});

describe('git smart HTTP: the CGI head of http-backend', () => {
  it('waits for the blank line', () => assert.equal(parseCgiHead(Buffer.from('Content-Type: text/plain\r\n')), undefined));
  it('reads status, headers and where the body starts (CRLF)', () => {
    const raw = Buffer.from('Status: 404 Not Found\r\nContent-Type: text/plain\r\nExpires: never\r\n\r\nbody');
    const head = parseCgiHead(raw);
    assert.deepEqual(head && { status: head.status, headers: head.headers }, { status: 404, headers: [['Content-Type', 'text/plain'], ['Expires', 'never']] });
    assert.equal(raw.subarray(head?.bodyStart).toString(), 'body');
  });
  it('reads LF-only heads, status 200 by default', () => {
    const raw = Buffer.from('Content-Type: application/x-git-upload-pack-advertisement\n\n001e# service');
    const head = parseCgiHead(raw);
    assert.equal(head?.status, 200);
    assert.equal(raw.subarray(head?.bodyStart).toString(), '001e# service');
  });
  it('a Location without Status is a redirect', () => assert.equal(parseCgiHead(Buffer.from('Location: /x\n\n'))?.status, 302));
  it('keeps binary bodies intact', () => {
    const raw = Buffer.concat([Buffer.from('Content-Type: a/b\n\n'), Buffer.from([0, 0x0a, 0x0a, 0xff])]);
    assert.deepEqual([...raw.subarray(parseCgiHead(raw)?.bodyStart)], [0, 0x0a, 0x0a, 0xff]);
  });
  it('refuses a header line without a name', () => assert.throws(() => parseCgiHead(Buffer.from('garbage\n\n')), /without a name/));
  it('refuses a bad Status', () => assert.throws(() => parseCgiHead(Buffer.from('Status: OK\n\n')), /bad Status/));
  it('refuses an endless head', () => assert.throws(() => parseCgiHead(Buffer.alloc(MAX_CGI_HEAD + 1, 0x41)), /no end of headers/));
});

describe('git smart HTTP: failed logins per address', () => {
  it('blocks past the limit until the oldest failure is a minute old', () => {
    let now = 1_000_000;
    const limiter = new FailedAuthLimiter(3, 60_000, () => now);
    for (let i = 0; i < 3; i++) {
      assert.equal(limiter.blockedFor('1.2.3.4'), 0);
      limiter.fail('1.2.3.4');
      now += 1000;
    }
    assert.equal(limiter.blockedFor('1.2.3.4'), 57_000);
    assert.equal(limiter.blockedFor('5.6.7.8'), 0, 'another address is not blocked');
    now += 57_000;
    assert.equal(limiter.blockedFor('1.2.3.4'), 0);
  });
});

describe('git hook: the script and its environment', () => {
  it('names both absolute paths, quoted for sh', () => {
    const script = hookScript({ node: '/opt/node 20/bin/node', script: "/srv/it's/pre-receive.js" });
    assert.match(script, /^#!\/bin\/sh\n/);
    assert.match(script, /\nexec '\/opt\/node 20\/bin\/node' '\/srv\/it'\\''s\/pre-receive\.js' "\$@"\n/);
  });
  it('passes the settings through the environment and reads them back', () => {
    const settings = { api: 'http://127.0.0.1:1', token: 'ska_x', fleet: 'robots', secret: 'abc' };
    assert.deepEqual(readHookEnv(hookEnv(settings)), settings);
    assert.deepEqual(readHookEnv({}), { missing: 'SKIFF_HOOK_API' });
  });
  for (const [socket, url] of [
    [{ localAddress: '127.0.0.1', localPort: 48080 }, 'http://127.0.0.1:48080'],
    [{ localAddress: '::ffff:10.0.0.2', localPort: 80, encrypted: true }, 'https://10.0.0.2:80'],
    [{ localAddress: '::1', localPort: 5 }, 'http://[::1]:5'],
  ] as const) {
    it(`the server as its socket reaches it: ${url}`, () => assert.equal(socketUrl(socket), url));
  }
});
