/**
 * `skiff scan`: browse the LAN for our agents (`_skiff._tcp`) and balenaOS devices (the
 * `_resin-device` subtype of `_ssh._tcp`), then ask each device's API what mDNS does not say.
 */
import type { MdnsQuestion, MdnsRecord, SrvData } from 'multicast-dns';
import { DEVICE_API_PORT, DeviceClient, parseDeviceAddress } from '../device/client.js';
import { isSkiffError } from '../errors/errors.js';
import { multicastInterfaces, onSubnet, openLink, type MdnsLink } from './mdns-link.js';
import { BALENA_SSH_SERVICE, BALENA_SUBTYPE, SKIFF_SERVICE, decodeTxt } from './records.js';

export type DeviceKind = 'agent' | 'balenaOS';

/** What mDNS says about a device. */
export interface Sighting {
  /** The address the device answered from (one of its A records when it published any). */
  address: string;
  /** `<hostname>.local`, from the SRV record. */
  hostname: string | null;
  /** The DNS-SD instance name, e.g. `skiff-3f2a9c1` or a balenaOS device's hostname. */
  name: string;
  kind: DeviceKind;
  uuid: string | null;
  deviceType: string | null;
  arch: string | null;
  /** Agent version (from TXT) or, once asked, the supervisor's. */
  version: string | null;
  /** Port of the device API (balenaOS: always 48484; its SRV names the SSH port). */
  apiPort: number;
}

/** A device found on the LAN: mDNS, filled in by its API when it answered. */
export interface FoundDevice extends Sighting {
  /** open: the device API answered; refused: it wants an API key (or is no device API); unreachable: no answer. */
  api: 'open' | 'refused' | 'unreachable';
}

export interface ScanOptions {
  /** How long to listen for answers. */
  timeoutMs: number;
  /** Interface names or IPv4 addresses to scan on (default: every interface that is up and can multicast). */
  interfaces?: string[];
  /** Socket trouble, interfaces that could not be used. */
  onWarning?: (message: string) => void;
  /** Time for each device API request (default 2 s). */
  apiTimeoutMs?: number;
  /** Ask each device's API for its type and version (default true). */
  enrich?: boolean;
  /** UDP port; 5353 except in tests. */
  port?: number;
}

const BROWSE: MdnsQuestion[] = [
  { name: SKIFF_SERVICE, type: 'PTR' },
  { name: BALENA_SUBTYPE, type: 'PTR' },
];

/**
 * Finds devices on the LAN. A device whose API does not answer is still listed with what mDNS gave.
 *
 * @example
 * const devices = await scanDevices({ timeoutMs: 4000 });
 */
