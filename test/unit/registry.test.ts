/**
 * The registry part's pure pieces, offline: scope parsing, token claims and signature, libtrust key
 * ids, the config written for distribution, and manifest sums. The real child and the proxy are
 * tested in test/integration/registry.test.ts.
 */
import assert from 'node:assert/strict';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { failureLines, isRoutineRegistryLine } from '../../src/lib/server/registry/child.js';
import { readUserConfig, registryConfig } from '../../src/lib/server/registry/config.js';
import { summariseManifest } from '../../src/lib/server/registry/manifest.js';
import { bearerSubject, rewriteRealm } from '../../src/lib/server/registry/routes.js';
import { grantableActions, mergeGrants, parseScope, parseScopes } from '../../src/lib/server/registry/scope.js';
import { createOnce, libtrustKeyId, loadOrCreateSigningKey, SIGNING_CERT_FILE, SIGNING_KEY_FILE } from '../../src/lib/server/registry/signing-key.js';
import { signToken, subjectOf, tokenClaims } from '../../src/lib/server/registry/token.js';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { scratchDir } from '../support/tmp.js';

const FLEET = '3f2a9c4e1b7d4e0f8a6b5c4d3e2f1a0b';

describe('registry scopes (parseScope)', () => {
  const good: Array<[string, { type: string; name: string; actions: string[] }]> = [
    [`repository:${FLEET}/web:pull`, { type: 'repository', name: `${FLEET}/web`, actions: ['pull'] }],
    [`repository:${FLEET}/web:pull,push`, { type: 'repository', name: `${FLEET}/web`, actions: ['pull', 'push'] }],
    [`repository:${FLEET}/web:push,pull,push`, { type: 'repository', name: `${FLEET}/web`, actions: ['push', 'pull'] }],
    ['repository:a/b-c__d.e:pull', { type: 'repository', name: 'a/b-c__d.e', actions: ['pull'] }],
    ['repository:a/b:*', { type: 'repository', name: 'a/b', actions: ['*'] }],
    ['repository:a/b:delete', { type: 'repository', name: 'a/b', actions: ['delete'] }],
    ['registry:catalog:*', { type: 'registry', name: 'catalog', actions: ['*'] }],
    ['repository(plugin):a/b:pull', { type: 'repository(plugin)', name: 'a/b', actions: ['pull'] }],
    // A name with a host and port holds a colon: the actions start after the last one.
    ['registry:localhost:5000:pull', { type: 'registry', name: 'localhost:5000', actions: ['pull'] }],
  ];
  for (const [input, expected] of good) {
    it(`parses ${input}`, () => assert.deepEqual(parseScope(input), expected));
  }

  const bad: Array<[string, RegExp]> = [
    ['', /is not type:name:actions/],
    ['repository', /is not type:name:actions/],
    ['repository:a/b', /is not type:name:actions/],
    ['repository::pull', /names no resource/],
    ['repository:A/B:pull', /'A\/B' is not a repository name/],
    ['repository:a//b:pull', /is not a repository name/],
    ['repository:/a:pull', /is not a repository name/],
    ['repository:a/b/:pull', /is not a repository name/],
    ['repository:-a/b:pull', /is not a repository name/],
    [`repository:${'a'.repeat(256)}:pull`, /at most 255 characters/],
    ['repository:a/b:', /asks for no action/],
    ['repository:a/b:,', /asks for no action/],
    ['repository:a/b:Pull', /bad action 'Pull'/],
    ['repository:a/b:pull;rm', /bad action 'pull;rm'/],
    ['Repository:a/b:pull', /bad resource type 'Repository'/],
    [':a/b:pull', /bad resource type ''/],
    ['repo sitory:a/b:pull', /bad resource type/],
  ];
  for (const [input, message] of bad) {
    it(`refuses ${JSON.stringify(input.length > 60 ? `${input.slice(0, 40)}…` : input)}`, () => {
      const r = parseScope(input);
      assert.equal(typeof r, 'string');
      assert.match(r as string, message);
    });
  }

  it('takes repeated and space-separated scopes, and stops at the first bad one', () => {
    assert.deepEqual(parseScopes(['repository:a/b:pull repository:a/c:push', 'repository:a/d:pull']), [
      { type: 'repository', name: 'a/b', actions: ['pull'] },
      { type: 'repository', name: 'a/c', actions: ['push'] },
      { type: 'repository', name: 'a/d', actions: ['pull'] },
    ]);
    assert.deepEqual(parseScopes([]), []);
    assert.deepEqual(parseScopes(['  ']), []);
    assert.match(parseScopes(['repository:a/b:pull', 'nonsense']) as string, /'nonsense' is not type:name:actions/);
  });

  it('grants only pull and push on repositories, merged per repository', () => {
    assert.deepEqual(grantableActions({ type: 'repository', name: 'a/b', actions: ['*', 'delete', 'push', 'pull'] }), ['push', 'pull']);
    assert.deepEqual(grantableActions({ type: 'registry', name: 'catalog', actions: ['*'] }), []);
    assert.deepEqual(
      mergeGrants([
        { repository: 'a/b', actions: ['push'] },
        { repository: 'a/c', actions: [] },
        { repository: 'a/b', actions: ['pull'] },
        { repository: 'a/d', actions: ['pull'] },
      ]),
      [
        { repository: 'a/b', actions: ['pull', 'push'] },
        { repository: 'a/d', actions: ['pull'] },
      ],
    );
  });
});

