/**
 * Talking to a device's API (our agent, or a balenaOS device's supervisor in local mode).
 */
import { isIPv6 } from 'node:net';
import type { DeviceInfoResponse, FailedResponse, Received, VersionResponse } from '../device-api/wire.js';
import { SkiffError } from '../errors/errors.js';

export const DEVICE_API_PORT = 48484;
/** Local mode needs supervisor 7.21.4 or later (balena-cli checks the same). */
export const MIN_LOCAL_MODE_VERSION = '7.21.4';

export interface DeviceAddress {
  host: string;
  port: number;
  url: string;
}

const ADDRESS_HINT = 'give an IPv4 address, a hostname or an IPv6 address in brackets, optionally with :port (e.g. 192.168.1.23, mydevice.local, [fe80::1]:48484)';

/** A uuid typed too short ('2280bd', '228') reads as a LAN address: say what a cloud device needs. */
const SHORT_UUID_HINT = "a cloud device's uuid needs at least 7 characters ('skiff device list' shows them)";
const looksLikeShortUuid = (host: string): boolean => /^[0-9a-f]{1,6}$/i.test(host.trim());

/** Why `host` is not an IPv4 address or an RFC 1123 hostname, or undefined when it is one. */
function hostProblem(host: string): string | undefined {
  if (host === '') return 'the host is empty';
  // All digits and dots: meant as an IPv4 address (a hostname's last label is never all digits).
  if (/^[\d.]+$/.test(host)) {
    const octets = host.split('.');
    if (octets.length !== 4 || !octets.every((o) => /^(0|[1-9]\d{0,2})$/.test(o) && Number(o) <= 255)) {
      return 'an IPv4 address is four numbers from 0 to 255 separated by dots';
    }
    return undefined;
  }
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  if (name.length > 253) return 'a hostname has at most 253 characters';
  for (const label of name.split('.')) {
    if (!/^[a-z\d]([a-z\d-]{0,61}[a-z\d])?$/i.test(label)) {
      return label === '' ? 'a hostname has no empty parts' : `'${label}' is not a hostname label (letters, digits and inner hyphens, at most 63)`;
    }
  }
  return undefined;
}

/**
 * `10.0.0.2`, `mydevice.local`, `127.0.0.1:48485`, `[::1]:48484`. Anything else is a usage error
 * saying why, before any connection is tried (so `10.0.0.0.1` is invalid, not unreachable).
 */
export function parseDeviceAddress(input: string): DeviceAddress {
  const text = input.trim();
  const invalid = (why: string) => new SkiffError('usage', `invalid device address '${input}': ${why}`, { hint: looksLikeShortUuid(input) ? `${SHORT_UUID_HINT}; or ${ADDRESS_HINT}` : ADDRESS_HINT });
  let host: string;
  let portText: string | undefined;
  const scheme = /^([a-z][a-z\d+.-]*):\/\//i.exec(text);
  if (scheme) throw invalid(`give the address without ${scheme[1]}://`);
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1] ?? '';
    portText = bracketed[2];
    if (!isIPv6(host)) throw invalid(`'${host}' in brackets is not an IPv6 address`);
  } else {
    const colons = text.split(':').length - 1;
    if (colons > 1) throw invalid(isIPv6(text) ? `an IPv6 address goes in brackets: [${text}]` : 'too many colons');
    [host = '', portText] = text.split(':');
    const problem = hostProblem(host);
    if (problem) throw invalid(problem);
  }
  let port = DEVICE_API_PORT;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
    if (!(port >= 1 && port <= 65535)) throw invalid(`the port '${portText}' is not a number from 1 to 65535`);
  }
  // A zone (fe80::1%eth0) is written %25 in a URL.
  return { host, port, url: `http://${host.includes(':') ? `[${host.replace('%', '%25')}]` : host}:${port}` };
}

export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.+-]/).map((x) => Number.parseInt(x, 10) || 0);
  const pb = b.split(/[.+-]/).map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

