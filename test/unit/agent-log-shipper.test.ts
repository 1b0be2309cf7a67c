/**
 * The agent's log shipper without a network: the agent's real LogBuffer feeds it, `send` records
 * batches (or fails as an unreachable server does), the on-disk buffer lives in a temp dir and
 * time is passed in.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import type { DeviceLogBatch } from '../../src/lib/api/logs.js';
import { LogBuffer } from '../../src/lib/agent/logs.js';
import { DiskLogBuffer, FairQueue, MAX_MESSAGE_LENGTH, ShipError, startLogShipper, type LogShipper, type LogShipperOptions } from '../../src/lib/agent/cloud/log-shipper.js';
import { scratchDir } from '../support/tmp.js';

const line = (service: string, n: number, timestamp = 1_700_000_000_000 + n) => ({ message: `${service} ${n}`, timestamp, isSystem: false, isStdErr: false, serviceName: service });

interface Harness {
  buffer: LogBuffer;
  shipper: LogShipper;
  batches: DeviceLogBatch[];
  /** When set, `send` throws it. */
  fail: { error?: Error };
  clock: { now: number };
  dir: string;
}

function harness(options: Partial<LogShipperOptions> = {}, dir = scratchDir('skiff-shipper-')): Harness {
  const buffer = new LogBuffer();
  const batches: DeviceLogBatch[] = [];
  const fail: Harness['fail'] = {};
  const clock = { now: 1_000_000 };
  const shipper = startLogShipper(buffer, {
    dir,
    send: async (batch) => {
      if (fail.error) throw fail.error;
      batches.push(JSON.parse(JSON.stringify(batch)) as DeviceLogBatch);
    },
    intervalMs: 3_600_000, // the tests flush by hand
    random: () => 0.5,
    now: () => clock.now,
    ...options,
  });
  return { buffer, shipper, batches, fail, clock, dir };
}

const messages = (batches: DeviceLogBatch[]) => batches.flatMap((b) => b.lines.map((l) => l.message));

