/**
 * Stands in for a balenaOS device on a test LAN: answers mDNS exactly as balenaOS's avahi does for
 * /etc/avahi/services/ssh.service (meta-balena's openssh recipe): `_ssh._tcp` on port 22222 with
 * the subtype `_resin-device._sub._ssh._tcp`, instance and host named after the hostname (by
 * default the first 7 characters of the uuid), an empty TXT record, and the host's A record.
 * A real balenaOS device cannot run here. No device API: like a production image, it does not
 * answer on 48484.
 *
 *   node --import tsx test/support/balena-os-responder.ts <hostname> <IPv4 address>
 *
 * Prints `ready` once it listens; stops on SIGTERM.
 */
import process from 'node:process';
import multicastDns, { type MdnsRecord } from 'multicast-dns';

const [hostname = '5e1b2c3', address = '127.0.0.1'] = process.argv.slice(2);
const SSH = '_ssh._tcp.local';
const SUBTYPE = `_resin-device._sub.${SSH}`;
const instance = `${hostname}.${SSH}`;
const host = `${hostname}.local`;

const ptr = (name: string): MdnsRecord => ({ name, type: 'PTR', ttl: 4500, data: instance });
const srv: MdnsRecord = { name: instance, type: 'SRV', ttl: 120, flush: true, data: { port: 22222, target: host, priority: 0, weight: 0 } };
const txt: MdnsRecord = { name: instance, type: 'TXT', ttl: 4500, flush: true, data: [Buffer.alloc(0)] };
const a: MdnsRecord = { name: host, type: 'A', ttl: 120, flush: true, data: address };
const services: MdnsRecord = { name: '_services._dns-sd._udp.local', type: 'PTR', ttl: 4500, data: SSH };

const mdns = multicastDns({ interface: address, bind: '0.0.0.0', reuseAddr: true });
mdns.on('error', (err) => process.stderr.write(`mdns error: ${err.message}\n`));
mdns.on('query', (packet) => {
  const answers: MdnsRecord[] = [];
  for (const q of packet.questions ?? []) {
    const name = q.name.toLowerCase();
    const any = q.type === 'ANY';
    if ((name === SSH || name === SUBTYPE) && (q.type === 'PTR' || any)) answers.push(ptr(name));
    if (name === '_services._dns-sd._udp.local' && (q.type === 'PTR' || any)) answers.push(services);
    if (name === instance.toLowerCase() && (q.type === 'SRV' || any)) answers.push(srv);
    if (name === instance.toLowerCase() && (q.type === 'TXT' || any)) answers.push(txt);
    if (name === host.toLowerCase() && (q.type === 'A' || any)) answers.push(a);
  }
  if (answers.length === 0) return;
  // avahi sends what a PTR answer needs along as additional records.
  const additionals = answers.some((r) => r.type === 'PTR' && r.data === instance) ? [srv, txt, a] : answers.includes(srv) ? [a] : [];
  mdns.respond({ answers, additionals: additionals.filter((r) => !answers.includes(r)) });
});
mdns.on('ready', () => {
  mdns.respond({ answers: [ptr(SSH), ptr(SUBTYPE), srv, txt, a] }); // avahi announces on start
  process.stdout.write('ready\n');
});
process.once('SIGTERM', () => mdns.destroy(() => process.exit(0)));
