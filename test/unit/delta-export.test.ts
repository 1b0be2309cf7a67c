/**
 * extractLayers over synthetic exports in each layout the engine may write: docker save's legacy
 * layout, the OCI layout, and gzip-compressed layer blobs (the containerd store).
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import { extractLayers, type WantedLayer } from '../../src/lib/delta/export.js';
import { assertDeltaFailure } from '../support/delta.js';
import { scratchDir } from '../support/tmp.js';

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const hex = (d: string): string => d.replace('sha256:', '');

/** A tar of `entries` (name → bytes), in order. */
function tarOf(entries: Array<[string, Buffer]>): Readable {
  const pack = tarStream.pack();
  for (const [name, data] of entries) pack.entry({ name }, data);
  pack.finalize();
  return pack as unknown as Readable;
}

describe('delta: layers from the engine export', function () {
  const a = randomBytes(70_000);
  const b = randomBytes(3000);
  const c = randomBytes(50_000);

  function wanted(dir: string, layers: Array<[Buffer, number?]>): Map<string, WantedLayer> {
    return new Map(layers.map(([data, size]) => [sha(data), { file: path.join(dir, `${hex(sha(data))}.tar`), ...(size === undefined ? {} : { size }) }]));
  }

  it('takes the wanted layer tars of the legacy layout and nothing else', async function () {
    const dir = scratchDir('skiff-export-');
    const exported = tarOf([
      ['111/VERSION', Buffer.from('1.0')], ['111/json', Buffer.from('{}')], ['111/layer.tar', a],
      ['222/layer.tar', b], ['333/layer.tar', c], ['cfg.json', Buffer.from('{}')], ['manifest.json', Buffer.from('[]')], ['repositories', Buffer.from('{}')],
    ]);
    await extractLayers(exported, wanted(dir, [[a], [c]]), dir, 'app:v1');
    assert.deepEqual(readdirSync(dir).sort(), [`${hex(sha(a))}.tar`, `${hex(sha(c))}.tar`].sort());
    assert.ok(readFileSync(path.join(dir, `${hex(sha(c))}.tar`)).equals(c));
  });

  it('takes OCI blobs by name and gzip blobs by their decompressed sha256', async function () {
    const dir = scratchDir('skiff-export-');
    const gz = gzipSync(b);
    const exported = tarOf([
      ['oci-layout', Buffer.from('{}')], ['index.json', Buffer.from('{}')],
      [`blobs/sha256/${hex(sha(a))}`, a], [`blobs/sha256/${hex(sha(gz))}`, gz], [`blobs/sha256/${hex(sha(c))}`, c],
    ]);
    await extractLayers(exported, wanted(dir, [[a], [b]]), dir, 'app:v1');
    assert.deepEqual(readdirSync(dir).sort(), [`${hex(sha(a))}.tar`, `${hex(sha(b))}.tar`].sort());
    assert.ok(readFileSync(path.join(dir, `${hex(sha(b))}.tar`)).equals(b));
  });

  it('refuses an export without a wanted layer, a blob whose bytes are not its name, and a cut tar as source', async function () {
    const dir = scratchDir('skiff-export-');
    await assertDeltaFailure(extractLayers(tarOf([['111/layer.tar', a]]), wanted(dir, [[a], [b]]), dir, 'app:v1'), 'source', /lacks layer/);
    await assertDeltaFailure(extractLayers(tarOf([[`blobs/sha256/${hex(sha(a))}`, b]]), wanted(dir, [[a]]), dir, 'app:v1'), 'source', /other bytes/);
    const whole = await new Promise<Buffer>((resolve) => {
      const parts: Buffer[] = [];
      tarOf([['111/layer.tar', a]]).on('data', (d: Buffer) => parts.push(d)).on('end', () => resolve(Buffer.concat(parts)));
    });
    await assertDeltaFailure(extractLayers(Readable.from([whole.subarray(0, 20_000)]), wanted(dir, [[a]]), dir, 'app:v1'), 'source');
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.part')), []);
  });

  it('skips layer tars whose size is none of the wanted sizes', async function () {
    const dir = scratchDir('skiff-export-');
    await extractLayers(tarOf([['111/layer.tar', a], ['222/layer.tar', c]]), wanted(dir, [[c, c.length]]), dir, 'app:v1');
    assert.deepEqual(readdirSync(dir), [`${hex(sha(c))}.tar`]);
  });
});