describe('registry token keys (libtrustKeyId)', () => {
  it('matches the key id of the known vector in distribution docs/spec/manifest-v2-1.md', () => {
    // The signing key of the schema 1 example manifest, with the kid libtrust gave it.
    const jwk = { kty: 'EC', crv: 'P-256', x: '3gAwX48IQ5oaYQAYSxor6rYYc_6yjuLCjtQ9LUakg4A', y: 't72ge6kIA1XOjqjVoEOiPPAURltJFBMGDSQvEGVB010' };
    const spki = createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'der' });
    assert.equal(libtrustKeyId(spki), 'OD6I:6DRK:JXEJ:KBM4:255X:NSAA:MUSF:E4VM:ZI6W:CUN2:L4Z6:LSF4');
  });

  it('is twelve groups of four base32 characters', () => {
    assert.match(libtrustKeyId(Buffer.from('anything')), /^(?:[A-Z2-7]{4}:){11}[A-Z2-7]{4}$/);
  });

  it('makes the key once (0600) with a certificate of the same key, and keeps it', async () => {
    const dir = scratchDir('skiff-registry-key-');
    const first = await loadOrCreateSigningKey(dir);
    assert.equal(statSync(path.join(dir, SIGNING_KEY_FILE)).mode & 0o777, 0o600);
    const cert = new X509Certificate(readFileSync(path.join(dir, SIGNING_CERT_FILE)));
    assert.equal(libtrustKeyId(cert.publicKey.export({ type: 'spki', format: 'der' })), first.keyId);
    assert.equal(cert.checkPrivateKey(first.privateKey), true);
    const second = await loadOrCreateSigningKey(dir);
    assert.equal(second.keyId, first.keyId);
  });

  it('makes a lost certificate again from the kept key', async () => {
    const dir = scratchDir('skiff-registry-key-');
    const first = await loadOrCreateSigningKey(dir);
    rmSync(path.join(dir, SIGNING_CERT_FILE));
    const again = await loadOrCreateSigningKey(dir);
    assert.equal(again.keyId, first.keyId);
    assert.equal(new X509Certificate(readFileSync(again.certFile)).checkPrivateKey(first.privateKey), true);
  });

  it('creates a key file only once: a second maker (another replica) keeps the first one\'s', () => {
    const dir = scratchDir('skiff-registry-key-');
    const file = path.join(dir, 'f');
    assert.equal(createOnce(file, 'first', 0o600), true);
    assert.equal(createOnce(file, 'second', 0o600), false);
    assert.equal(readFileSync(file, 'utf8'), 'first');
    assert.deepEqual(readdirSync(dir), ['f'], 'no temp file is left');
  });

  it('refuses a key file that is not a key, naming it', async () => {
    const dir = scratchDir('skiff-registry-key-');
    writeFileSync(path.join(dir, SIGNING_KEY_FILE), 'not a key');
    await assert.rejects(loadOrCreateSigningKey(dir), (err: unknown) => err instanceof SkiffError && err.message.includes(SIGNING_KEY_FILE));
  });
});

describe('registry token claims (tokenClaims, signToken)', () => {
  const grants = [
    { repository: `${FLEET}/web`, actions: ['pull', 'push'] as const },
    { repository: `${FLEET}/db`, actions: [] as const },
  ];

  it('has the claims distribution 2.8 checks, times in seconds, only granted repositories', () => {
    const claims = tokenClaims({ service: 'skiff', subject: subjectOf({ kind: 'device', deviceId: 7, uuid: 'abc' }), grants, lifetimeSeconds: 600, nowMs: 1_700_000_000_999, jti: 'j1' });
    assert.deepEqual(claims, {
      iss: 'skiff',
      sub: 'device:abc',
      aud: 'skiff',
      exp: 1_700_000_600,
      nbf: 1_700_000_000,
      iat: 1_700_000_000,
      jti: 'j1',
      access: [{ type: 'repository', name: `${FLEET}/web`, actions: ['pull', 'push'] }],
    });
    assert.equal(subjectOf({ kind: 'user', userId: 3, email: 'a@b' }), 'user:3');
  });

  it('is an ES256 JWS with the libtrust kid of the key, verifiable with the certificate', async () => {
    const dir = scratchDir('skiff-registry-key-');
    const key = await loadOrCreateSigningKey(dir);
    const claims = tokenClaims({ service: 'skiff', subject: 'user:1', grants, lifetimeSeconds: 60, nowMs: Date.now(), jti: 'j2' });
    const token = await signToken(key, claims);
    assert.deepEqual(decodeProtectedHeader(token), { alg: 'ES256', typ: 'JWT', kid: key.keyId });
    const cert = new X509Certificate(readFileSync(key.certFile));
    const { payload } = await jwtVerify(token, cert.publicKey, { issuer: 'skiff', audience: 'skiff' });
    assert.deepEqual(payload, claims);
    // aud must stay one string: distribution 2.8 reads it into a string and refuses a list.
    assert.equal(typeof payload.aud, 'string');
  });
});

