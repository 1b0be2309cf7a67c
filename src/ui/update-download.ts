/** How `skiff device info` says the way a device's last update arrived (api/deltas.ts UpdateDownload). */
import type { UpdateDownload } from '../lib/api/deltas.js';
import { formatBytes } from './format.js';

/**
 * One line per service, e.g. `web by delta: 412 KB of 39.1 MB (95× less)`,
 * `api pulled: 39.1 MB (delta failed: corrupt: …)`, `db already on the device`.
 */
export function describeUpdateDownload(download: UpdateDownload): string[] {
  return Object.entries(download.services).map(([name, s]) => {
    if (s.method === 'present') return `${name} already on the device`;
    if (s.method === 'delta') {
      const ratio = s.downloadedBytes > 0 ? s.pullBytes / s.downloadedBytes : undefined;
      const less = ratio === undefined ? 'nothing downloaded' : ratio >= 1.05 ? `${ratio >= 10 ? Math.round(ratio) : ratio.toFixed(1)}× less` : 'no saving';
      return `${name} by delta: ${formatBytes(s.downloadedBytes)} of ${formatBytes(s.pullBytes)} (${less})`;
    }
    return `${name} pulled: ${formatBytes(s.downloadedBytes)}${s.fallback ? ` (${s.fallback})` : ''}`;
  });
}