export async function scanDevices(options: ScanOptions): Promise<FoundDevice[]> {
  const warned = new Set<string>();
  const warn = (message: string) => {
    if (warned.has(message)) return; // a query repeats, and so would its send error
    warned.add(message);
    options.onWarning?.(message);
  };
  const ifaces = multicastInterfaces(options.interfaces);
  if (ifaces.length === 0) {
    warn(options.interfaces?.length ? `none of ${options.interfaces.join(', ')} is an IPv4 interface here` : 'no network interface that can multicast is up');
    return [];
  }
  const links = (await Promise.all(ifaces.map((iface) => openLink(iface, { port: options.port, ephemeralFallback: true, onWarning: warn })))).filter((l): l is MdnsLink => l !== undefined);
  const sightings = new Sightings();
  const ask = (questions: MdnsQuestion[]) => {
    for (const link of links) {
      try {
        link.mdns.query({ questions }, (err) => {
          if (err) warn(`mDNS on ${link.iface.name} (${link.iface.address}): cannot send a query (${(err as NodeJS.ErrnoException).code ?? err.message})`);
        });
      } catch (err) {
        warn(`mDNS on ${link.iface.name}: cannot send a query (${(err as Error).message})`);
      }
    }
  };
  for (const link of links) {
    link.mdns.on('response', (packet, rinfo) => {
      if (!onSubnet(rinfo.address, link.iface)) return; // RFC 6762 §11: only what comes from this link
      sightings.add([...(packet.answers ?? []), ...(packet.additionals ?? [])], rinfo.address);
      const more = sightings.missing();
      if (more.length > 0) ask(more);
    });
  }
  const timers: NodeJS.Timeout[] = [];
  // RFC 6762 §5.2: repeat the query after 1 s, then at doubling intervals (a lost packet is common on Wi-Fi).
  for (let at = 0, gap = 1000; at < options.timeoutMs; at += gap, gap *= 2) timers.push(setTimeout(() => ask(BROWSE), at));
  await new Promise((resolve) => setTimeout(resolve, options.timeoutMs));
  for (const t of timers) clearTimeout(t);
  await Promise.all(links.map((l) => l.close()));

  const seen = sightings.devices();
  const apiTimeoutMs = options.apiTimeoutMs ?? 2000;
  const found = options.enrich === false
    ? seen.map((s): FoundDevice => ({ ...s, api: 'unreachable' }))
    : await Promise.all(seen.map((s) => Promise.race([
      enrich(s, apiTimeoutMs),
      // The client's timeout covers the headers; a device that never finishes its body must not hold the scan.
      new Promise<FoundDevice>((resolve) => setTimeout(() => resolve({ ...s, api: 'unreachable' }), apiTimeoutMs * 2).unref()),
    ])));
  return found.sort((a, b) => compareAddresses(a.address, b.address) || a.apiPort - b.apiPort);
}

/** Device type, architecture and version from the device API (GET /v2/version, /v2/local/device-info). */
async function enrich(s: Sighting, timeoutMs: number): Promise<FoundDevice> {
  let client: DeviceClient;
  try {
    client = new DeviceClient(parseDeviceAddress(`${s.address}:${s.apiPort}`));
  } catch {
    return { ...s, api: 'unreachable' };
  }
  const [version, info] = await Promise.allSettled([
    client.json<{ version?: unknown }>('GET', '/v2/version', undefined, timeoutMs),
    client.json<{ info?: { deviceType?: unknown; arch?: unknown } }>('GET', '/v2/local/device-info', undefined, timeoutMs),
  ]);
  const text = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const device: FoundDevice = {
    ...s,
    version: (version.status === 'fulfilled' ? text(version.value?.version) : undefined) ?? s.version,
    deviceType: (info.status === 'fulfilled' ? text(info.value?.info?.deviceType) : undefined) ?? s.deviceType,
    arch: (info.status === 'fulfilled' ? text(info.value?.info?.arch) : undefined) ?? s.arch,
    api: 'open',
  };
  const failures = [version, info].filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failures.length > 0) {
    const unreachable = failures.every((f) => isSkiffError(f.reason) && f.reason.code === 'deviceUnreachable');
    device.api = unreachable && failures.length === 2 ? 'unreachable' : 'refused';
  }
  return device;
}

function compareAddresses(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 4; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return a.localeCompare(b);
}

interface Heard<T> {
  data: T;
  from: string;
}

/**
 * The records heard during a scan, and the devices they describe. Pure bookkeeping: fed with
 * records and the address each came from, it says which devices are complete and what to ask next.
 */
export class Sightings {
  private readonly ptr = new Map<string, Map<string, Heard<string>>>();
  private readonly srv = new Map<string, Heard<SrvData>>();
  private readonly txt = new Map<string, Heard<Record<string, string>>>();
  private readonly a = new Map<string, Map<string, Heard<string>>>();
  private readonly asked = new Set<string>();