describe('registry config (registryConfig, readUserConfig)', () => {
  const base = (dataDir: string, user: Record<string, unknown> = {}) => registryConfig({ dataDir, port: 5123, service: 'skiff', certFile: '/k/cert.crt', user });

  it('serves on loopback with relative URLs, token auth and filesystem storage in the data dir', () => {
    const dir = scratchDir('skiff-registry-config-');
    const c = base(dir);
    assert.deepEqual((c['http'] as Record<string, unknown>)['addr'], '127.0.0.1:5123');
    assert.equal((c['http'] as Record<string, unknown>)['relativeurls'], true);
    assert.deepEqual(c['auth'], { token: { realm: 'http://127.0.0.1:5123/auth/v1/token', service: 'skiff', issuer: 'skiff', rootcertbundle: '/k/cert.crt' } });
    assert.deepEqual((c['storage'] as Record<string, unknown>)['filesystem'], { rootdirectory: path.join(dir, 'storage') });
    assert.deepEqual((c['storage'] as Record<string, unknown>)['delete'], { enabled: true });
    // The upload secret is kept, so an upload survives a restart of the child.
    assert.equal((c['http'] as Record<string, unknown>)['secret'], (base(dir)['http'] as Record<string, unknown>)['secret']);
    assert.equal(statSync(path.join(dir, 'http-secret')).mode & 0o777, 0o600);
  });

  it('takes S3 storage from --registry-config in place of the filesystem, merging the other storage keys', () => {
    const dir = scratchDir('skiff-registry-config-');
    const c = base(dir, { storage: { s3: { bucket: 'b', region: 'eu-west-1' }, redirect: { disable: true } }, log: { level: 'info' } });
    assert.deepEqual(c['storage'], { s3: { bucket: 'b', region: 'eu-west-1' }, redirect: { disable: true }, delete: { enabled: true }, cache: { blobdescriptor: 'inmemory' } });
    assert.equal((c['log'] as Record<string, unknown>)['level'], 'info');
  });

  it('merges filesystem settings of --registry-config over our root directory, and lets it move the root', () => {
    const dir = scratchDir('skiff-registry-config-');
    assert.deepEqual((base(dir, { storage: { filesystem: { maxthreads: 50 } } })['storage'] as Record<string, unknown>)['filesystem'], { rootdirectory: path.join(dir, 'storage'), maxthreads: 50 });
    assert.deepEqual((base(dir, { storage: { filesystem: { rootdirectory: '/srv/images' } } })['storage'] as Record<string, unknown>)['filesystem'], { rootdirectory: '/srv/images' });
  });

  it('refuses a config that is not YAML, not a mapping, sets http or auth, or names two drivers', async () => {
    const dir = scratchDir('skiff-registry-config-');
    const cases: Array<[string, RegExp]> = [
      ['storage: [unclosed', /is not YAML/],
      ['- a\n- b\n', /not a YAML mapping/],
      ['http:\n  addr: :5000\n', /sets http, which skiff server sets itself/],
      ['auth:\n  htpasswd: {}\nhttp: {}\n', /sets http and auth/],
      ['storage:\n  s3: {}\n  filesystem: {}\n', /names 2 storage drivers/],
      ['storage: s3\n', /storage in the registry config is not a mapping/],
    ];
    for (const [text, message] of cases) {
      const file = path.join(dir, 'config.yml');
      writeFileSync(file, text);
      await assert.rejects(readUserConfig(file), (err: unknown) => err instanceof SkiffError && message.test(err.message) && err.where === file, text);
    }
    await assert.rejects(readUserConfig(path.join(dir, 'missing.yml')), /cannot read the registry config/);
    writeFileSync(path.join(dir, 'empty.yml'), '');
    assert.deepEqual(await readUserConfig(path.join(dir, 'empty.yml')), {});
  });
});

