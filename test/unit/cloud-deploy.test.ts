import assert from 'node:assert/strict';
import { compositionOf, parseReleaseTags, pushEach, registryReference } from '../../src/lib/cloud/deploy.js';
import { ExitCode, SkiffError } from '../../src/lib/errors/errors.js';

describe('deploy: pieces that need no engine or server', () => {
  it('--release-tag pairs become tags; an empty value is fine', () => {
    assert.deepEqual(parseReleaseTags(['version', '1.2', 'qa', '']), { version: '1.2', qa: '' });
    assert.deepEqual(parseReleaseTags(undefined), {});
  });
  it('an odd --release-tag list is exit 2 naming the key without a value', () => {
    assert.throws(() => parseReleaseTags(['version', '1.2', 'qa']), (e: SkiffError) => e.exitCode === ExitCode.usage && /'qa' has no value/.test(e.message));
  });
  it('a --release-tag key with spaces or empty is exit 2', () => {
    assert.throws(() => parseReleaseTags(['a b', 'x']), (e: SkiffError) => e.exitCode === ExitCode.usage);
    assert.throws(() => parseReleaseTags(['', 'x']), (e: SkiffError) => e.exitCode === ExitCode.usage);
  });

  it("a repository with the registry host is used as it is; without one it is the server's host and port", () => {
    assert.deepEqual(registryReference('http://127.0.0.1:48080', '127.0.0.1:48080/3f2a/main'), { host: '127.0.0.1:48080', repository: '3f2a/main' });
    assert.deepEqual(registryReference('https://skiff.example.com', 'skiff.example.com/3f2a/main'), { host: 'skiff.example.com', repository: '3f2a/main' });
    assert.deepEqual(registryReference('http://127.0.0.1:48080', '3f2a/main'), { host: '127.0.0.1:48080', repository: '3f2a/main' });
    assert.deepEqual(registryReference('http://localhost:5000', 'localhost/3f2a/main'), { host: 'localhost', repository: '3f2a/main' });
  });

  it('the composition holds each service as the device runs it, and volumes/networks only when there are some', () => {
    const composition = compositionOf({
      services: [
        { name: 'web', image: 'app_web:latest', source: 'build', config: { environment: { A: '1' }, ports: ['80:80'] } },
        { name: 'cache', image: 'redis', source: 'image', config: { image: 'redis' } },
      ],
      volumes: {},
      networks: { front: {} },
    });
    assert.deepEqual(composition, { services: { web: { environment: { A: '1' }, ports: ['80:80'] }, cache: { image: 'redis' } }, networks: { front: {} } });
  });

  describe('pushEach: the services\' pushes at once', () => {
    /** A task that ends when its signal aborts (a push the engine is still sending). */
    const untilAborted = (signal: AbortSignal): Promise<never> => new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }));

    it('runs every task at once and answers in the items\' order', async () => {
      let inFlight = 0;
      let most = 0;
      const gates: Array<() => void> = [];
      const all = pushEach(['a', 'b', 'c'], undefined, async (item) => {
        inFlight++;
        most = Math.max(most, inFlight);
        await new Promise<void>((r) => gates.push(r));
        inFlight--;
        return `sha256:${item}`;
      });
      await new Promise((r) => setImmediate(r));
      assert.equal(most, 3, 'all three started before any ended');
      for (const open of gates.reverse()) open();
      assert.deepEqual(await all, ['sha256:a', 'sha256:b', 'sha256:c']);
    });

    it('one failed push aborts the others and throws its own error only after every task ended', async () => {
      const ended: string[] = [];
      const refused = new SkiffError('releaseFailed', "service 'b': the registry refused the push");
      await assert.rejects(pushEach(['a', 'b', 'c'], undefined, async (item, signal) => {
        try {
          if (item === 'b') throw refused;
          return await untilAborted(signal);
        } finally {
          ended.push(item);
        }
      }), (e: unknown) => e === refused);
      assert.deepEqual([...ended].sort(), ['a', 'b', 'c']);
    });

    it("the caller's abort (Ctrl-C, a cancelled build) reaches every task", async () => {
      const outer = new AbortController();
      const all = pushEach(['a', 'b'], outer.signal, (_item, signal) => untilAborted(signal));
      outer.abort();
      await assert.rejects(all, /aborted/);
    });
  });
});
