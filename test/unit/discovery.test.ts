import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import multicastDns, { type MdnsPacket, type MdnsRecord } from 'multicast-dns';
import { BALENA_SSH_SERVICE, BALENA_SUBTYPE, SERVICE_TYPES, SKIFF_SERVICE, agentRecords, answerQuery, decodeTxt, dnsLabel, encodeTxt, hostLabel, withTtl, type AgentIdentity } from '../../src/lib/discovery/records.js';
import { onSubnet } from '../../src/lib/discovery/mdns-link.js';
import { Sightings, scanDevices } from '../../src/lib/discovery/scan.js';
import { advertiseAgent } from '../../src/lib/discovery/advertise.js';

const ID: AgentIdentity = { uuid: '3f2a9c1d0e5b4a7f8c6d2e1b0a9f8e7d', deviceType: 'raspberrypi4-64', arch: 'aarch64', version: '17.0.0', apiPort: 48484, name: 'skiff-3f2a9c1', hostname: '3f2a9c1' };
const INSTANCE = `skiff-3f2a9c1.${SKIFF_SERVICE}`;

/** A UDP port nobody uses, so these tests never meet a real responder on 5353. */
async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const { port } = s.address();
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

describe('discovery: records', () => {
  it('an agent publishes PTR, SRV to <hostname>.local on the API port, TXT and A', () => {
    const r = agentRecords(ID, '10.0.0.5');
    assert.deepEqual(r.ptr, { name: SKIFF_SERVICE, type: 'PTR', ttl: 4500, data: INSTANCE });
    assert.deepEqual(r.srv.data, { port: 48484, target: '3f2a9c1.local', priority: 0, weight: 0 });
    assert.equal(r.srv.ttl, 120);
    assert.deepEqual(decodeTxt(r.txt.data), { txtvers: '1', uuid: ID.uuid, 'device-type': 'raspberrypi4-64', arch: 'aarch64', version: '17.0.0', 'api-port': '48484' });
    assert.deepEqual(r.a, { name: '3f2a9c1.local', type: 'A', ttl: 120, flush: true, data: '10.0.0.5' });
    assert.deepEqual(r.serviceType.data, SKIFF_SERVICE);
  });

  it('a PTR query gets the PTR with SRV, TXT and A as additionals', () => {
    const r = agentRecords(ID, '10.0.0.5');
    const reply = answerQuery([{ name: '_SKIFF._tcp.local', type: 'PTR' }], r);
    assert.deepEqual(reply?.answers, [r.ptr]);
    assert.deepEqual(reply?.additionals, [r.srv, r.txt, r.a]);
  });

  const queries: Array<[string, string, string, (r: ReturnType<typeof agentRecords>) => MdnsRecord[]]> = [
    ['SRV', INSTANCE, 'SRV', (r) => [r.srv]],
    ['TXT', INSTANCE, 'TXT', (r) => [r.txt]],
    ['ANY for the instance', INSTANCE, 'ANY', (r) => [r.srv, r.txt]],
    ['A for the host', '3F2A9C1.local', 'A', (r) => [r.a]],
    ['service enumeration', SERVICE_TYPES, 'PTR', (r) => [r.serviceType]],
  ];
  for (const [what, name, type, expected] of queries) {
    it(`answers ${what}`, () => {
      const r = agentRecords(ID, '10.0.0.5');
      assert.deepEqual(answerQuery([{ name, type }], r)?.answers, expected(r));
    });
  }

  it('ignores what it does not publish', () => {
    const r = agentRecords(ID, '10.0.0.5');
    assert.equal(answerQuery([{ name: BALENA_SUBTYPE, type: 'PTR' }], r), undefined);
    assert.equal(answerQuery([{ name: '3f2a9c1.local', type: 'AAAA' }], r), undefined);
    assert.equal(answerQuery([{ name: 'other.local', type: 'A' }], r), undefined);
    assert.equal(answerQuery([], r), undefined);
  });

  it('TXT: key=value both ways, keys case-insensitive, first one wins, 255 bytes at most', () => {
    assert.deepEqual(decodeTxt([Buffer.from('UUID=abc'), Buffer.from('uuid=other'), Buffer.from('flag'), Buffer.from('')]), { uuid: 'abc', flag: '' });
    assert.deepEqual(decodeTxt(undefined), {});
    assert.deepEqual(decodeTxt(Buffer.from('a=b=c')), { a: 'b=c' });
    assert.equal(Buffer.byteLength(encodeTxt({ long: 'x'.repeat(400) })[0] ?? ''), 255);
  });

  it('names become valid DNS labels', () => {
    assert.equal(dnsLabel('Bench rig v1.2'), 'Bench rig v1-2');
    assert.equal(Buffer.byteLength(dnsLabel('é'.repeat(60))), 62);
    assert.equal(hostLabel('My_Device!'), 'my-device');
    assert.equal(hostLabel('!!!'), 'skiff');
  });

  it('a goodbye is the same records with TTL 0; a legacy answer caps TTL at 10 s without cache-flush', () => {
    const all = Object.values(agentRecords(ID, '10.0.0.5'));
    assert.ok(withTtl(all, 0).every((r) => r.ttl === 0));
    assert.ok(withTtl(all, 10, false).every((r) => r.ttl === 10 && r.flush === false));
  });

  it('onSubnet follows the netmask', () => {
    const iface = { name: 'eth0', address: '192.168.1.20', netmask: '255.255.255.0' };
    assert.ok(onSubnet('192.168.1.1', iface));
    assert.ok(!onSubnet('192.168.2.1', iface));
    assert.ok(!onSubnet('fe80::1', iface));
    assert.ok(onSubnet('10.9.8.7', { name: 'x', address: '10.0.0.1', netmask: '255.0.0.0' }));
  });
});

