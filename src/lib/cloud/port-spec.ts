/**
 * `skiff device tunnel -p SPEC`: what one port flag asks for. balena's forms
 * `[localIP:]localPort:remotePort` and a lone `remotePort`, plus ours for a service container's
 * address: `[localIP:]localPort:service:remotePort`. An IPv6 local address goes in brackets
 * (`[::1]:8080:80`), as in a URL.
 */
import { isIP } from 'node:net';
import { SkiffError } from '../errors/errors.js';

/** One forwarded port, parsed. */
export interface PortSpec {
  /** The flag's text as typed (for messages). */
  spec: string;
  /** Where to listen: an IP address or `localhost` (default 127.0.0.1: the tunnel is for this machine only). */
  localAddress: string;
  localPort: number;
  /** The TCP port on the device host, or in the service's container when `service` is set. */
  remotePort: number;
  service?: string;
}

const SERVICE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;
const FORMS = '[localIP:]localPort:remotePort, [localIP:]localPort:service:remotePort, or remotePort alone';

/**
 * Parses one `-p` value.
 *
 * @example parsePortSpec('8080:80') // { localAddress: '127.0.0.1', localPort: 8080, remotePort: 80 }
 * @example parsePortSpec('0.0.0.0:5432:db:5432') // … service: 'db'
 * @throws SkiffError('usage') naming the spec and what is wrong with it, one line
 */
export function parsePortSpec(spec: string): PortSpec {
  const bad = (why: string): SkiffError => new SkiffError('usage', `port '${spec}': ${why}`, { hint: `use ${FORMS}` });
  const text = spec.trim();
  if (text === '') throw bad('empty');
  let address: string | undefined;
  let rest = text;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') throw bad('an IPv6 address in brackets must be followed by :localPort');
    address = text.slice(1, close);
    if (isIP(address) !== 6) throw bad(`'${address}' is not an IPv6 address`);
    rest = text.slice(close + 2);
  }
  const parts = rest.split(':');
  if (parts.some((p) => p === '')) throw bad('an empty part');
  if (address === undefined && parts.length >= 3 && isAddress(parts[0] ?? '')) address = parts.shift();
  if (address === undefined && parts.length === 2 && isAddress(parts[0] ?? '')) {
    throw bad(`ambiguous: '${parts[0]}' is an address, so the local port is missing (e.g. ${parts[0]}:${parts[1]}:${parts[1]})`);
  }
  let local: string | undefined;
  let service: string | undefined;
  let remote: string;
  if (parts.length === 1) {
    remote = parts[0] ?? '';
  } else if (parts.length === 2) {
    [local = '', remote = ''] = parts;
  } else if (parts.length === 3) {
    [local = '', service = '', remote = ''] = parts;
  } else {
    throw bad('too many parts');
  }
  if (service !== undefined && (/^\d+$/.test(service) || !SERVICE.test(service))) {
    throw bad(/^\d+$/.test(service) ? `'${parts[0]}' is not an IP address` : `'${service}' is not a service name`);
  }
  const remotePort = port(remote, 'remote', bad);
  const localPort = local === undefined ? remotePort : port(local, 'local', bad);
  return { spec, localAddress: address ?? '127.0.0.1', localPort, remotePort, ...(service ? { service } : {}) };
}

/**
 * Parses every `-p` value and refuses two that listen on the same local address and port.
 *
 * @throws SkiffError('usage') as {@link parsePortSpec}, or naming the repeated local address
 */
export function parsePortSpecs(specs: string[]): PortSpec[] {
  if (specs.length === 0) throw new SkiffError('usage', 'name at least one port to forward with -p', { hint: `use ${FORMS}` });
  const parsed = specs.map(parsePortSpec);
  const seen = new Set<string>();
  for (const p of parsed) {
    const key = `${p.localAddress}:${p.localPort}`;
    if (seen.has(key)) throw new SkiffError('usage', `port '${p.spec}': ${localLabel(p)} is already forwarded by another -p`);
    seen.add(key);
  }
  return parsed;
}

/** `127.0.0.1:8080`, `[::1]:8080`: where a spec listens, as people write it. */
export function localLabel(p: Pick<PortSpec, 'localAddress' | 'localPort'>): string {
  return `${isIP(p.localAddress) === 6 ? `[${p.localAddress}]` : p.localAddress}:${p.localPort}`;
}

/** `80`, `web:80`: what a spec reaches on the device. */
export function remoteLabel(p: Pick<PortSpec, 'remotePort' | 'service'>): string {
  return p.service ? `${p.service}:${p.remotePort}` : String(p.remotePort);
}

function isAddress(s: string): boolean {
  return s === 'localhost' || isIP(s) !== 0;
}

function port(text: string, which: 'local' | 'remote', bad: (why: string) => SkiffError): number {
  if (!/^\d+$/.test(text)) throw bad(`the ${which} port '${text}' is not a number`);
  const n = Number(text);
  if (n < 1 || n > 65535) throw bad(`the ${which} port ${n} is outside 1-65535`);
  return n;
}
