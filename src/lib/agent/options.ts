/**
 * The agent's own flags, declared once: the oclif command builds its flags from this table, and
 * the agent's direct start (which skips oclif to keep the device's memory down) parses argv with it.
 */
import { parseArgs } from 'node:util';

interface OptionBase {
  description: string;
  env?: string;
}
export type AgentOptionSpec =
  | (OptionBase & { kind: 'string'; default?: string })
  | (OptionBase & { kind: 'integer'; default?: number; min: number; max?: number })
  | (OptionBase & { kind: 'boolean'; default?: boolean; allowNo: true });

export const AGENT_OPTIONS = {
  'data-dir': { kind: 'string', description: 'Folder for config.json and the agent database.', env: 'SKIFF_AGENT_DATA', default: '/var/lib/skiff-agent' },
  config: { kind: 'string', description: 'config.json to use (default: <data-dir>/config.json).' },
  'listen-address': { kind: 'string', description: 'Address for the device API (and the engine API in development mode).', default: '0.0.0.0' },
  'listen-port': { kind: 'integer', description: 'Port for the device API (default: config.json listenPort, else 48484).', min: 1, max: 65535 },
  'engine-port': { kind: 'integer', description: 'Port for the engine API in development mode; 0 to not serve it.', default: 2375, min: 0, max: 65535 },
  'device-type': { kind: 'string', description: "Device type to report (default: config.json deviceType, else from the engine's architecture)." },
  'development-mode': { kind: 'boolean', description: 'Open local-mode API and engine API (default for a new device).', allowNo: true },
  'rollback-grace': { kind: 'integer', description: 'Seconds a new release must stay up before it counts as applied.', default: 10, min: 0 },
  advertise: { kind: 'boolean', description: "Answer mDNS queries so 'skiff scan' finds this device on the LAN.", allowNo: true, default: true },
  'reboot-command': { kind: 'string', description: "Shell command that reboots the host, for 'skiff device reboot' (e.g. 'systemctl reboot'); without it the device refuses to reboot.", env: 'SKIFF_AGENT_REBOOT_COMMAND' },
  'host-shell': { kind: 'boolean', description: "Allow 'skiff device ssh --host' (a shell or command on the device host, as root) through the server (default: in development mode).", allowNo: true },
  'shutdown-command': { kind: 'string', description: "Shell command that powers the host off, for 'skiff device shutdown' (e.g. 'systemctl poweroff'); without it the device refuses.", env: 'SKIFF_AGENT_SHUTDOWN_COMMAND' },
} satisfies Record<string, AgentOptionSpec>;

export interface AgentFlagValues {
  'data-dir': string;
  config?: string;
  'listen-address': string;
  'listen-port'?: number;
  'engine-port': number;
  'device-type'?: string;
  'development-mode'?: boolean;
  'rollback-grace': number;
  advertise: boolean;
  'reboot-command'?: string;
  'shutdown-command'?: string;
  'host-shell'?: boolean;
}

/**
 * Parses `skiff agent` argv with the agent's own flags only. Anything else (help, --json, the
 * engine flags, a bad value) gives undefined: the caller hands the run to oclif, which prints the
 * usual help or error.
 */
export function parseAgentArgv(argv: string[], env: NodeJS.ProcessEnv = process.env): AgentFlagValues | undefined {
  const options: Record<string, { type: 'string' | 'boolean' }> = {};
  for (const [name, spec] of Object.entries(AGENT_OPTIONS) as Array<[string, AgentOptionSpec]>) {
    options[name] = { type: spec.kind === 'boolean' ? 'boolean' : 'string' };
    if (spec.kind === 'boolean') options[`no-${name}`] = { type: 'boolean' };
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch {
    return undefined;
  }
  const out: Record<string, string | number | boolean | undefined> = {};
  for (const [name, spec] of Object.entries(AGENT_OPTIONS) as Array<[string, AgentOptionSpec]>) {
    if (spec.kind === 'boolean') {
      if (values[name] && values[`no-${name}`]) return undefined;
      out[name] = values[name] ? true : values[`no-${name}`] ? false : spec.default;
      continue;
    }
    const raw = (values[name] as string | undefined) ?? (spec.env ? env[spec.env] : undefined);
    if (spec.kind === 'string') {
      out[name] = raw ?? spec.default;
      continue;
    }
    if (raw === undefined) {
      out[name] = spec.default;
      continue;
    }
    if (!/^\d+$/.test(raw)) return undefined;
    const n = Number(raw);
    if (n < spec.min || (spec.max !== undefined && n > spec.max)) return undefined;
    out[name] = n;
  }
  return out as unknown as AgentFlagValues;
}
