/**
 * Checks and conversions for single compose values (sizes, durations, ports, hosts), shared by the
 * project model (compose.ts) and the agent (target-state.ts) so both accept exactly the same text.
 * Each check returns the converted value, or a problem string the caller turns into its own error.
 */

/** Why a value is wrong, in words the caller puts after the key's name. */
export type Problem = string;

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([bkmgt])?b?$/i;
const SIZE_UNIT = { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 } as const;
const DURATION_PART = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g;
const DURATION_UNIT = { ns: 1e-9, us: 1e-6, µs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 } as const;

/**
 * A size as compose writes it (`512m`, `1g`, `64 MB`, or a number of bytes) → bytes. Units are
 * binary (k = 1024), as the engine reads them.
 */
export function sizeBytes(v: unknown): number | Problem {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 ? v : 'must be a size such as 512m or 1g';
  const m = typeof v === 'string' ? SIZE_RE.exec(v.trim()) : null;
  if (!m) return 'must be a size such as 512m or 1g';
  const unit = (m[2]?.toLowerCase() ?? 'b') as keyof typeof SIZE_UNIT;
  return Math.floor(Number(m[1]) * SIZE_UNIT[unit]);
}

/** A duration (`1m30s`, `10s`, `500ms`, or a number of seconds) → seconds. */
export function durationSeconds(v: unknown): number | Problem {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? v : 'must be a duration such as 10s or 1m30s';
  if (typeof v !== 'string' || v === '') return 'must be a duration such as 10s or 1m30s';
  let total = 0;
  let matched = '';
  for (const m of v.matchAll(DURATION_PART)) {
    matched += m[0];
    total += Number(m[1]) * DURATION_UNIT[m[2] as keyof typeof DURATION_UNIT];
  }
  return matched === v ? total : 'must be a duration such as 10s or 1m30s';
}

/** Dotted IPv4, each part 0-255: `10.0.0.2`. */
export function isIPv4(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  return m !== null && m.slice(1).every((octet) => Number(octet) <= 255);
}

/** The shape of an IPv6 address (hex groups, at most one `::`), without brackets: `::1`. */
export function isIPv6(s: string): boolean {
  return /^[0-9a-fA-F:.]+$/.test(s) && s.includes(':') && (s.match(/::/g) ?? []).length <= 1;
}

/** `80` or `8000-8010` → [low, high]. */
export function portRange(s: string): [number, number] | Problem {
  const m = /^(\d+)(?:-(\d+))?$/.exec(s);
  if (!m) return `'${s}' is not a port number`;
  const low = Number(m[1]);
  const high = m[2] === undefined ? low : Number(m[2]);
  for (const n of [low, high]) if (n < 1 || n > 65535) return `port ${n} is out of range (1-65535)`;
  if (high < low) return `range '${s}' is backwards`;
  return [low, high];
}

/** A short-syntax port, `[ip:][published:]target[/protocol]`, split into its parts. */
export interface PortSpec {
  hostIp?: string;
  /** Absent or empty: published on the same port as the target (as balena's supervisor does). */
  published?: [number, number];
  target: [number, number];
  protocol: 'tcp' | 'udp' | 'sctp';
}

/** Parses `[ip:][published:]target[/tcp|udp|sctp]`; IPv6 host addresses in brackets. */
export function parsePort(spec: string): PortSpec | Problem {
  let rest = spec;
  let protocol: PortSpec['protocol'] = 'tcp';
  const slash = rest.lastIndexOf('/');
  if (slash >= 0) {
    const p = rest.slice(slash + 1);
    if (p !== 'tcp' && p !== 'udp' && p !== 'sctp') return `unknown protocol '${p}'`;
    protocol = p;
    rest = rest.slice(0, slash);
  }
  let ip: string | undefined;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']:');
    if (close < 0) return 'an IPv6 address needs the form [address]:published:target';
    ip = rest.slice(1, close);
    rest = rest.slice(close + 2);
    if (!isIPv6(ip)) return `invalid IPv6 address '${ip}'`;
  }
  const parts = rest.split(':');
  if (ip === undefined && parts.length === 3) {
    ip = parts.shift() ?? '';
    if (!isIPv4(ip)) return `invalid host IP '${ip}'`;
  }
  if (parts.length > 2 || (ip !== undefined && parts.length !== 2)) return 'too many colons';
  const target = portRange(parts.pop() ?? '');
  if (typeof target === 'string') return target;
  const publishedText = parts.pop();
  if (publishedText === '' && ip === undefined) return 'empty published port';
  let published: [number, number] | undefined;
  if (publishedText !== undefined && publishedText !== '') {
    const range = portRange(publishedText);
    if (typeof range === 'string') return range;
    if (target[1] > target[0] && range[1] - range[0] !== target[1] - target[0]) return 'the published and target ranges differ in size';
    published = range;
  }
  return { ...(ip !== undefined ? { hostIp: ip } : {}), ...(published ? { published } : {}), target, protocol };
}

/** `port[/protocol]` or a range, as `expose` lists them. */
export function exposeProblem(spec: string): Problem | undefined {
  const m = /^([^/]+)(?:\/(tcp|udp|sctp))?$/.exec(spec);
  if (!m) return 'unknown protocol';
  const range = portRange(m[1] ?? '');
  return typeof range === 'string' ? range : undefined;
}

/** `host:ip` or `host=ip` (compose writes both) → the engine's `host:ip`, or what is wrong. */
export function extraHost(entry: string): string | { problem: Problem } {
  const sep = /[:=]/.exec(entry);
  const host = sep ? entry.slice(0, sep.index) : '';
  const ip = sep ? entry.slice(sep.index + 1) : '';
  if (!host || !/^[a-zA-Z0-9][a-zA-Z0-9.-]*$/.test(host)) return { problem: `'${entry}' is not host:ip` };
  if (!isIPv4(ip) && !isIPv6(ip) && ip !== 'host-gateway') return { problem: `'${ip}' in '${entry}' is not an IP address (or host-gateway)` };
  return `${host}:${ip}`;
}
