/**
 * The bound on a replica's delta files (`--delta-cache-size`): which delta folders to remove so
 * the rest fits, oldest used first. Pure, tested by tables; the worker does the listing and removing.
 */
import { SkiffError } from '../../errors/errors.js';

/** Default `--delta-cache-size`: 10 GiB. */
export const DEFAULT_DELTA_CACHE_BYTES = 10 * 1024 ** 3;

/** One delta folder on this replica. */
export interface CachedDelta {
  id: string;
  /** Bytes of its files. */
  bytes: number;
  /** When a device last asked for it (else when it was made), ms since the epoch; 0 for a folder no row knows. */
  usedAt: number;
}

/**
 * The ids to remove, oldest used first (ties by id), until the rest is at most `bound` bytes.
 * `keep` (being downloaded now, or just made) is never removed, even when the rest stays over.
 */
export function planEviction(cached: readonly CachedDelta[], bound: number, keep: ReadonlySet<string>): string[] {
  let total = cached.reduce((n, c) => n + c.bytes, 0);
  const evict: string[] = [];
  const oldestFirst = [...cached].sort((a, b) => a.usedAt - b.usedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const entry of oldestFirst) {
    if (total <= bound) break;
    if (keep.has(entry.id)) continue;
    evict.push(entry.id);
    total -= entry.bytes;
  }
  return evict;
}

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/**
 * `10G`, `500M`, `1.5GiB`, `4096`: bytes (K, M, G, T are powers of 1024; a trailing `B` or `iB`
 * is allowed). Throws SkiffError('usage') naming `flag` for anything else.
 */
export function parseByteSize(text: string, flag = '--delta-cache-size'): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(text);
  const unit = UNITS[(match?.[2] ?? '').toUpperCase()];
  if (!match || unit === undefined) throw new SkiffError('usage', `${flag} '${text}' is not a size`, { hint: `e.g. ${flag} 10G (K, M, G, T: powers of 1024)` });
  return Math.floor(Number(match[1]) * unit);
}
