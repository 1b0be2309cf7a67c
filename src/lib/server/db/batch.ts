/**
 * Gathers the single-key lookups made in one turn of the event loop into one query. At a fleet's
 * poll rate on PostgreSQL a query per poll made the round trips the ceiling (each waits for a
 * pooled connection and for a backend on a busy machine); one `= ANY($1)` query for the polls that
 * arrived together costs about what one lookup does.
 */

interface Waiter<V> {
  resolve: (value: V | undefined) => void;
  reject: (err: unknown) => void;
}

/**
 * Returns a lookup of one key that is answered by `load` with every key asked for in the same turn
 * of the event loop (at most `maxBatch` keys per call). `load` returns the values it found by key;
 * a key it did not find is answered undefined. When `load` fails, every lookup of that batch fails
 * with its error.
 */
export function batchLookups<K, V>(load: (keys: K[]) => Promise<ReadonlyMap<K, V>>, maxBatch = 500): (key: K) => Promise<V | undefined> {
  let pending: Map<K, Waiter<V>[]> | undefined;
  const flush = (): void => {
    const batch = pending;
    pending = undefined;
    if (!batch) return;
    load([...batch.keys()]).then(
      (found) => {
        for (const [key, waiters] of batch) for (const w of waiters) w.resolve(found.get(key));
      },
      (err: unknown) => {
        for (const waiters of batch.values()) for (const w of waiters) w.reject(err);
      },
    );
  };
  return (key) => new Promise<V | undefined>((resolve, reject) => {
    if (!pending) {
      pending = new Map();
      // After this turn's I/O callbacks: the requests that arrived together share the query.
      setImmediate(flush);
    }
    const waiters = pending.get(key);
    if (waiters) waiters.push({ resolve, reject });
    else pending.set(key, [{ resolve, reject }]);
    if (pending.size >= maxBatch) flush();
  });
}
