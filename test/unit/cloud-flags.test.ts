import assert from 'node:assert/strict';
import { Parser } from '@oclif/core';
import { scopeOf, short, tagScopeFlags, variableScopeFlags, when } from '../../src/cli/cloud.js';
import { ExitCode, SkiffError } from '../../src/lib/errors/errors.js';
import Login from '../../src/commands/login.js';
import Deploy from '../../src/commands/deploy.js';
import FleetCreate from '../../src/commands/fleet/create.js';
import EnvSet from '../../src/commands/env/set.js';

describe('cloud commands: flags', () => {
  it('env: exactly one of --fleet / --device, --service optional', async () => {
    const { flags } = await Parser.parse(['--fleet', 'kiosks', '--service', 'web'], { flags: variableScopeFlags });
    assert.deepEqual(scopeOf(flags, ['fleet', 'device']), { fleet: 'kiosks', service: 'web' });
    const d = await Parser.parse(['-d', '7cf02a6'], { flags: variableScopeFlags });
    assert.deepEqual(scopeOf(d.flags, ['fleet', 'device']), { device: '7cf02a6' });
    assert.throws(() => scopeOf({}, ['fleet', 'device']), (e: SkiffError) => e.exitCode === ExitCode.usage && /--fleet, --device/.test(e.message));
    await assert.rejects(Parser.parse(['--fleet', 'a', '--device', 'b'], { flags: variableScopeFlags }), /cannot also be provided/);
  });

  it('tag: one of --fleet / --device / --release', async () => {
    const { flags } = await Parser.parse(['--release', '3f2a9c1'], { flags: tagScopeFlags });
    assert.deepEqual(scopeOf(flags, ['fleet', 'device', 'release']), { release: '3f2a9c1' });
    await assert.rejects(Parser.parse(['--release', 'a', '--fleet', 'b'], { flags: tagScopeFlags }), /cannot also be provided/);
  });

  it('login: --token excludes --email and the passwords; --password excludes --password-file', async () => {
    await assert.rejects(Parser.parse(['--token', 'k', '--email', 'a@b.c'], { flags: Login.flags, args: Login.args }), /cannot also be provided/);
    await assert.rejects(Parser.parse(['--password', 'p', '--password-file', 'f'], { flags: Login.flags, args: Login.args }), /cannot also be provided/);
    const { args, flags } = await Parser.parse(['127.0.0.1:48080', '-e', 'a@b.c', '--password-file', 'pw'], { flags: Login.flags, args: Login.args });
    assert.equal(args.url, '127.0.0.1:48080');
    assert.deepEqual([flags.email, flags['password-file']], ['a@b.c', 'pw']);
  });

  it('deploy: --release-tag collects key/value pairs as balena-cli does', async () => {
    const { args, flags } = await Parser.parse(['kiosks', '--release-tag', 'version', '1.2', 'qa', '', '--draft', '--source', 'app'], { flags: Deploy.flags, args: Deploy.args });
    assert.equal(args.fleet, 'kiosks');
    assert.deepEqual(flags['release-tag'], ['version', '1.2', 'qa', '']);
    assert.equal(flags.draft, true);
    assert.equal(flags.source, 'app');
  });

  it('fleet create needs --type; env set needs a name and a value', async () => {
    await assert.rejects(Parser.parse(['kiosks'], { flags: FleetCreate.flags, args: FleetCreate.args }), /Missing required flag type/);
    await assert.rejects(Parser.parse(['NAME', '--fleet', 'f'], { flags: EnvSet.flags, args: EnvSet.args }), /Missing 1 required arg/);
  });

  it('times and commits as people read them', () => {
    assert.equal(when('2026-11-30T17:50:12.345Z'), '2026-11-30 17:50 UTC');
    assert.equal(when(null), '-');
    assert.equal(short('3f2a9c1d2e'), '3f2a9c1');
    assert.equal(short(null), '-');
  });
});
