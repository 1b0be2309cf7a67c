/** The agent's engine client, offline: frame demuxing, JSON lines, pull progress, references, gateways. */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { demuxFrames, followPull, jsonLines, networkGateway, splitReference, type LogFrame, type PullProgress } from '../../src/lib/docker/engine-lite.js';

/** Pushes `chunks` through `transform` and collects what comes out. */
async function through<T>(transform: NodeJS.ReadWriteStream, chunks: Buffer[]): Promise<T[]> {
  const out: T[] = [];
  transform.on('data', (item: T) => out.push(item));
  const ended = new Promise<void>((resolve, reject) => {
    transform.on('end', resolve);
    transform.on('error', reject);
  });
  for (const c of chunks) transform.write(c);
  transform.end();
  await ended;
  return out;
}

function frame(type: number, text: string): Buffer {
  const payload = Buffer.from(text);
  const header = Buffer.alloc(8);
  header[0] = type;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

/** Every byte boundary: the frames arrive one byte at a time. */
const bytes = (b: Buffer) => [...b].map((x) => Buffer.from([x]));

function joined(frames: LogFrame[], stream: LogFrame['stream']): string {
  return Buffer.concat(frames.filter((f) => f.stream === stream).map((f) => f.data)).toString('utf8');
}

describe('engine-lite: streams', () => {
  it('demuxes stdout and stderr frames, split anywhere or several to a chunk', async () => {
    const wire = Buffer.concat([frame(1, 'out one\n'), frame(2, 'err one\n'), frame(1, ''), frame(1, 'out two\n'), frame(2, 'é\n')]);
    for (const chunks of [[wire], bytes(wire), [wire.subarray(0, 5), wire.subarray(5, 21), wire.subarray(21)]]) {
      const frames = await through<LogFrame>(demuxFrames(), chunks);
      assert.equal(joined(frames, 'stdout'), 'out one\nout two\n');
      assert.equal(joined(frames, 'stderr'), 'err one\né\n');
      assert.ok(frames.every((f) => f.data.length > 0), 'empty frames are dropped');
    }
  });

  it('passes bytes that are not frames through as stdout', async () => {
    const frames = await through<LogFrame>(demuxFrames(), [Buffer.from('hello from a tty\r\n'), Buffer.from('more\r\n')]);
    assert.equal(joined(frames, 'stdout'), 'hello from a tty\r\nmore\r\n');
  });

  it('parses JSON lines split across chunks (a UTF-8 character too), skipping blank lines', async () => {
    const wire = Buffer.from('{"a":1}\n\n{"b":"ü"}\r\n{"c":3}');
    const cut = wire.indexOf(Buffer.from('ü')) + 1; // inside the two bytes of ü
    const items = await through<unknown>(jsonLines(), [wire.subarray(0, 3), wire.subarray(3, cut), wire.subarray(cut)]);
    assert.deepEqual(items, [{ a: 1 }, { b: 'ü' }, { c: 3 }]);
  });

  it('a pull fails on its first error line, and succeeds when the stream ends cleanly', async () => {
    const seen: PullProgress[] = [];
    await followPull(Readable.from([{ status: 'Pulling from library/busybox' }, { status: 'Download complete', id: 'abc' }]), (p) => seen.push(p));
    assert.equal(seen.length, 2);
    await assert.rejects(
      followPull(Readable.from([{ status: 'Pulling' }, { errorDetail: { message: 'manifest unknown' }, error: 'manifest unknown' }, { status: 'never read' }])),
      /^Error: manifest unknown$/,
    );
    await assert.rejects(followPull(Readable.from([{ error: 'no space left on device' }])), /no space left on device/);
  });

  it('splits references into the engine\'s fromImage and tag', () => {
    assert.deepEqual(splitReference('busybox'), { name: 'busybox', tag: 'latest' });
    assert.deepEqual(splitReference('busybox:1.36'), { name: 'busybox', tag: '1.36' });
    assert.deepEqual(splitReference('localhost:5000/app'), { name: 'localhost:5000/app', tag: 'latest' });
    assert.deepEqual(splitReference('localhost:5000/app:v2'), { name: 'localhost:5000/app', tag: 'v2' });
    assert.deepEqual(splitReference('app@sha256:0123'), { name: 'app', tag: 'sha256:0123' });
  });
});

describe('engine-lite: a network\'s gateway', () => {
  const ipam = (...Config: Array<{ Subnet?: string; Gateway?: string }>) => ({ IPAM: { Config } });

  it('is the one the engine gives', () => {
    assert.equal(networkGateway(ipam({ Subnet: '172.17.0.0/16', Gateway: '172.17.0.1' })), '172.17.0.1');
    assert.equal(networkGateway(ipam({ Subnet: 'fd00::/64', Gateway: 'fd00::1' }, { Subnet: '10.1.2.0/24', Gateway: '10.1.2.254' })), '10.1.2.254');
  });

  it('without one (the default bridge on a fresh machine), the first address of the subnet, as the engine\'s IPAM gives it', () => {
    assert.equal(networkGateway(ipam({ Subnet: '172.17.0.0/16' })), '172.17.0.1');
    assert.equal(networkGateway(ipam({ Subnet: '192.168.203.64/26' })), '192.168.203.65');
    assert.equal(networkGateway(ipam({ Subnet: '10.200.0.0/8' })), '10.0.0.1');
    assert.equal(networkGateway(ipam({ Subnet: 'fd00::/64' }, { Subnet: '172.18.0.0/16' })), '172.18.0.1');
  });

  it('none when there is no IPv4 subnet to tell', () => {
    assert.equal(networkGateway({ IPAM: { Config: null } }), undefined);
    assert.equal(networkGateway(ipam()), undefined);
    assert.equal(networkGateway(ipam({ Subnet: 'fd00::/64' })), undefined);
    assert.equal(networkGateway(ipam({ Subnet: '10.0.0.1/32' })), undefined);
  });
});
