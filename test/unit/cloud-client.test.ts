import assert from 'node:assert/strict';
import net from 'node:net';
import { CloudClient, errorFromAnswer, errorFromFailure, isDeviceUuid, parseExpiryDate } from '../../src/lib/cloud/client.js';
import { ExitCode, SkiffError } from '../../src/lib/errors/errors.js';

const ctx = { url: 'http://127.0.0.1:48080' };

describe('cloud client: answers as errors (errorFromAnswer)', () => {
  const cases: Array<[number, unknown, keyof typeof ExitCode, RegExp]> = [
    [401, { statusCode: 401, error: 'Unauthorized', message: 'the API key was revoked' }, 'notLoggedIn', /the API key was revoked.*Run skiff login/],
    [401, undefined, 'notLoggedIn', /did not accept the token.*skiff login/],
    [401, { message: "unknown, expired or revoked token; log in again with 'skiff login'" }, 'notLoggedIn', /^http:\/\/127\.0\.0\.1:48080: unknown, expired or revoked token; log in again with 'skiff login'\.$/],
    [404, { statusCode: 404, error: 'Not Found', message: "fleet 'other' not found" }, 'notFound', /^fleet 'other' not found\.$/],
    [409, { statusCode: 409, error: 'Conflict', message: "a fleet named 'kiosks' exists" }, 'conflict', /a fleet named 'kiosks' exists/],
    [400, { statusCode: 400, error: 'Bad Request', message: 'must match pattern', field: 'body/name' }, 'usage', /^body\/name: must match pattern\.$/],
    [400, { statusCode: 400, error: 'Bad Request', message: 'body/name must match pattern', field: 'body/name' }, 'usage', /^body\/name must match pattern\.$/],
    [413, {}, 'usage', /too large/],
    [422, { message: 'release has no image for service web' }, 'usage', /no image for service web/],
    [403, { message: 'only administrators may add users' }, 'error', /only administrators.*administrator/],
    [429, { message: 'Rate limit exceeded' }, 'error', /Rate limit exceeded.*try again/],
    [503, { message: 'database unavailable' }, 'serverUnreachable', /answered 503: database unavailable/],
    [502, '<html>bad gateway</html>', 'serverUnreachable', /answered 502/],
    // The server's own 504 (a device that did not answer an action) is its message, without "is skiff server running?".
    [504, { statusCode: 504, error: 'Gateway Timeout', message: "device 7cf02a6 did not answer within 20 s; it may still act; check with 'skiff device info'" }, 'serverUnreachable', /^device 7cf02a6 did not answer within 20 s; it may still act; check with 'skiff device info'\.$/],
    [504, undefined, 'serverUnreachable', /answered 504\. Is skiff server running/],
    [500, { message: 'boom' }, 'error', /answered 500: boom/],
  ];
  for (const [status, body, code, text] of cases) {
    it(`${status} ${JSON.stringify(body)?.slice(0, 50) ?? ''} → ${code} (exit ${ExitCode[code]})`, () => {
      const err = errorFromAnswer(status, body, ctx);
      assert.equal(err.code, code);
      assert.equal(err.exitCode, ExitCode[code]);
      assert.match(err.toLine(), text);
    });
  }

  it('a 401 on login is a wrong email or password, naming skiff login', () => {
    const err = errorFromAnswer(401, { message: 'wrong email or password' }, { ...ctx, isLogin: true });
    assert.equal(err.exitCode, ExitCode.notLoggedIn);
    assert.match(err.toLine(), /^wrong email or password\. .*skiff login/);
  });
});