  add(records: readonly MdnsRecord[], from: string): void {
    for (const r of records) {
      const name = r.name.toLowerCase();
      const gone = r.ttl === 0; // a goodbye (RFC 6762 §10.1)
      if (r.type === 'PTR' && typeof r.data === 'string') {
        const set = this.ptr.get(name) ?? new Map<string, Heard<string>>();
        if (gone) set.delete(r.data.toLowerCase());
        else set.set(r.data.toLowerCase(), { data: r.data, from });
        this.ptr.set(name, set);
      } else if (r.type === 'SRV' && isSrv(r.data)) {
        if (gone) this.srv.delete(name);
        else this.srv.set(name, { data: r.data, from });
      } else if (r.type === 'TXT') {
        if (gone) this.txt.delete(name);
        else this.txt.set(name, { data: decodeTxt(r.data), from });
      } else if (r.type === 'A' && typeof r.data === 'string') {
        const set = this.a.get(name) ?? new Map<string, Heard<string>>();
        if (gone) set.delete(r.data);
        else set.set(r.data, { data: r.data, from });
        this.a.set(name, set);
      }
    }
  }

  /** Questions for what is still missing (an instance's SRV and TXT, a host's address), each asked once. */
  missing(): MdnsQuestion[] {
    const questions: MdnsQuestion[] = [];
    const ask = (name: string, type: string) => {
      const k = `${name.toLowerCase()}|${type}`;
      if (this.asked.has(k)) return;
      this.asked.add(k);
      questions.push({ name, type });
    };
    for (const { instance } of this.instances()) {
      const srv = this.srv.get(instance.toLowerCase());
      if (!srv) {
        ask(instance, 'SRV');
        if (!this.txt.has(instance.toLowerCase())) ask(instance, 'TXT');
      } else if ((this.a.get(srv.data.target.toLowerCase())?.size ?? 0) === 0) {
        ask(srv.data.target, 'A');
      }
    }
    return questions;
  }

  /** One entry per device (address and API port), agents first when both kinds claim the same one. */
  devices(): Sighting[] {
    const byKey = new Map<string, Sighting>();
    for (const { instance, kind, from } of this.instances()) {
      const srv = this.srv.get(instance.toLowerCase());
      const txt = this.txt.get(instance.toLowerCase())?.data ?? {};
      const target = srv?.data.target ?? null;
      const addresses = target ? [...(this.a.get(target.toLowerCase())?.values() ?? [])].map((h) => h.data) : [];
      const heardFrom = [from, srv?.from].filter((x): x is string => x !== undefined);
      const address = addresses.find((x) => heardFrom.includes(x)) ?? addresses[0] ?? srv?.from ?? from;
      const suffix = kind === 'agent' ? SKIFF_SERVICE : BALENA_SSH_SERVICE;
      const name = instance.toLowerCase().endsWith(`.${suffix}`) ? instance.slice(0, -(suffix.length + 1)) : instance.split('.')[0] ?? instance;
      const apiPort = kind === 'agent' ? port(txt['api-port']) ?? srv?.data.port ?? DEVICE_API_PORT : DEVICE_API_PORT;
      const sighting: Sighting = {
        address,
        hostname: target,
        name,
        kind,
        uuid: kind === 'agent' ? txt.uuid || null : null,
        deviceType: kind === 'agent' ? txt['device-type'] || null : null,
        arch: kind === 'agent' ? txt.arch || null : null,
        version: kind === 'agent' ? txt.version || null : null,
        apiPort,
      };
      const k = `${address}:${apiPort}`;
      const existing = byKey.get(k);
      if (!existing || (existing.kind === 'balenaOS' && kind === 'agent')) byKey.set(k, sighting);
    }
    return [...byKey.values()];
  }

  private *instances(): Generator<{ instance: string; kind: DeviceKind; from: string }> {
    for (const [service, kind] of [[SKIFF_SERVICE, 'agent'], [BALENA_SUBTYPE, 'balenaOS']] as const) {
      for (const heard of this.ptr.get(service)?.values() ?? []) yield { instance: heard.data, kind, from: heard.from };
    }
  }
}

function isSrv(data: unknown): data is SrvData {
  const d = data as Partial<SrvData> | undefined;
  return typeof d?.port === 'number' && typeof d.target === 'string';
}

function port(text: string | undefined): number | undefined {
  const n = Number(text);
  return Number.isInteger(n) && n > 0 && n < 65536 ? n : undefined;
}