describe('registry manifests (summariseManifest)', () => {
  const d = (c: string) => `sha256:${c.repeat(64)}`;
  it('sums config and layers of an image manifest', () => {
    const m = { schemaVersion: 2, config: { digest: d('c'), size: 100 }, layers: [{ digest: d('a'), size: 1000 }, { digest: d('b'), size: 24 }] };
    assert.deepEqual(summariseManifest(d('f'), m), { digest: d('f'), size: 1124, layers: [d('a'), d('b')] });
  });
  it('sums the manifests of an index, which has no layers of its own', () => {
    assert.deepEqual(summariseManifest(d('f'), { schemaVersion: 2, manifests: [{ digest: d('1'), size: 500 }, { digest: d('2'), size: 7 }] }), { digest: d('f'), size: 507, layers: [] });
  });
  it('refuses schema 1 and anything else', () => {
    assert.throws(() => summariseManifest(d('f'), { schemaVersion: 1, fsLayers: [] }), /neither an image manifest nor an index \(schema 1\)/);
    assert.throws(() => summariseManifest(d('f'), null), /neither/);
  });
});

describe('registry proxy realm (rewriteRealm)', () => {
  it('points the Bearer challenge at this server, keeping service and scope', () => {
    assert.equal(
      rewriteRealm('Bearer realm="http://127.0.0.1:39211/auth/v1/token",service="skiff",scope="repository:a/b:pull"', 'https://cloud.example.com/auth/v1/token'),
      'Bearer realm="https://cloud.example.com/auth/v1/token",service="skiff",scope="repository:a/b:pull"',
    );
    assert.equal(rewriteRealm('Basic realm="x"', 'http://h/auth/v1/token'), 'Basic realm="http://h/auth/v1/token"');
    assert.equal(rewriteRealm('Bearer service="s"', 'http://h/t'), 'Bearer service="s"');
  });
});

describe('registry start failures (failureLines)', () => {
  it('gives Go\'s panic or fatal line, not the goroutine stack after it', () => {
    const stack = ['', 'goroutine 1 [running]:', 'main.main()', '\t/build/main.go:10 +0x1d'];
    assert.deepEqual(failureLines(['time="t" level=info msg="starting"', 'panic: No region parameter provided', ...stack]), ['panic: No region parameter provided']);
    assert.deepEqual(failureLines(['time="t" level=fatal msg="listen tcp 127.0.0.1:5000: bind: address already in use"']), ['time="t" level=fatal msg="listen tcp 127.0.0.1:5000: bind: address already in use"']);
    const plain = Array.from({ length: 12 }, (_, i) => `line ${i}`);
    assert.deepEqual(failureLines(plain), plain.slice(-10));
  });
});

describe('registry log lines the server does not repeat (isRoutineRegistryLine)', () => {
  // As distribution 2.8 writes them at level=error during every docker push (found by the breaker pass).
  const line = (method: string, code: string) => `time="2026-11-30T21:38:47Z" level=error msg="response completed with error" auth.user.name="user:1" err.code="${code}" err.message="blob unknown to registry" http.request.method=${method} http.response.status=404`;

  it('drops the 404 to a HEAD for a blob or manifest (a push asking whether a layer is there)', () => {
    assert.equal(isRoutineRegistryLine(line('HEAD', 'blob unknown')), true);
    assert.equal(isRoutineRegistryLine(line('HEAD', 'manifest unknown')), true);
  });

  it('keeps every other error: a GET of a missing blob, a denied push, a start failure', () => {
    assert.equal(isRoutineRegistryLine(line('GET', 'blob unknown')), false);
    assert.equal(isRoutineRegistryLine(line('HEAD', 'denied')), false);
    assert.equal(isRoutineRegistryLine('panic: No region parameter provided'), false);
  });
});

describe('registry: the subject of a bearer token', () => {
  const jwt = (payload: unknown) => `e30.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.c2ln`;
  const cases: Array<[string, string | undefined, string | undefined]> = [
    ['a device token', `Bearer ${jwt({ sub: 'device:abc123' })}`, 'device:abc123'],
    ['a user token, lower-case scheme', `bearer ${jwt({ sub: 'user:7' })}`, 'user:7'],
    ['no sub', `Bearer ${jwt({ iss: 'x' })}`, undefined],
    ['a sub that is not text', `Bearer ${jwt({ sub: 7 })}`, undefined],
    ['a payload that is not JSON', 'Bearer e30.bm90IGpzb24.c2ln', undefined],
    ['not a JWT', 'Bearer sks_0123456789abcdef', undefined],
    ['basic auth', 'Basic ZDp4', undefined],
    ['nothing', undefined, undefined],
  ];
  for (const [name, header, want] of cases) it(`${name} → ${want ?? 'none'}`, () => assert.equal(bearerSubject(header), want));
});