export interface DeviceInfo {
  version: string;
  deviceType: string;
  arch: string;
}

export class DeviceClient {
  constructor(readonly address: DeviceAddress, private readonly apiKey?: string) {}

  /** `host:port` as a person types it (`[fe80::1]:48484` for IPv6). */
  get where(): string {
    const host = this.address.host.includes(':') ? `[${this.address.host}]` : this.address.host;
    return `${host}:${this.address.port}`;
  }

  private headers(json = false): Record<string, string> {
    return { ...(this.apiKey ? { Authorization: `Bearer ${this.apiKey}` } : {}), ...(json ? { 'Content-Type': 'application/json' } : {}) };
  }

  /**
   * `timeoutMs` bounds the wait for the response's headers only: a log stream's body may last for
   * hours. (fetch's own signal would also cut the body off.)
   */
  async request(method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<Response> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    try {
      return await fetch(`${this.address.url}${path}`, {
        method,
        headers: this.headers(body !== undefined),
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: controller.signal,
      });
    } catch (err) {
      // undici puts the socket's error in `cause`; trying several addresses, an AggregateError of them.
      // fetch refuses some ports itself (the Fetch standard's "bad ports"): its cause says "bad port".
      const cause = (err as { cause?: { code?: string; message?: string; errors?: Array<{ code?: string }> } }).cause;
      const reason = controller.signal.aborted ? `no answer within ${timeoutMs / 1000} s` : cause?.code ?? cause?.errors?.[0]?.code ?? cause?.message ?? (err as Error).message;
      const hint = 'check the address, that the device is on, and that its agent (skiff agent) or supervisor runs';
      throw new SkiffError('deviceUnreachable', `cannot reach the device at ${this.where} (${reason})`, {
        hint: reason === 'ENOTFOUND' && looksLikeShortUuid(this.address.host) ? `${SHORT_UUID_HINT}; for a LAN device, ${hint}` : hint,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  async json<T>(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<T> {
    const res = await this.request(method, path, body, timeoutMs);
    const text = await res.text();
    if (res.status === 401) throw new SkiffError('deviceRefused', `the device refused the request: ${method} ${path} needs the device API key`, { hint: 'put the device in development mode, or pass its API key' });
    let data: unknown;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      throw new SkiffError('deviceRefused', `the device answered ${method} ${path} with something that is not JSON (HTTP ${res.status})`, { hint: 'check that the address is a skiff agent or a balenaOS device' });
    }
    if (!res.ok) {
      const message = (data as Received<FailedResponse> | undefined)?.message ?? `HTTP ${res.status}`;
      throw new SkiffError('deviceRefused', `the device refused ${method} ${path}: ${message}`);
    }
    return data as T;
  }

  /** ping, version and device info: what every device command checks first. */
  async check(): Promise<DeviceInfo> {
    const ping = await this.request('GET', '/ping', undefined, 5000);
    const pong = (await ping.text()).trim();
    if (!ping.ok || pong !== 'OK') {
      throw new SkiffError('deviceRefused', `${this.where} answered, but is not a skiff agent or balena supervisor`, { hint: 'check the address and port (the device API listens on 48484)' });
    }
    const version = (await this.json<Received<VersionResponse>>('GET', '/v2/version')).version ?? '0.0.0';
    if (compareVersions(version, MIN_LOCAL_MODE_VERSION) < 0) {
      throw new SkiffError('deviceRefused', `the device's supervisor ${version} is too old for local mode (${MIN_LOCAL_MODE_VERSION} or later is needed)`, { hint: 'update balenaOS on the device' });
    }
    const info = await this.json<Received<DeviceInfoResponse>>('GET', '/v2/local/device-info');
    if (!info.info?.deviceType || !info.info.arch) {
      throw new SkiffError('deviceRefused', 'the device did not say its device type; is local mode enabled?', { hint: 'enable local mode on the device (balena devices local-mode, or development mode)' });
    }
    return { version, deviceType: info.info.deviceType, arch: info.info.arch };
  }
}
