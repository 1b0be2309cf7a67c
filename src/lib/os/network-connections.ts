/**
 * NetworkManager connection files in the boot partition's system-connections/, which balenaOS
 * copies into NetworkManager's keyfile store. They are GLib key files (GLib's `GKeyFile`: groups,
 * `key=value` lines, values escaped with `\\`, `\s`, `\n`, `\t`, `\r`), and NetworkManager reads
 * the SSID and passphrase as its keyfile plugin documents (nm-settings-keyfile(5): an SSID is a
 * string with `;` escaped, or a list of its bytes). The file names are balena-cli's.
 */
import { SkiffError } from '../errors/errors.js';

export const CONNECTIONS_DIR = 'system-connections';
/** The file balena-cli writes (and looks for when it reconfigures) a WiFi connection in. */
export const WIFI_CONNECTION = `${CONNECTIONS_DIR}/resin-wifi`;
/** Templates balenaOS images ship for it, newest format first. */
export const WIFI_TEMPLATES = [WIFI_CONNECTION, `${CONNECTIONS_DIR}/resin-sample.ignore`, `${CONNECTIONS_DIR}/resin-sample`];

/** 802.11 allows SSIDs of 1 to 32 bytes. */
const MAX_SSID_BYTES = 32;

/** An SSID a WiFi network can have: 1 to 32 bytes (UTF-8), any of them. */
export function validateSsid(ssid: string): string {
  const bytes = Buffer.byteLength(ssid, 'utf8');
  if (bytes === 0 || bytes > MAX_SSID_BYTES) {
    throw new SkiffError('usage', `the WiFi SSID must be 1 to ${MAX_SSID_BYTES} bytes, not ${bytes}`, { hint: 'give the network name exactly as the access point broadcasts it' });
  }
  return ssid;
}

/**
 * A WPA passphrase NetworkManager and wpa_supplicant take: 8 to 63 bytes (UTF-8) without control
 * characters, or 64 hex digits (the key itself). A tab or newline could be escaped in the file,
 * but no access point was set up with one: it is a paste mistake, said before anything is written.
 */
export function validateWifiKey(key: string): string {
  if (/^[0-9a-f]{64}$/i.test(key)) return key;
  const bytes = Buffer.byteLength(key, 'utf8');
  if (bytes < 8 || bytes > 63) {
    throw new SkiffError('usage', `the WiFi key must be 8 to 63 characters (or 64 hex digits), not ${bytes}${bytes === key.length ? '' : ' bytes'}`, { hint: 'omit --config-wifi-key for an open network' });
  }
  // eslint-disable-next-line no-control-regex -- control characters are what is looked for
  if (/[\x00-\x1f\x7f]/.test(key)) {
    throw new SkiffError('usage', 'the WiFi key holds a control character (a tab or line break?)', { hint: 'type the passphrase without tabs or line breaks' });
  }
  return key;
}

/**
 * A string as a GLib key-file value: `\` doubled; line breaks, carriage returns and tabs escaped
 * (`\n`, `\r`, `\t`); leading spaces as `\s`, since GLib drops unescaped spaces after `=`.
 * `#`, `[`, `=` and `;` need nothing: a value never starts a line, and `;` only separates items
 * of lists, which these values are not.
 */
export function keyFileValue(value: string): string {
  let out = '';
  let leading = true;
  for (const ch of value) {
    if (ch !== ' ' && ch !== '\t') leading = false;
    if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === ' ' && leading) out += '\\s';
    else out += ch;
  }
  return out;
}

/**
 * The SSID as NetworkManager's own keyfile writer stores it: printable ASCII as a string with `;`
 * escaped (NetworkManager would otherwise take `1;2;` for a list of bytes), anything else (UTF-8
 * names, control characters) as the list of its bytes, `104;105;`, which it reads back exactly.
 */
export function ssidValue(ssid: string): string {
  const bytes = Buffer.from(ssid, 'utf8');
  if (bytes.every((b) => b >= 0x20 && b <= 0x7e)) return keyFileValue(ssid.replaceAll(';', '\\;'));
  return `${[...bytes].join(';')};`;
}

/**
 * A NetworkManager keyfile for a WiFi network. With a template (the image's own resin-wifi or
 * resin-sample), only the SSID and passphrase change (other lines are kept as they are written);
 * an open network has no wifi-security.
 */
export function wifiConnection(ssid: string, key: string | undefined, template?: string): string {
  const sections = parseKeyFile(template ?? defaultWifiConnection());
  if (!template) set(sections, 'connection', 'id', 'resin-wifi');
  set(sections, 'wifi', 'ssid', ssidValue(validateSsid(ssid)));
  if (key) {
    set(sections, 'wifi-security', 'key-mgmt', sections.get('wifi-security')?.get('key-mgmt') ?? 'wpa-psk');
    set(sections, 'wifi-security', 'psk', keyFileValue(validateWifiKey(key)));
  } else {
    sections.delete('wifi-security');
  }
  return `${[...sections].map(([name, values]) => [`[${name}]`, ...[...values].map(([k, v]) => `${k}=${v}`)].join('\n')).join('\n\n')}\n`;
}

function defaultWifiConnection(): string {
  return [
    '[connection]', 'id=resin-wifi', 'type=wifi', '',
    '[wifi]', 'hidden=true', 'mode=infrastructure', 'ssid=', '',
    '[wifi-security]', 'auth-alg=open', 'key-mgmt=wpa-psk', 'psk=', '',
    '[ipv4]', 'method=auto', '',
    '[ipv6]', 'addr-gen-mode=stable-privacy', 'method=auto', '',
  ].join('\n');
}

/**
 * A key file's groups and their lines, values kept escaped as written (they are written back
 * unchanged). Comments and blank lines are dropped; GLib allows spaces around `=`, and a value's
 * trailing spaces belong to it.
 */
function parseKeyFile(text: string): Map<string, Map<string, string>> {
  const sections = new Map<string, Map<string, string>>();
  let current: Map<string, string> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trimStart();
    if (line.trim() === '' || line.startsWith('#')) continue;
    const header = /^\[(.+)\]\s*$/.exec(line);
    if (header?.[1]) {
      current = sections.get(header[1]) ?? new Map<string, string>();
      sections.set(header[1], current);
      continue;
    }
    const eq = line.indexOf('=');
    if (current && eq > 0) current.set(line.slice(0, eq).trim(), line.slice(eq + 1).replace(/^ +/, ''));
  }
  return sections;
}

function set(sections: Map<string, Map<string, string>>, section: string, key: string, value: string): void {
  const values = sections.get(section) ?? new Map<string, string>();
  values.set(key, value);
  sections.set(section, values);
}
