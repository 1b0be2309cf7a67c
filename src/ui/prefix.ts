/** Per-service line prefixes: `[web]    ` padded to the longest name, a stable colour per service. */
import type { ChalkInstance } from 'chalk';

export const SERVICE_COLOURS = ['cyan', 'magenta', 'green', 'yellow', 'blue', 'redBright', 'cyanBright', 'magentaBright'] as const;

export function servicePrefixer(services: string[], chalk: ChalkInstance): (service: string) => string {
  const width = Math.max(...services.map((s) => s.length)) + 3;
  const colourOf = new Map(services.map((s, i) => [s, SERVICE_COLOURS[i % SERVICE_COLOURS.length] ?? 'cyan']));
  return (service) => {
    const label = `[${service}]`.padEnd(width);
    const colour = colourOf.get(service) ?? 'cyan';
    return chalk[colour](label);
  };
}
