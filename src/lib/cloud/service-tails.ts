/**
 * The last lines of each service's build output, kept while a build's log streams by, for the
 * error that ends a failed build (the failing service's tail is its likely cause).
 */
export class ServiceTails {
  private readonly tails = new Map<string, string[]>();
  private readonly lastAt = new Map<string, number>();
  private count = 0;

  /** @param keep lines kept per service */
  constructor(private readonly keep = 20) {}

  /** Records one line of `service`'s output. */
  add(service: string, line: string): void {
    const tail = this.tails.get(service) ?? [];
    tail.push(line);
    if (tail.length > this.keep) tail.shift();
    this.tails.set(service, tail);
    this.lastAt.set(service, ++this.count);
  }

  /** The newest lines of `service` (oldest first); empty when it printed none. */
  tail(service: string): string[] {
    return [...(this.tails.get(service) ?? [])];
  }

  /** The service that printed last, if any: the best guess when a build failed without naming one. */
  lastService(): string | undefined {
    let best: string | undefined;
    let at = 0;
    for (const [service, n] of this.lastAt) if (n > at) [best, at] = [service, n];
    return best;
  }

  /** True when other services printed after `service`'s last line, so its tail is no longer the last thing shown. */
  buried(service: string): boolean {
    const at = this.lastAt.get(service);
    return at !== undefined && at < this.count;
  }
}
