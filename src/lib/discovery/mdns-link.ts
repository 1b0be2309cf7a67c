/**
 * One mDNS socket per network interface. A single socket would send on one interface only (the
 * kernel's choice), so a device with Ethernet and Wi-Fi would answer on one of them; with a socket
 * per interface every query and answer goes out on the link it is meant for. All sockets bind
 * 0.0.0.0:5353 with SO_REUSEADDR, so they share the port with avahi and with each other.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { MdnsOptions, MulticastDns } from 'multicast-dns';
import { MDNS_PORT } from './records.js';

export interface Ipv4Interface {
  name: string;
  address: string;
  netmask: string;
}

const IFF_UP = 0x1;
const IFF_LOOPBACK = 0x8;
const IFF_MULTICAST = 0x1000;

/**
 * The IPv4 interfaces to use. `wanted` (interface names or addresses) picks them explicitly,
 * loopback included; otherwise every interface that is up, has a link and can multicast (what avahi
 * uses), which leaves out loopback and a Docker bridge with no container on it.
 */
export function multicastInterfaces(wanted?: readonly string[]): Ipv4Interface[] {
  const found: Ipv4Interface[] = [];
  for (const [name, addresses] of Object.entries(os.networkInterfaces())) {
    for (const a of addresses ?? []) {
      if (a.family !== 'IPv4') continue;
      const chosen = wanted && wanted.length > 0 ? wanted.includes(name) || wanted.includes(a.address) : !a.internal && linkUsable(name);
      if (chosen) found.push({ name, address: a.address, netmask: a.netmask });
    }
  }
  return found;
}

/** Linux says whether the interface is up and multicast-capable; elsewhere assume it is. */
function linkUsable(name: string): boolean {
  try {
    const flags = Number.parseInt(readFileSync(`/sys/class/net/${name}/flags`, 'utf8').trim(), 16);
    const state = readFileSync(`/sys/class/net/${name}/operstate`, 'utf8').trim();
    return (flags & IFF_UP) !== 0 && (flags & IFF_MULTICAST) !== 0 && (flags & IFF_LOOPBACK) === 0 && state !== 'down';
  } catch {
    return true;
  }
}

function toNumber(ip: string): number {
  return ip.split('.').reduce((n, part) => ((n << 8) | (Number(part) & 255)) >>> 0, 0);
}

/** Whether `address` is on the interface's subnet (RFC 6762 §11: answer the local link only). */
export function onSubnet(address: string, iface: Ipv4Interface): boolean {
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(address)) return false;
  const mask = toNumber(iface.netmask);
  return ((toNumber(address) & mask) >>> 0) === ((toNumber(iface.address) & mask) >>> 0);
}

export interface MdnsLink {
  iface: Ipv4Interface;
  mdns: MulticastDns;
  /** The UDP port the socket is bound to; not 5353 means answers come back by unicast. */
  port: number;
  close(): Promise<void>;
}

export interface OpenLinkOptions {
  /** Default 5353; tests use another port. */
  port?: number;
  /** When the port cannot be bound, send from an ephemeral port instead (a browser can; a responder cannot). */
  ephemeralFallback?: boolean;
  onWarning: (message: string) => void;
}

/** Opens the socket for one interface; failures become a warning and `undefined`, never an exception. */
export async function openLink(iface: Ipv4Interface, options: OpenLinkOptions): Promise<MdnsLink | undefined> {
  const { default: multicastDns } = await import('multicast-dns');
  const port = options.port ?? MDNS_PORT;
  const where = `${iface.name} (${iface.address})`;
  const attempt = (p: number) => start(multicastDns, { interface: iface.address, bind: '0.0.0.0', port: p, reuseAddr: true, loopback: true }, iface, options.onWarning);
  try {
    return await attempt(port);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    if (!options.ephemeralFallback) {
      options.onWarning(`mDNS: cannot use UDP port ${port} on ${where} (${code})`);
      return undefined;
    }
    try {
      return await attempt(0);
    } catch (again) {
      options.onWarning(`mDNS: cannot open a socket on ${where} (${(again as NodeJS.ErrnoException).code ?? (again as Error).message})`);
      return undefined;
    }
  }
}

function start(multicastDns: (o: MdnsOptions) => MulticastDns, opts: MdnsOptions, iface: Ipv4Interface, onWarning: (message: string) => void): Promise<MdnsLink> {
  return new Promise((resolve, reject) => {
    let mdns: MulticastDns;
    try {
      mdns = multicastDns(opts);
    } catch (err) {
      reject(err);
      return;
    }
    let ready = false;
    const seen = new Set<string>();
    const warn = (err: NodeJS.ErrnoException) => {
      // Undecodable packets from other hosts are their problem; socket trouble is ours (once each).
      if (!err.code && !err.syscall) return;
      const text = `mDNS on ${iface.name} (${iface.address}): ${err.syscall ? `${err.syscall} ` : ''}${err.code ?? err.message}`;
      if (seen.has(text)) return;
      seen.add(text);
      onWarning(text);
    };
    mdns.on('warning', warn);
    mdns.on('error', (err) => {
      if (ready) warn(err);
      else {
        ready = true;
        try {
          mdns.destroy();
        } catch {
          // the socket never opened: nothing to close
        }
        reject(err);
      }
    });
    const close = () => new Promise<void>((done) => {
      try {
        mdns.destroy(() => done());
      } catch {
        done();
      }
    });
    mdns.once('ready', () => {
      if (ready) return;
      ready = true;
      resolve({ iface, mdns, port: opts.port ?? MDNS_PORT, close });
    });
  });
}
