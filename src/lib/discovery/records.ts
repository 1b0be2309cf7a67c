/**
 * What a device advertises over mDNS (DNS-SD, RFC 6762/6763), as plain data: the records an agent
 * publishes, the answer to a query, and the TXT codec. No sockets here, so all of it is unit-tested.
 */
import type { MdnsQuestion, MdnsRecord } from 'multicast-dns';

/** Our agents: `<name>._skiff._tcp.local`, SRV to `<hostname>.local` on the device API port. */
export const SKIFF_SERVICE = '_skiff._tcp.local';
/**
 * balenaOS: avahi publishes `_ssh._tcp` (port 22222) with the subtype `_resin-device` from
 * /etc/avahi/services/ssh.service (meta-balena's openssh recipe); the instance and host are the
 * device's hostname, by default the first 7 characters of its uuid.
 */
export const BALENA_SSH_SERVICE = '_ssh._tcp.local';
export const BALENA_SUBTYPE = `_resin-device._sub.${BALENA_SSH_SERVICE}`;
/** DNS-SD service enumeration (RFC 6763 §9). */
export const SERVICE_TYPES = '_services._dns-sd._udp.local';

export const MDNS_PORT = 5353;
/** RFC 6762 §10: 120 s for records that name a host, 75 minutes for the others. */
export const HOST_TTL = 120;
export const OTHER_TTL = 4500;
/** RFC 6762 §6.7: answers to a legacy (one-shot, not port 5353) query carry at most 10 s. */
export const LEGACY_TTL = 10;

export interface AgentIdentity {
  uuid: string;
  deviceType: string;
  arch: string;
  version: string;
  apiPort: number;
  /** DNS-SD instance name, e.g. `skiff-3f2a9c1`. */
  name: string;
  /** Host label; published as `<hostname>.local`. */
  hostname: string;
}

/** One DNS label: no dots, at most 63 bytes (what dns-packet can encode). */
export function dnsLabel(text: string): string {
  let label = text.replace(/\./g, '-').trim() || 'skiff';
  while (Buffer.byteLength(label) > 63) label = label.slice(0, -1);
  return label;
}

/** A host label: letters, digits and hyphens only. */
export function hostLabel(text: string): string {
  const label = text.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 63);
  return label || 'skiff';
}

export interface AgentRecords {
  ptr: MdnsRecord;
  srv: MdnsRecord;
  txt: MdnsRecord;
  a: MdnsRecord;
  serviceType: MdnsRecord;
}

/** The records an agent publishes on an interface whose address is `address`. */
export function agentRecords(id: AgentIdentity, address: string, ttl?: number): AgentRecords {
  const instance = `${dnsLabel(id.name)}.${SKIFF_SERVICE}`;
  const host = `${hostLabel(id.hostname)}.local`;
  const hostTtl = ttl ?? HOST_TTL;
  const otherTtl = ttl ?? OTHER_TTL;
  return {
    ptr: { name: SKIFF_SERVICE, type: 'PTR', ttl: otherTtl, data: instance },
    srv: { name: instance, type: 'SRV', ttl: hostTtl, flush: true, data: { port: id.apiPort, target: host, priority: 0, weight: 0 } },
    txt: {
      name: instance,
      type: 'TXT',
      ttl: otherTtl,
      flush: true,
      data: encodeTxt({ txtvers: '1', uuid: id.uuid, 'device-type': id.deviceType, arch: id.arch, version: id.version, 'api-port': String(id.apiPort) }),
    },
    a: { name: host, type: 'A', ttl: hostTtl, flush: true, data: address },
    serviceType: { name: SERVICE_TYPES, type: 'PTR', ttl: otherTtl, data: SKIFF_SERVICE },
  };
}

/** Everything, for an announcement (or, with TTL 0, a goodbye). */
export function allRecords(r: AgentRecords): MdnsRecord[] {
  return [r.ptr, r.srv, r.txt, r.a, r.serviceType];
}

export interface Answer {
  answers: MdnsRecord[];
  additionals: MdnsRecord[];
}

/**
 * The answer to a query, or undefined when it asks for nothing we publish. A PTR answer brings the
 * SRV, TXT and A records along as additionals (RFC 6763 §12.1), so one round trip is enough.
 */
export function answerQuery(questions: readonly MdnsQuestion[], r: AgentRecords): Answer | undefined {
  const answers: MdnsRecord[] = [];
  const add = (record: MdnsRecord) => {
    if (!answers.includes(record)) answers.push(record);
  };
  for (const q of questions) {
    const name = q.name.toLowerCase();
    const wants = (type: string) => q.type === type || q.type === 'ANY';
    if (name === SKIFF_SERVICE && wants('PTR')) add(r.ptr);
    if (name === SERVICE_TYPES && wants('PTR')) add(r.serviceType);
    if (name === r.srv.name.toLowerCase()) {
      if (wants('SRV')) add(r.srv);
      if (wants('TXT')) add(r.txt);
    }
    if (name === r.a.name.toLowerCase() && wants('A')) add(r.a);
  }
  if (answers.length === 0) return undefined;
  const additionals: MdnsRecord[] = [];
  if (answers.includes(r.ptr)) additionals.push(r.srv, r.txt, r.a);
  else if (answers.includes(r.srv)) additionals.push(r.a);
  return { answers, additionals: additionals.filter((x) => !answers.includes(x)) };
}

/** `key=value` strings (RFC 6763 §6), each cut to the 255 bytes a TXT string can hold. */
export function encodeTxt(values: Record<string, string>): string[] {
  return Object.entries(values).map(([k, v]) => {
    let item = `${k}=${v}`;
    while (Buffer.byteLength(item) > 255) item = item.slice(0, -1);
    return item;
  });
}

/** TXT data (dns-packet decodes it to buffers) to a map; keys are case-insensitive, first wins. */
export function decodeTxt(data: unknown): Record<string, string> {
  const items = Array.isArray(data) ? data : data === undefined ? [] : [data];
  const out: Record<string, string> = {};
  for (const item of items) {
    const text = Buffer.isBuffer(item) ? item.toString('utf8') : typeof item === 'string' ? item : '';
    if (text === '') continue;
    const eq = text.indexOf('=');
    const key = (eq === -1 ? text : text.slice(0, eq)).toLowerCase();
    if (key !== '' && !(key in out)) out[key] = eq === -1 ? '' : text.slice(eq + 1);
  }
  return out;
}

/** The same records with another TTL (0 for a goodbye, 10 s for a legacy answer); no cache-flush bit then. */
export function withTtl(records: readonly MdnsRecord[], ttl: number, flush = true): MdnsRecord[] {
  return records.map((r) => ({ ...r, ttl: Math.min(r.ttl ?? ttl, ttl), ...(flush ? {} : { flush: false }) }) as MdnsRecord);
}