describe('discovery: sightings', () => {
  /** What balenaOS's avahi sends for `/etc/avahi/services/ssh.service` on a device called 5e1b2c3. */
  const balenaRecords = (host: string, address: string): MdnsRecord[] => [
    { name: BALENA_SUBTYPE, type: 'PTR', ttl: 4500, data: `${host}.${BALENA_SSH_SERVICE}` },
    { name: `${host}.${BALENA_SSH_SERVICE}`, type: 'SRV', ttl: 120, flush: true, data: { port: 22222, target: `${host}.local` } },
    { name: `${host}.${BALENA_SSH_SERVICE}`, type: 'TXT', ttl: 4500, flush: true, data: [Buffer.alloc(0)] },
    { name: `${host}.local`, type: 'A', ttl: 120, flush: true, data: address },
  ];

  it('assembles an agent from one answer with additionals', () => {
    const s = new Sightings();
    s.add(Object.values(agentRecords(ID, '10.0.0.5')), '10.0.0.5');
    assert.deepEqual(s.devices(), [{ address: '10.0.0.5', hostname: '3f2a9c1.local', name: 'skiff-3f2a9c1', kind: 'agent', uuid: ID.uuid, deviceType: 'raspberrypi4-64', arch: 'aarch64', version: '17.0.0', apiPort: 48484 }]);
    assert.deepEqual(s.missing(), []);
  });

  it('recognises a balenaOS device by the _resin-device subtype; its API is on 48484, not the SSH port', () => {
    const s = new Sightings();
    s.add(balenaRecords('5e1b2c3', '10.0.0.7'), '10.0.0.7');
    assert.deepEqual(s.devices(), [{ address: '10.0.0.7', hostname: '5e1b2c3.local', name: '5e1b2c3', kind: 'balenaOS', uuid: null, deviceType: null, arch: null, version: null, apiPort: 48484 }]);
  });

  it('a plain _ssh._tcp host is not a balenaOS device', () => {
    const s = new Sightings();
    s.add([{ name: BALENA_SSH_SERVICE, type: 'PTR', data: `laptop.${BALENA_SSH_SERVICE}` }, ...balenaRecords('laptop', '10.0.0.8').slice(1)], '10.0.0.8');
    assert.deepEqual(s.devices(), []);
  });

  it('asks for what is missing, once: SRV and TXT of an instance, then the host address', () => {
    const s = new Sightings();
    s.add([agentRecords(ID, '10.0.0.5').ptr], '10.0.0.5');
    assert.deepEqual(s.missing(), [{ name: INSTANCE, type: 'SRV' }, { name: INSTANCE, type: 'TXT' }]);
    assert.deepEqual(s.missing(), []);
    // Until the SRV comes, the device is listed with the address it answered from.
    assert.deepEqual(s.devices().map((d) => [d.address, d.hostname, d.apiPort]), [['10.0.0.5', null, 48484]]);
    const r = agentRecords({ ...ID, apiPort: 48500 }, '10.0.0.5');
    s.add([r.srv], '10.0.0.5');
    assert.deepEqual(s.missing(), [{ name: '3f2a9c1.local', type: 'A' }]);
    assert.equal(s.devices()[0]?.apiPort, 48500);
  });

  it('picks the address the device answered from when it publishes several', () => {
    const s = new Sightings();
    const r = agentRecords(ID, '172.17.0.1');
    s.add([r.ptr, r.srv, r.txt, r.a, { ...r.a, data: '10.0.0.5' }], '10.0.0.5');
    assert.equal(s.devices()[0]?.address, '10.0.0.5');
  });

  it('dedupes by address and port across answers; an agent wins over a balenaOS record for the same one', () => {
    const s = new Sightings();
    s.add(Object.values(agentRecords(ID, '10.0.0.5')), '10.0.0.5');
    s.add(Object.values(agentRecords(ID, '10.0.0.5')), '10.0.0.5');
    s.add(balenaRecords('5e1b2c3', '10.0.0.5'), '10.0.0.5');
    s.add(balenaRecords('9a8b7c6', '10.0.0.9'), '10.0.0.9');
    assert.deepEqual(s.devices().map((d) => [d.address, d.kind]), [['10.0.0.5', 'agent'], ['10.0.0.9', 'balenaOS']]);
  });

  it('forgets a device that says goodbye (TTL 0)', () => {
    const s = new Sightings();
    s.add(Object.values(agentRecords(ID, '10.0.0.5')), '10.0.0.5');
    s.add(withTtl(Object.values(agentRecords(ID, '10.0.0.5')), 0), '10.0.0.5');
    assert.deepEqual(s.devices(), []);
  });
});