describe('cloud client: requests without an answer (errorFromFailure)', () => {
  const undici = (code: string) => Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error(`connect ${code}`), { code }) });
  for (const [code, text] of [['ECONNREFUSED', /refused the connection/], ['ENOTFOUND', /DNS does not know/], ['EAI_AGAIN', /DNS/], ['ECONNRESET', /closed the connection/], ['UND_ERR_CONNECT_TIMEOUT', /timed out/]] as const) {
    it(`${code} → serverUnreachable (13)`, () => {
      const err = errorFromFailure(undici(code), { ...ctx, timeoutMs: 1000 }) as SkiffError;
      assert.equal(err.exitCode, ExitCode.serverUnreachable);
      assert.match(err.toLine(), text);
    });
  }
  it('a TLS failure → serverUnreachable naming TLS', () => {
    const err = errorFromFailure(undici('DEPTH_ZERO_SELF_SIGNED_CERT'), { url: 'https://x', timeoutMs: 1000 }) as SkiffError;
    assert.equal(err.exitCode, ExitCode.serverUnreachable);
    assert.match(err.toLine(), /TLS connection to https:\/\/x failed/);
  });
  it('a timeout → serverUnreachable with the seconds', () => {
    const err = errorFromFailure(new DOMException('timed out', 'TimeoutError'), { ...ctx, timeoutMs: 30_000 }) as SkiffError;
    assert.equal(err.exitCode, ExitCode.serverUnreachable);
    assert.match(err.message, /did not answer within 30 s/);
  });
  it("the caller's own abort (Ctrl-C) → interrupted (130)", () => {
    const err = errorFromFailure(new DOMException('aborted', 'AbortError'), { ...ctx, timeoutMs: 1000, aborted: true }) as SkiffError;
    assert.equal(err.exitCode, ExitCode.interrupted);
  });
  it('anything else stays what it was (a bug, not the network)', () => {
    const bug = new RangeError('x');
    assert.equal(errorFromFailure(bug, { ...ctx, timeoutMs: 1000 }), bug);
  });

  it('a real refused connection on loopback is exit 13, and --debug lines never hold the token', async () => {
    const lines: string[] = [];
    // A loopback port that was just free: nothing listens there, the kernel refuses at once.
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const client = new CloudClient({ url: `http://127.0.0.1:${port}`, token: 'secret-token-value', onDebug: (l) => lines.push(l) });
    await assert.rejects(client.fleets(), (err: SkiffError) => err.exitCode === ExitCode.serverUnreachable && /refused/.test(err.message));
    assert.ok(lines.some((l) => l.includes(`GET http://127.0.0.1:${port}/fleets`)));
    assert.ok(lines.every((l) => !l.includes('secret-token-value')));
  });

  it('login bodies (the password) are never in the debug lines', async () => {
    const lines: string[] = [];
    const client = new CloudClient({ url: 'http://127.0.0.1:1', onDebug: (l) => lines.push(l) });
    await assert.rejects(client.login({ email: 'a@example.com', password: 'hunter22' }));
    assert.ok(lines.every((l) => !l.includes('hunter22')));
  });
});

describe('cloud client: inputs', () => {
  const now = new Date('2026-11-30T12:00:00Z');
  it('expiry dates: a day means its end (UTC), never/absent mean none', () => {
    assert.equal(parseExpiryDate('2027-01-31', now), '2027-01-31T23:59:59.999Z');
    assert.equal(parseExpiryDate('2026-12-01T08:00:00Z', now), '2026-12-01T08:00:00.000Z');
    assert.equal(parseExpiryDate('never', now), undefined);
    assert.equal(parseExpiryDate(undefined, now), undefined);
  });
  for (const bad of ['tomorrow', '31/01/2027', '2027-13-45', '2020-01-01']) {
    it(`refuses the expiry date ${bad} (exit 2)`, () => assert.throws(() => parseExpiryDate(bad, now), (e: SkiffError) => e.exitCode === ExitCode.usage));
  }
  it('a uuid (or 7+ hex prefix) is a cloud device; an address is a LAN device', () => {
    for (const id of ['7cf02a6', 'a'.repeat(32), 'ABCDEF0123']) assert.equal(isDeviceUuid(id), true, id);
    for (const a of ['192.168.1.23', '127.0.0.1:48484', 'mydevice.local', 'abc123', 'deadbeef.local', 'fe80::1']) assert.equal(isDeviceUuid(a), false, a);
  });
});
