/**
 * The pure parts of the breaker pass's fixes, by table: text a device sent made printable, an
 * answer that is not a skiff server's, and an https URL for a plain-HTTP server.
 */
import assert from 'node:assert/strict';
import { errorFromAnswer, errorFromFailure } from '../../src/lib/cloud/client.js';
import { printable } from '../../src/lib/cloud/printable.js';
import { ExitCode, type SkiffError } from '../../src/lib/errors/errors.js';

describe('cloud breaker: printable text from devices', () => {
  const cases: Array<[string, string]> = [
    ['Debian GNU/Linux 12', 'Debian GNU/Linux 12'],
    ['grüße ✓ 日本', 'grüße ✓ 日本'],
    ['a\u001b[31mb', 'a\\x1b[31mb'],
    ['\u001b]52;c;eA==\u0007', '\\x1b]52;c;eA==\\x07'],
    ['line\nnext\r\tx', 'line\\x0anext\\x0d\\x09x'],
    ['\u0000\u007f\u009b', '\\x00\\x7f\\x9b'],
    ['', ''],
  ];
  for (const [input, output] of cases) it(`${JSON.stringify(input)} → ${JSON.stringify(output)}`, () => assert.equal(printable(input), output));
  it('null and undefined pass through', () => {
    assert.equal(printable(null), null);
    assert.equal(printable(undefined), undefined);
  });
});

describe('cloud breaker: an answer that is not a skiff server', () => {
  const ctx = { url: 'http://127.0.0.1:48484' };
  it("a device API's {status, message} is exit 13 naming it, on login too (not 'wrong password')", () => {
    for (const [status, isLogin] of [[401, true], [401, false], [404, true], [400, false]] as const) {
      const err = errorFromAnswer(status, { status: 'failed', message: 'Unauthorized' }, { ...ctx, isLogin });
      assert.equal(err.exitCode, ExitCode.serverUnreachable, `${status}`);
      assert.match(err.toLine(), /device's API.*not a skiff server.*48080/);
    }
  });
  it('a non-JSON 404, 405 or 501 is exit 13; a non-JSON 401 or 502 stays what it was', () => {
    for (const status of [404, 405, 501]) assert.equal(errorFromAnswer(status, undefined, ctx).exitCode, ExitCode.serverUnreachable);
    assert.equal(errorFromAnswer(401, undefined, ctx).exitCode, ExitCode.notLoggedIn);
    assert.equal(errorFromAnswer(502, undefined, ctx).exitCode, ExitCode.serverUnreachable);
  });
  it("the server's own answers keep their meaning", () => {
    assert.equal(errorFromAnswer(404, { statusCode: 404, error: 'Not Found', message: "fleet 'x' not found" }, ctx).exitCode, ExitCode.notFound);
    assert.equal(errorFromAnswer(401, { statusCode: 401, error: 'Unauthorized', message: 'wrong email or password' }, { ...ctx, isLogin: true }).exitCode, ExitCode.notLoggedIn);
  });
});

describe('cloud breaker: TLS failures in one line', () => {
  const tls = (code: string, message: string) => Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error(message), { code }) });
  it('an https URL for a plain-HTTP server says so and names the http URL', () => {
    const err = errorFromFailure(tls('ERR_SSL_WRONG_VERSION_NUMBER', '80FC:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/openssl/ssl3_record.c:350:\n'), { url: 'https://h:48080', timeoutMs: 1000 }) as SkiffError;
    assert.equal(err.exitCode, ExitCode.serverUnreachable);
    assert.equal(err.toLine().split('\n').length, 1);
    assert.match(err.toLine(), /does not speak HTTPS.*http:\/\/h:48080/);
  });
  it("other TLS failures give Node's one-line reason, or the code instead of OpenSSL's text", () => {
    const selfSigned = errorFromFailure(tls('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate'), { url: 'https://h', timeoutMs: 1000 }) as SkiffError;
    assert.match(selfSigned.toLine(), /failed: self-signed certificate/);
    const openssl = errorFromFailure(tls('ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE', 'C0:error:0A000410:SSL routines:ssl3_read_bytes:sslv3 alert handshake failure:x.c:1:\n'), { url: 'https://h', timeoutMs: 1000 }) as SkiffError;
    assert.match(openssl.toLine(), /failed: ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE/);
    assert.equal(openssl.toLine().split('\n').length, 1);
  });
});