describe('discovery: responder and browser on loopback (own UDP port)', function () {
  this.timeout(20_000);

  it('the browser finds the advertised agent; a goodbye at stop', async () => {
    const port = await freeUdpPort();
    const warnings: string[] = [];
    const ad = await advertiseAgent({ ...ID, interfaces: ['127.0.0.1'], port, onWarning: (w) => warnings.push(w) });
    try {
      const found = await scanDevices({ timeoutMs: 800, interfaces: ['lo'], port, enrich: false });
      assert.deepEqual(found.map((d) => [d.address, d.kind, d.uuid, d.deviceType, d.version, d.apiPort]), [['127.0.0.1', 'agent', ID.uuid, 'raspberrypi4-64', '17.0.0', 48484]]);
    } finally {
      await ad.stop();
    }
    assert.deepEqual(warnings, []);
  });

  it('answers a one-shot (legacy) query by unicast, echoing id and question, TTL at most 10 s', async () => {
    const port = await freeUdpPort();
    const ad = await advertiseAgent({ ...ID, interfaces: ['127.0.0.1'], port });
    const client = multicastDns({ port: 0, multicast: false });
    try {
      const reply = new Promise<MdnsPacket>((resolve) => client.on('response', (packet) => resolve(packet)));
      client.query({ id: 4242, questions: [{ name: SKIFF_SERVICE, type: 'PTR' }] }, { address: '127.0.0.1', port });
      const packet = await reply;
      assert.equal(packet.id, 4242);
      assert.deepEqual(packet.questions?.map((q) => q.name), [SKIFF_SERVICE]);
      assert.deepEqual(packet.answers?.map((a) => [a.type, a.data, a.ttl]), [['PTR', INSTANCE, 10]]);
      assert.deepEqual(packet.additionals?.map((a) => a.type), ['SRV', 'TXT', 'A']);
    } finally {
      client.destroy();
      await ad.stop();
    }
  });

  it('never throws: a taken port or a missing interface becomes a warning', async () => {
    const blocker = dgram.createSocket({ type: 'udp4', reuseAddr: false });
    await new Promise<void>((resolve) => blocker.bind(0, '0.0.0.0', resolve));
    const warnings: string[] = [];
    try {
      const taken = await advertiseAgent({ ...ID, interfaces: ['127.0.0.1'], port: blocker.address().port, onWarning: (w) => warnings.push(w) });
      await taken.stop();
      assert.match(warnings.join('\n'), /cannot use UDP port \d+ on lo \(127\.0\.0\.1\) \(EADDRINUSE\)/);
      const nowhere = await advertiseAgent({ ...ID, interfaces: ['203.0.113.77'], onWarning: (w) => warnings.push(w) });
      await nowhere.stop();
      assert.match(warnings.join('\n'), /none of 203\.0\.113\.77 is a usable IPv4 interface/);
    } finally {
      blocker.close();
    }
  });
});
