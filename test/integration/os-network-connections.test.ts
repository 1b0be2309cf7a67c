/**
 * The WiFi connection file, read back by GLib's key-file parser (the one NetworkManager uses):
 * every SSID and passphrase someone can type comes back exactly as typed, and what
 * NetworkManager cannot hold is refused before anything is written.
 */
import assert from 'node:assert/strict';
import { SkiffError } from '../../src/lib/errors/errors.js';
import { wifiConnection } from '../../src/lib/os/network-connections.js';
import { readWithGlib } from '../support/keyfile.js';

const TEMPLATE = '[connection]\nid=resin-wifi\ntype=wifi\n\n[wifi]\nhidden=true\nmode=infrastructure\nssid=My_Wifi_Ssid\n\n[wifi-security]\nauth-alg=open\nkey-mgmt=wpa-psk\npsk=super_secret_wifi_password\n\n[ipv4]\nmethod=auto\n';

/** [ssid, psk] as typed. */
const NASTY: Array<[string, string]> = [
  ['C:\\new\\stuff', 'C:\\new\\stuff'],
  ['back\\', 'ends in a backslash\\'],
  ['\\\\double', '\\\\server\\share'],
  [' leading space', ' leading space'],
  ['   three leading', '   three leading'],
  ['trailing space ', 'trailing space  '],
  ['tab\tinside', 'tab inside ok'],
  ['line\nbreak', 'plain passphrase'],
  ['cr\rhere', 'plain passphrase'],
  ['#not a comment', '#not a comment'],
  ['[not a group]', '[not a group]'],
  ['semi;colon', 'semi;colon;list;'],
  ['1;2;3;', '1;2;3;4;5;6;'],
  ['a\\;b', 'a\\;b\\;c\\;d'],
  ['key=value', 'a=b=c=d=e'],
  ['ü café', 'pässwörd ü'],
  ['日本語のネットワーク', 'パスワード123'],
  ['emoji 📶', 'emoji 🔑 key'],
  ['"quoted"', "'single' \"double\""],
  ['\\s\\n\\t', '\\s\\n\\t\\r literal'],
  ['x'.repeat(32), 'y'.repeat(63)],
  ['plain', 'a'.repeat(64).replace(/a/g, 'f')],
];

describe('NetworkManager WiFi keyfile, read back by GLib (python3-gi)', () => {
  it('every SSID and passphrase reads back exactly as typed, with the built-in file and with a template', () => {
    const files = NASTY.flatMap(([ssid, psk]) => [wifiConnection(ssid, psk), wifiConnection(ssid, psk, TEMPLATE)]);
    const read = readWithGlib(files);
    NASTY.forEach(([ssid, psk], i) => {
      for (const [j, kind] of ['built-in', 'template'].entries()) {
        assert.deepEqual(read[i * 2 + j], { ssid, psk }, `${kind}: ${JSON.stringify({ ssid, psk })}\n${files[i * 2 + j]}`);
      }
    });
  });

  it('an open network has no passphrase, and the SSID still reads back', () => {
    const [open] = readWithGlib([wifiConnection(' open\\net ', undefined, TEMPLATE)]);
    assert.deepEqual(open, { ssid: ' open\\net ', psk: null });
  });

  it('what NetworkManager cannot hold is refused with one line, before any file is made', () => {
    const refused = (ssid: string, psk: string | undefined, pattern: RegExp) =>
      assert.throws(() => wifiConnection(ssid, psk), (e: unknown) => e instanceof SkiffError && e.code === 'usage' && pattern.test(e.toLine()), JSON.stringify({ ssid, psk }));
    refused('x'.repeat(33), undefined, /^the WiFi SSID must be 1 to 32 bytes, not 33\./);
    refused('ü'.repeat(17), undefined, /SSID must be 1 to 32 bytes, not 34/);
    refused('', undefined, /SSID must be 1 to 32 bytes, not 0/);
    refused('net', 'short', /^the WiFi key must be 8 to 63 characters \(or 64 hex digits\), not 5\./);
    refused('net', 'z'.repeat(64), /must be 8 to 63 characters \(or 64 hex digits\), not 64/);
    refused('net', 'ü'.repeat(32), /not 64 bytes/);
    refused('net', 'pass\nword1', /^the WiFi key holds a control character \(a tab or line break\?\)\./);
    refused('net', 'pass\tword1', /control character/);
  });
});
