/** One device log line for people: time, a coloured `[service]` (or `[system]`) prefix, the message. */
import type { ChalkInstance } from 'chalk';
import type { DeviceLogEntry } from '../lib/device/logs.js';
import { SERVICE_COLOURS as COLOURS } from './prefix.js';

export function logLineFormatter(chalk: ChalkInstance): (e: DeviceLogEntry) => string {
  const colours = new Map<string, (typeof COLOURS)[number]>();
  return (e) => {
    const time = chalk.dim(new Date(e.timestamp).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ''));
    if (e.isSystem) return `${time} ${chalk.bold('[system]')} ${e.isStdErr ? chalk.red(e.message) : e.message}`;
    const name = e.serviceName ?? '?';
    if (!colours.has(name)) colours.set(name, COLOURS[colours.size % COLOURS.length] ?? 'cyan');
    return `${time} ${chalk[colours.get(name) ?? 'cyan'](`[${name}]`)} ${e.message}`;
  };
}
