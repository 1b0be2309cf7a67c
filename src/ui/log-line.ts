/** One device log line for people: time, a coloured `[service]` (or `[system]`) prefix, the message. */
import type { ChalkInstance } from 'chalk';
import { printable, printableLog } from '../lib/cloud/printable.js';
import type { DeviceLogEntry } from '../lib/device/logs.js';
import { SERVICE_COLOURS as COLOURS } from './prefix.js';

/** `YYYY-MM-DD HH:MM:SS`, UTC: 19 characters. */
const TIME_WIDTH = 19;

/**
 * Formats entries as they come, best effort: an entry without a timestamp gets a blank time column,
 * one from an unnamed service the service id (or no prefix at all when there is neither).
 */
export function logLineFormatter(chalk: ChalkInstance): (e: DeviceLogEntry) => string {
  const colours = new Map<string, (typeof COLOURS)[number]>();
  return (entry) => {
    // What a device sends reaches a person's terminal: its control sequences are shown, not obeyed.
    const e = { ...entry, message: printableLog(entry.message), serviceName: printable(entry.serviceName) };
    const date = e.timestamp === undefined ? undefined : new Date(e.timestamp);
    const time = date && Number.isFinite(date.getTime()) ? chalk.dim(date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, '')) : ' '.repeat(TIME_WIDTH);
    if (e.isSystem) return `${time} ${chalk.bold('[system]')} ${e.isStdErr ? chalk.red(e.message) : e.message}`;
    const name = e.serviceName ?? (e.serviceId !== undefined ? `service ${e.serviceId}` : undefined);
    if (name === undefined) return `${time} ${e.message}`;
    if (!colours.has(name)) colours.set(name, COLOURS[colours.size % COLOURS.length] ?? 'cyan');
    return `${time} ${chalk[colours.get(name) ?? 'cyan'](`[${name}]`)} ${e.message}`;
  };
}
