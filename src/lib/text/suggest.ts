/** Did-you-mean for names users type: the closest candidate within a small edit distance. */

export function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0] ?? 0;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j] ?? 0;
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      prev[j] = Math.min(up + 1, (prev[j - 1] ?? 0) + 1, diag + cost);
      diag = up;
    }
  }
  return prev[b.length] ?? 0;
}

/**
 * The candidate closest to `input`, if it is close enough to be a likely typo: within
 * `maxDistance` edits (default: 2, or a third of the input's length for long names).
 */
export function closest(input: string, candidates: readonly string[], maxDistance?: number): string | undefined {
  const needle = input.toLowerCase();
  let best: string | undefined;
  let bestScore = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    const d = editDistance(needle, c.toLowerCase());
    if (d < bestScore) {
      best = c;
      bestScore = d;
    }
  }
  const limit = maxDistance ?? Math.max(2, Math.floor(needle.length / 3));
  return bestScore <= limit ? best : undefined;
}
