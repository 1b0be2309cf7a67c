/**
 * Reads NetworkManager connection files back with GLib's own key-file parser (GLib.KeyFile through
 * python3-gi, Debian's python3, which scripts/setup-host.sh installs), not with a twin of our writer.
 * The SSID is then decoded as NetworkManager's keyfile reader documents it (nm-settings-keyfile(5)):
 * a value ending in `;` made of numbers is the list of the SSID's bytes, any other is the SSID
 * with `\;` standing for `;`.
 */
import { execFileSync } from 'node:child_process';

/** Debian's interpreter: python3-gi is installed for it, not for other pythons on PATH. */
const PYTHON = '/usr/bin/python3';

const READER = `
import json, re, sys
import gi
gi.require_version('GLib', '2.0')
from gi.repository import GLib
out = []
for text in json.load(sys.stdin):
    kf = GLib.KeyFile()
    try:
        kf.load_from_data(text, len(text.encode('utf-8')), GLib.KeyFileFlags.NONE)
        raw = kf.get_string('wifi', 'ssid')
        if re.fullmatch(r'(\\d+;)+', raw):
            ssid = bytes(kf.get_integer_list('wifi', 'ssid')).decode('utf-8')
        else:
            ssid = re.sub(r'\\\\;', ';', raw)
        psk = kf.get_string('wifi-security', 'psk') if kf.has_group('wifi-security') else None
        out.append({'ssid': ssid, 'psk': psk})
    except GLib.Error as err:
        out.append({'error': err.message})
json.dump(out, sys.stdout)
`;

export interface ReadBack {
  ssid?: string;
  psk?: string | null;
  /** GLib's complaint, when it could not read the file. */
  error?: string;
}

/** Each connection file's SSID and passphrase as GLib and NetworkManager's rules read them (one python run for all). */
export function readWithGlib(files: string[]): ReadBack[] {
  return JSON.parse(execFileSync(PYTHON, ['-c', READER], { input: JSON.stringify(files), encoding: 'utf8' })) as ReadBack[];
}
