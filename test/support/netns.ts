/**
 * Network namespaces joined by veth pairs: a LAN of its own for mDNS tests, where multicast works
 * however the machine's own network is set up, and nothing else on the machine answers. Needs root
 * and iproute2 (scripts/setup-host.sh installs it).
 */
import { execFileSync } from 'node:child_process';
import process from 'node:process';
import { waitFor } from './wait.js';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Why namespaces cannot be made here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  try {
    ip('-V');
  } catch {
    return "the 'ip' command (iproute2) is missing; scripts/setup-host.sh installs it";
  }
  return undefined;
}

export class Netns {
  private constructor(readonly name: string) {}

  /** A new namespace with loopback up (one left over from an earlier run of the same name goes first). */
  static create(name: string): Netns {
    try {
      ip('netns', 'del', name);
    } catch {
      // none left over
    }
    ip('netns', 'add', name);
    ip('-n', name, 'link', 'set', 'lo', 'up');
    return new Netns(name);
  }

  /** The prefix that runs a command inside. */
  get wrap(): string[] {
    return ['ip', 'netns', 'exec', this.name];
  }

  delete(): void {
    try {
      ip('netns', 'del', this.name);
    } catch {
      // already gone
    }
  }
}

/**
 * A veth pair between two namespaces, with an address at each end, up. Returns once both ends are
 * operationally up (the kernel gets there up to a second later): until then Node does not list the
 * interface at all (libuv leaves out interfaces that are not running).
 */
export async function link(a: { ns: Netns; dev: string; cidr: string }, b: { ns: Netns; dev: string; cidr: string }): Promise<void> {
  ip('link', 'add', a.dev, 'netns', a.ns.name, 'type', 'veth', 'peer', 'name', b.dev, 'netns', b.ns.name);
  for (const end of [a, b]) {
    ip('-n', end.ns.name, 'addr', 'add', end.cidr, 'dev', end.dev);
    ip('-n', end.ns.name, 'link', 'set', end.dev, 'multicast', 'on', 'up');
  }
  for (const end of [a, b]) {
    await waitFor(() => ip('netns', 'exec', end.ns.name, 'cat', `/sys/class/net/${end.dev}/operstate`).trim() === 'up', `${end.dev} in ${end.ns.name} to have a carrier`, 10_000, 50);
  }
}
