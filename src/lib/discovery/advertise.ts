/**
 * The agent's mDNS responder: `skiff scan` (and any DNS-SD browser) finds the device as
 * `<name>._skiff._tcp.local`. It answers queries, announces itself at start and says goodbye at
 * stop. It must never take the agent down: every socket problem becomes a warning.
 */
import type { RemoteInfo } from 'node:dgram';
import type { MdnsPacket } from 'multicast-dns';
import { multicastInterfaces, onSubnet, openLink, type Ipv4Interface, type MdnsLink } from './mdns-link.js';
import { LEGACY_TTL, agentRecords, allRecords, answerQuery, withTtl, type AgentIdentity } from './records.js';

export interface AdvertiseOptions {
  uuid: string;
  deviceType: string;
  arch: string;
  /** The agent's version (what GET /v2/version answers). */
  version: string;
  /** The device API's port, published in the SRV record. */
  apiPort: number;
  /** Instance name browsers show (default `skiff-<first 7 of the uuid>`). */
  name?: string;
  /** Host label, published as `<hostname>.local` (default: the first 7 of the uuid, as balenaOS does). */
  hostname?: string;
  /** Interface names or IPv4 addresses to advertise on (default: every interface that is up and can multicast). */
  interfaces?: string[];
  /** Socket trouble (no multicast route, port taken, …); the responder carries on without that interface. */
  onWarning?: (message: string) => void;
  /** UDP port; 5353 except in tests. */
  port?: number;
}

export interface Advertiser {
  /** Sends a goodbye (TTL 0) and closes the sockets. */
  stop(): Promise<void>;
}

/** How often to look for interfaces that came up (DHCP after boot) or went away. */
const RESCAN_MS = 5000;
/** RFC 6762 §6: shared records (our PTR) are answered after a random 20–120 ms. */
const SHARED_DELAY_MS = [20, 120] as const;

/**
 * Starts answering for the agent on the LAN.
 *
 * @example
 * const ad = await advertiseAgent({ uuid, deviceType: 'raspberrypi4-64', arch: 'aarch64', version: '0.1.0', apiPort: 48484 });
 * // …
 * await ad.stop();
 */
export async function advertiseAgent(options: AdvertiseOptions): Promise<Advertiser> {
  const short = options.uuid.slice(0, 7);
  const id: AgentIdentity = {
    uuid: options.uuid,
    deviceType: options.deviceType,
    arch: options.arch,
    version: options.version,
    apiPort: options.apiPort,
    name: options.name ?? `skiff-${short}`,
    hostname: options.hostname ?? short,
  };
  const warned = new Set<string>();
  const warn = (message: string) => {
    // The interface scan repeats every few seconds: say each thing once, not every time.
    if (warned.has(message)) return;
    warned.add(message);
    try {
      options.onWarning?.(message);
    } catch {
      // a failing warning sink must not stop the responder either
    }
  };
  const links = new Map<string, MdnsLink>();
  const timers = new Set<NodeJS.Timeout>();
  let stopped = false;
  let noInterfaceWarned = false;

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      if (!stopped) fn();
    }, ms);
    t.unref();
    timers.add(t);
  };

  const send = (link: MdnsLink, packet: MdnsPacket, to?: RemoteInfo): Promise<void> => new Promise((resolve) => {
    try {
      link.mdns.respond(packet, to ? { address: to.address, port: to.port } : null, (err) => {
        if (err) warn(`mDNS on ${link.iface.name} (${link.iface.address}): cannot send (${(err as NodeJS.ErrnoException).code ?? err.message})`);
        resolve();
      });
    } catch (err) {
      warn(`mDNS on ${link.iface.name}: cannot send (${(err as Error).message})`);
      resolve();
    }
  });

  const announce = (link: MdnsLink) => {
    const records = allRecords(agentRecords(id, link.iface.address));
    void send(link, { answers: records });
    // RFC 6762 §8.3: at least two announcements, one second apart.
    later(1000, () => void send(link, { answers: records }));
  };

  const onQuery = (link: MdnsLink, packet: MdnsPacket, rinfo: RemoteInfo) => {
    if (stopped || !onSubnet(rinfo.address, link.iface)) return;
    const reply = answerQuery(packet.questions ?? [], agentRecords(id, link.iface.address));
    if (!reply) return;
    if (rinfo.port !== link.port) {
      // A one-shot querier (RFC 6762 §6.7): answer it directly, echoing its id and question.
      void send(link, { id: packet.id, questions: packet.questions, answers: withTtl(reply.answers, LEGACY_TTL, false), additionals: withTtl(reply.additionals, LEGACY_TTL, false) }, rinfo);
      return;
    }
    const shared = reply.answers.some((r) => r.type === 'PTR');
    const delay = shared ? SHARED_DELAY_MS[0] + Math.random() * (SHARED_DELAY_MS[1] - SHARED_DELAY_MS[0]) : 0;
    later(delay, () => void send(link, { answers: reply.answers, additionals: reply.additionals }));
  };

  const refresh = async () => {
    const wanted = multicastInterfaces(options.interfaces);
    const keys = new Set(wanted.map(key));
    for (const [k, link] of links) {
      if (!keys.has(k)) {
        links.delete(k);
        await link.close();
      }
    }
    for (const iface of wanted) {
      if (stopped || links.has(key(iface))) continue;
      const link = await openLink(iface, { port: options.port, onWarning: warn });
      if (!link) continue;
      if (stopped) {
        await link.close();
        return;
      }
      links.set(key(iface), link);
      link.mdns.on('query', (packet, rinfo) => onQuery(link, packet, rinfo));
      announce(link);
    }
    if (links.size > 0) noInterfaceWarned = false;
    else if (!noInterfaceWarned) {
      noInterfaceWarned = true;
      warn(options.interfaces?.length
        ? `mDNS: none of ${options.interfaces.join(', ')} is a usable IPv4 interface; not advertising until one is`
        : 'mDNS: no network interface that can multicast is up; not advertising until one is');
    }
  };

  const rescan = () => later(RESCAN_MS, () => {
    refresh().catch((err: Error) => warn(`mDNS: ${err.message}`)).finally(() => {
      if (!stopped) rescan();
    });
  });

  await refresh().catch((err: Error) => warn(`mDNS: ${err.message}`));
  rescan();

  return {
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      const open = [...links.values()];
      links.clear();
      await Promise.all(open.map(async (link) => {
        const goodbye = withTtl(allRecords(agentRecords(id, link.iface.address)), 0);
        await Promise.race([send(link, { answers: goodbye }), new Promise((r) => setTimeout(r, 500).unref())]);
        await link.close();
      }));
    },
  };
}

function key(iface: Ipv4Interface): string {
  return `${iface.name}/${iface.address}`;
}
