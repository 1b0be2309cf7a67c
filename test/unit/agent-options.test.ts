import assert from 'node:assert/strict';
import { parseAgentArgv } from '../../src/lib/agent/options.js';

describe('agent options (the direct start without oclif)', () => {
  it('gives the defaults, with SKIFF_AGENT_DATA for the data dir', () => {
    assert.deepEqual(parseAgentArgv([], {}), {
      'data-dir': '/var/lib/skiff-agent', config: undefined, 'listen-address': '0.0.0.0', 'listen-port': undefined, 'engine-port': 2375,
      'device-type': undefined, 'development-mode': undefined, 'rollback-grace': 10, advertise: true, 'reboot-command': undefined, 'shutdown-command': undefined,
      'host-shell': undefined,
    });
    assert.equal(parseAgentArgv([], { SKIFF_AGENT_DATA: '/data' })?.['data-dir'], '/data');
    assert.equal(parseAgentArgv(['--data-dir', '/flag'], { SKIFF_AGENT_DATA: '/data' })?.['data-dir'], '/flag');
  });

  it('takes the host commands for cloud reboot and shutdown from flags or the environment', () => {
    assert.equal(parseAgentArgv(['--reboot-command', 'systemctl reboot'], {})?.['reboot-command'], 'systemctl reboot');
    assert.equal(parseAgentArgv([], { SKIFF_AGENT_SHUTDOWN_COMMAND: 'systemctl poweroff' })?.['shutdown-command'], 'systemctl poweroff');
  });

  it('takes --host-shell and --no-host-shell (unset: the device\'s development mode decides)', () => {
    assert.equal(parseAgentArgv(['--host-shell'], {})?.['host-shell'], true);
    assert.equal(parseAgentArgv(['--no-host-shell'], {})?.['host-shell'], false);
    assert.equal(parseAgentArgv(['--host-shell', '--no-host-shell'], {}), undefined);
  });

  it('reads every flag, in both --flag value and --flag=value forms, and --no- booleans', () => {
    const v = parseAgentArgv(['--listen-port=48485', '--engine-port', '0', '--no-development-mode', '--no-advertise', '--rollback-grace', '3', '--device-type', 'raspberrypi4-64'], {});
    assert.equal(v?.['listen-port'], 48485);
    assert.equal(v?.['engine-port'], 0);
    assert.equal(v?.['development-mode'], false);
    assert.equal(v?.advertise, false);
    assert.equal(v?.['rollback-grace'], 3);
    assert.equal(v?.['device-type'], 'raspberrypi4-64');
  });

  for (const argv of [['--help'], ['--json'], ['-h', 'host'], ['--dockerHost', 'x'], ['--listen-port', '0'], ['--listen-port', '70000'], ['--engine-port', 'x'], ['--bogus'], ['positional'], ['--advertise', '--no-advertise']]) {
    it(`leaves ${argv.join(' ')} to oclif (help, JSON, engine flags, bad values)`, () => {
      assert.equal(parseAgentArgv(argv, {}), undefined);
    });
  }
});
