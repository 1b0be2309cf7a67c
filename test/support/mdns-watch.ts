/**
 * Prints `seen <name>` each time an mDNS answer about `<name>` (e.g. an agent's `<host>.local`) goes
 * by on the link of `<IPv4 address>`: lets a test wait until a device has answered, instead of
 * sleeping. Run it in the network namespace to watch:
 *
 *   node --import tsx test/support/mdns-watch.ts <IPv4 address> <name>
 *
 * Prints `ready` once it listens; stops on SIGTERM.
 */
import process from 'node:process';
import multicastDns from 'multicast-dns';

const [address = '127.0.0.1', name = ''] = process.argv.slice(2);
const mdns = multicastDns({ interface: address, bind: '0.0.0.0', reuseAddr: true });
mdns.on('error', (err) => process.stderr.write(`mdns error: ${err.message}\n`));
mdns.on('response', (packet) => {
  const records = [...(packet.answers ?? []), ...(packet.additionals ?? [])];
  if (records.some((r) => r.name.toLowerCase() === name.toLowerCase() && (r.ttl ?? 0) > 0)) process.stdout.write(`seen ${name}\n`);
});
mdns.on('ready', () => process.stdout.write('ready\n'));
process.once('SIGTERM', () => mdns.destroy(() => process.exit(0)));