describe('agent log shipper', () => {
  const running: LogShipper[] = [];
  afterEach(async () => {
    for (const s of running.splice(0)) await s.stop();
  });
  const start = (options: Partial<LogShipperOptions> = {}, dir?: string) => {
    const h = harness(options, dir);
    running.push(h.shipper);
    return h;
  };

  it('sends the buffer\'s history and new lines in batches of at most batchLines, in order, each once', async () => {
    const buffer = new LogBuffer();
    buffer.add(line('main', 0));
    const batches: DeviceLogBatch[] = [];
    const shipper = startLogShipper(buffer, { dir: scratchDir('skiff-shipper-'), batchLines: 100, intervalMs: 3_600_000, send: async (b) => void batches.push(b) });
    running.push(shipper);
    for (let i = 1; i < 250; i++) buffer.add(line('main', i));
    await shipper.flush();
    assert.ok(batches.every((b) => b.lines.length <= 100), 'no batch over batchLines');
    assert.deepEqual(messages(batches), Array.from({ length: 250 }, (_, i) => `main ${i}`));
    assert.ok(batches.every((b) => b.dropped === undefined));
  });

  it('cuts messages over 16 KiB and keeps only the fields the server stores', async () => {
    const h = start();
    h.buffer.add({ ...line('main', 1), message: 'x'.repeat(20_000), serviceId: 3, appId: 1 });
    h.buffer.system('agent says', true);
    await h.shipper.flush();
    const [long, system] = h.batches.flatMap((b) => b.lines);
    assert.equal(long?.message.length, MAX_MESSAGE_LENGTH);
    assert.deepEqual(Object.keys(long ?? {}).sort(), ['message', 'serviceName', 'timestamp']);
    assert.deepEqual({ ...system, timestamp: 0 }, { message: 'agent says', timestamp: 0, isSystem: true, isStdErr: true });
  });

  it('gives every source its share of a batch: a flood neither starves another service nor grows memory, and the drops are counted', async () => {
    // The first batch (the flood's first 100 lines) is held in flight while the flood goes on.
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const batches: DeviceLogBatch[] = [];
    const buffer = new LogBuffer();
    const shipper = startLogShipper(buffer, { dir: scratchDir('skiff-shipper-'), batchLines: 100, sourceLines: 200, intervalMs: 3_600_000, send: async (b) => {
      batches.push(b);
      await gate;
    } });
    running.push(shipper);
    for (let i = 0; i < 5000; i++) buffer.add(line('flood', i));
    for (let i = 0; i < 10; i++) buffer.add(line('quiet', i, 1_700_000_000_000 + 5000 + i));
    buffer.system('system line');
    assert.ok(shipper.pending().memoryLines <= 3 * 200, `memory holds ${shipper.pending().memoryLines} lines`);
    release();
    await shipper.flush();
    const second = batches[1];
    assert.ok(second);
    assert.equal(second.lines.filter((l) => l.serviceName === 'quiet').length, 10, 'the quiet service is in the next batch');
    assert.equal(second.lines.filter((l) => l.isSystem).length, 1, 'so is the system line');
    assert.equal(second.dropped, 5000 - 100 - 200, 'the flood lost what passed its queue');
    assert.deepEqual(messages(batches).filter((m) => m.startsWith('flood')), [...Array.from({ length: 100 }, (_, i) => `flood ${i}`), ...Array.from({ length: 200 }, (_, i) => `flood ${4800 + i}`)], 'the flood\'s newest lines are kept, in order');
  });

  it('keeps lines on disk while the server is unreachable and sends them oldest first when it is back', async () => {
    const h = start({ batchLines: 50 });
    for (let i = 0; i < 30; i++) h.buffer.add(line('main', i));
    h.fail.error = new Error('ECONNREFUSED');
    await h.shipper.flush();
    assert.equal(h.batches.length, 0);
    assert.ok(h.shipper.pending().diskBytes > 0, 'the failed batch went to disk');
    // While retrying is not due, new lines go to disk too (memory stays empty).
    for (let i = 30; i < 130; i++) h.buffer.add(line('main', i));
    await h.shipper.flush();
    assert.equal(h.shipper.pending().memoryLines, 0);
    assert.ok(readdirSync(path.join(h.dir, 'buffer')).some((f) => f.endsWith('.ndjson')));
    // Retry due, server still away: nothing lost, nothing sent.
    h.clock.now += 60_000;
    await h.shipper.flush();
    assert.equal(h.batches.length, 0);
    for (let i = 130; i < 140; i++) h.buffer.add(line('main', i));
    h.fail.error = undefined;
    h.clock.now += 60_000;
    await h.shipper.flush();
    await h.shipper.flush();
    assert.deepEqual(messages(h.batches), Array.from({ length: 140 }, (_, i) => `main ${i}`));
    assert.equal(h.shipper.pending().diskBytes, 0);
  });

  it('keeps the newest lines within the disk cap and reports how many were dropped', async () => {
    const h = start({ batchLines: 100, diskBytes: 40_000, diskFileBytes: 10_000 });
    h.fail.error = new Error('ECONNREFUSED');
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 100; i++) h.buffer.add({ ...line('main', round * 100 + i), message: `main ${round * 100 + i} ${'.'.repeat(100)}` });
      await h.shipper.flush();
      assert.ok(h.shipper.pending().diskBytes <= 40_000 + 10_000 + 100 * 200, `disk holds ${h.shipper.pending().diskBytes} bytes`);
    }
    h.fail.error = undefined;
    h.clock.now += 3_600_000;
    while (h.shipper.pending().diskBytes > 0 || h.batches.length === 0) await h.shipper.flush();
    const sent = messages(h.batches).map((m) => Number(m.split(' ')[1]));
    assert.equal(sent[sent.length - 1], 1999, 'the newest line arrives');
    assert.deepEqual(sent, [...sent].sort((a, b) => a - b), 'oldest first');
    assert.deepEqual(sent, Array.from({ length: sent.length }, (_, i) => 2000 - sent.length + i), 'a contiguous newest run');
    assert.equal(h.batches[0]?.dropped, 2000 - sent.length, 'every line lost is counted');
  });

  it('keeps batches of long lines under batchBytes, from memory and from disk', async () => {
    const h = start({ batchBytes: 50_000 });
    const long = (i: number) => ({ ...line('main', i), message: `${i} ${'y'.repeat(10_000)}` });
    for (let i = 0; i < 20; i++) h.buffer.add(long(i));
    await h.shipper.flush();
    h.fail.error = new Error('ECONNREFUSED');
    for (let i = 20; i < 40; i++) h.buffer.add(long(i));
    await h.shipper.flush();
    h.fail.error = undefined;
    h.clock.now += 3_600_000;
    await h.shipper.flush();
    assert.ok(h.batches.every((b) => JSON.stringify(b).length <= 50_000 + 11_000), `batch sizes ${h.batches.map((b) => JSON.stringify(b).length).join(' ')}`);
    assert.ok(h.batches.length >= 8);
    assert.deepEqual(messages(h.batches).map((m) => Number(m.split(' ')[0])), Array.from({ length: 40 }, (_, i) => i));
  });

  it('gives up a batch the server refuses for good (400) and counts it', async () => {
    const h = start();
    h.buffer.add(line('main', 1));
    h.fail.error = new ShipError('log batch: the server answered 400', false);
    await h.shipper.flush();
    assert.equal(h.shipper.pending().diskBytes, 0);
    h.fail.error = undefined;
    h.buffer.add(line('main', 2));
    await h.shipper.flush();
    assert.deepEqual(h.batches.map((b) => [b.lines.map((l) => l.message), b.dropped]), [[['main 2'], 1]]);
  });

  it('keeps what was not sent across a restart, and skips the lines a restarted agent reads again', async () => {
    const dir = scratchDir('skiff-shipper-');
    const first = harness({}, dir);
    for (let i = 0; i < 5; i++) first.buffer.add(line('main', i));
    await first.shipper.flush();
    first.fail.error = new Error('ECONNREFUSED');
    for (let i = 5; i < 8; i++) first.buffer.add(line('main', i));
    await first.shipper.stop();
    assert.deepEqual(messages(first.batches), ['main 0', 'main 1', 'main 2', 'main 3', 'main 4']);

    // The restarted agent re-reads the container's log from its start, then a new line.
    const second = start({}, dir);
    for (let i = 0; i < 9; i++) second.buffer.add(line('main', i));
    await second.shipper.flush();
    await second.shipper.flush();
    assert.deepEqual(messages(second.batches), ['main 5', 'main 6', 'main 7', 'main 8']);
  });

  it('tells identical lines in one millisecond from a replay', async () => {
    const dir = scratchDir('skiff-shipper-');
    const first = harness({}, dir);
    first.buffer.add({ ...line('main', 0), message: 'same' });
    first.buffer.add({ ...line('main', 0), message: 'same' });
    await first.shipper.flush();
    await first.shipper.stop();
    const second = start({}, dir);
    for (let i = 0; i < 3; i++) second.buffer.add({ ...line('main', 0), message: 'same' });
    await second.shipper.flush();
    assert.deepEqual(messages(second.batches), ['same'], 'the third "same" is new');
  });
});

