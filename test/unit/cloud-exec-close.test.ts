import assert from 'node:assert/strict';
import { TUNNEL_CLOSE } from '../../src/lib/api/tunnel.js';
import { closeError } from '../../src/lib/cloud/exec.js';
import { ExitCode } from '../../src/lib/errors/errors.js';

describe('a session that ended without an exit status (closeError)', () => {
  const cases: Array<[number, keyof typeof ExitCode, RegExp]> = [
    [TUNNEL_CLOSE.deviceLost, 'serverUnreachable', /^device abc1234's connection to the server dropped$/],
    [TUNNEL_CLOSE.deviceReset, 'deviceUnreachable', /reset the session/],
    [TUNNEL_CLOSE.serverStopping, 'serverUnreachable', /the server is stopping/],
    [TUNNEL_CLOSE.protocol, 'error', /broke the protocol/],
    [1006, 'serverUnreachable', /the connection to the server dropped/],
    [TUNNEL_CLOSE.done, 'error', /without an exit status \(close code 1000\)/],
  ];
  for (const [code, exit, message] of cases) {
    it(`close ${code} → exit ${ExitCode[exit]}, one line`, () => {
      const err = closeError('device abc1234', code);
      assert.equal(err.exitCode, ExitCode[exit]);
      assert.match(err.message, message);
      assert.doesNotMatch(err.toLine(), /\n/);
    });
  }
});
