import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { scratchDir } from '../support/tmp.js';
import {
  DEFAULT_SERVER_URL, credentialsFile, normaliseServerUrl, readPasswordFile, readStoredCredentials, removeCredentials, requireToken, resolveCredentials, saveCredentials,
} from '../../src/lib/cloud/credentials.js';
import { ExitCode, SkiffError } from '../../src/lib/errors/errors.js';

const mode = (p: string) => statSync(p).mode & 0o777;

describe('cloud credentials (~/.skiff/credentials.json)', () => {
  let env: NodeJS.ProcessEnv;
  beforeEach(() => {
    env = { HOME: scratchDir('skiff-home-') };
  });

  it('saves the URL and token with the folder 0700 and the file 0600, and reads them back', () => {
    const file = saveCredentials({ url: 'http://127.0.0.1:48080', token: 'tok-1', email: 'a@example.com' }, env);
    assert.equal(file, path.join(env.HOME!, '.skiff', 'credentials.json'));
    assert.equal(mode(path.dirname(file)), 0o700);
    assert.equal(mode(file), 0o600);
    assert.deepEqual(readStoredCredentials(env), { url: 'http://127.0.0.1:48080', token: 'tok-1', email: 'a@example.com' });
  });

  it('tightens a folder and a file that were readable by others, and leaves no temporary file', () => {
    const dir = path.join(env.HOME!, '.skiff');
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    writeFileSync(path.join(dir, 'credentials.json'), '{}', { mode: 0o644 });
    saveCredentials({ url: 'http://a:1', token: 't' }, env);
    assert.equal(mode(dir), 0o700);
    assert.equal(mode(path.join(dir, 'credentials.json')), 0o600);
    assert.deepEqual(readdirSync(dir), ['credentials.json']);
  });

  it('replaces the old file whole (rename), never appending', () => {
    saveCredentials({ url: 'http://a:1', token: 'a-much-longer-token-than-the-next-one' }, env);
    saveCredentials({ url: 'http://b:2', token: 'b' }, env);
    assert.deepEqual(JSON.parse(readFileSync(credentialsFile(env), 'utf8')), { url: 'http://b:2', token: 'b' });
  });

  it('without a file: the local default URL and no token; requireToken is exit 11 naming skiff login', () => {
    const c = resolveCredentials(env);
    assert.deepEqual(c, { url: DEFAULT_SERVER_URL, urlFrom: 'default' });
    assert.throws(() => requireToken(c), (err: SkiffError) => err.exitCode === ExitCode.notLoggedIn && /skiff login/.test(err.toLine()));
  });

  it('SKIFF_API_TOKEN and SKIFF_API_URL win over the file', () => {
    saveCredentials({ url: 'http://file:1', token: 'file-token' }, env);
    assert.deepEqual(resolveCredentials({ ...env, SKIFF_API_TOKEN: 'env-token' }), { url: 'http://file:1', token: 'env-token', urlFrom: 'file', tokenFrom: 'env' });
    assert.deepEqual(resolveCredentials({ ...env, SKIFF_API_URL: 'env-host:2', SKIFF_API_TOKEN: 'env-token' }), { url: 'http://env-host:2', token: 'env-token', urlFrom: 'env', tokenFrom: 'env' });
    assert.deepEqual(resolveCredentials(env), { url: 'http://file:1', token: 'file-token', urlFrom: 'file', tokenFrom: 'file' });
  });

  it('never sends the stored token to another server named by SKIFF_API_URL', () => {
    saveCredentials({ url: 'http://file:1', token: 'file-token' }, env);
    assert.deepEqual(resolveCredentials({ ...env, SKIFF_API_URL: 'http://other:2' }), { url: 'http://other:2', urlFrom: 'env' });
    assert.equal(resolveCredentials({ ...env, SKIFF_API_URL: 'http://file:1/' }).token, 'file-token');
  });

  it('a damaged file is "not logged in" naming the file and skiff login', () => {
    mkdirSync(path.join(env.HOME!, '.skiff'));
    writeFileSync(credentialsFile(env), '{"url": ');
    assert.throws(() => resolveCredentials(env), (err: SkiffError) => err.exitCode === ExitCode.notLoggedIn && err.toLine().includes('credentials.json') && /skiff login/.test(err.toLine()));
    writeFileSync(credentialsFile(env), '{"url": "http://a:1"}');
    assert.throws(() => resolveCredentials(env), /has no server URL and token/);
  });

  it('removeCredentials removes the file once', () => {
    saveCredentials({ url: 'http://a:1', token: 't' }, env);
    assert.equal(removeCredentials(env), true);
    assert.equal(removeCredentials(env), false);
    assert.equal(readStoredCredentials(env), undefined);
  });

  const urls: Array<[string, string]> = [
    ['127.0.0.1:48080', 'http://127.0.0.1:48080'],
    ['https://skiff.example.com/', 'https://skiff.example.com'],
    ['HTTP://Example.COM:80/api//', 'http://example.com/api'],
    ['localhost', 'http://localhost'],
  ];
  for (const [input, url] of urls) it(`normalises server URL ${input}`, () => assert.equal(normaliseServerUrl(input), url));
  for (const bad of ['ftp://x', 'http://', 'https://a/?x=1', 'http://u:p@host', 'http://a b']) {
    it(`refuses server URL ${JSON.stringify(bad)} (exit 2)`, () => assert.throws(() => normaliseServerUrl(bad), (e: SkiffError) => e.exitCode === ExitCode.usage));
  }

  it('a password file gives its first line; empty or missing is exit 2', () => {
    const dir = scratchDir('skiff-pw-');
    writeFileSync(path.join(dir, 'pw'), 's3cret pass\nignored\n');
    writeFileSync(path.join(dir, 'empty'), '\n');
    assert.equal(readPasswordFile(path.join(dir, 'pw')), 's3cret pass');
    assert.throws(() => readPasswordFile(path.join(dir, 'empty')), (e: SkiffError) => e.exitCode === ExitCode.usage && /is empty/.test(e.message));
    assert.throws(() => readPasswordFile(path.join(dir, 'nope')), (e: SkiffError) => e.exitCode === ExitCode.usage && /ENOENT/.test(e.message));
  });
});