describe('agent log shipper: when to send and what to say', () => {
  it('sends nothing before the device is registered, then everything it kept', async () => {
    let registered = false;
    const buffer = new LogBuffer();
    const batches: DeviceLogBatch[] = [];
    const shipper = startLogShipper(buffer, { dir: scratchDir('skiff-shipper-'), intervalMs: 3_600_000, ready: () => registered, send: async (b) => void batches.push(b) });
    buffer.system('Agent starting');
    await shipper.flush();
    assert.equal(batches.length, 0);
    registered = true;
    await shipper.flush();
    assert.deepEqual(messages(batches), ['Agent starting']);
    await shipper.stop();
  });

  it('leaves an unreachable server to the poll to say; says a refusing server once, and its recovery', async () => {
    const said: string[] = [];
    const buffer = new LogBuffer();
    let error: Error | undefined = new ShipError('cannot reach http://x (ECONNREFUSED)', true, true);
    let clock = 0;
    const shipper = startLogShipper(buffer, { dir: scratchDir('skiff-shipper-'), intervalMs: 3_600_000, now: () => clock, log: (m) => said.push(m), send: async () => {
      if (error) throw error;
    } });
    for (let round = 0; round < 3; round++) {
      buffer.add(line('main', round));
      clock += 3_600_000;
      await shipper.flush();
    }
    assert.deepEqual(said, []);
    error = new Error('log batch: the server answered 503');
    for (let round = 3; round < 6; round++) {
      buffer.add(line('main', round));
      clock += 3_600_000;
      await shipper.flush();
    }
    error = undefined;
    clock += 3_600_000;
    await shipper.flush();
    assert.deepEqual(said, ['Cloud: cannot send log lines (log batch: the server answered 503); keeping them on disk', 'Cloud: sending log lines again']);
    await shipper.stop();
  });
});

describe('FairQueue', () => {
  it('takes sources in turn and returns the batch in time order', () => {
    const q = new FairQueue(10);
    for (let i = 0; i < 6; i++) q.push({ timestamp: i, message: `a${i}`, serviceName: 'a' });
    q.push({ timestamp: 100, message: 'b0', serviceName: 'b' });
    assert.deepEqual(q.take(4).map((l) => l.message), ['a0', 'a1', 'a2', 'b0']);
    assert.equal(q.length, 3);
  });
});

describe('DiskLogBuffer', () => {
  it('reads across segments and resumes after a reopen from the committed position', () => {
    const dir = scratchDir('skiff-disk-');
    const disk = new DiskLogBuffer(dir, 1_000_000, 200);
    for (let i = 0; i < 20; i++) disk.append([{ timestamp: i, message: `m${i}` }]);
    assert.ok(readdirSync(dir).filter((f) => f.endsWith('.ndjson')).length > 1, 'rotated');
    const got: string[] = [];
    let peeked = disk.peek(7);
    got.push(...peeked.lines.map((l) => l.message));
    disk.commit(peeked.next, 0);
    const reopened = new DiskLogBuffer(dir, 1_000_000, 200);
    while (!reopened.isEmpty) {
      peeked = reopened.peek(7);
      got.push(...peeked.lines.map((l) => l.message));
      reopened.commit(peeked.next, 0);
    }
    assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => `m${i}`));
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.ndjson')), [], 'no segment left once all was sent');
  });
});
