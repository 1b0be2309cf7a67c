/**
 * How a build looks: per-service prefixed log lines (coloured on a TTY), start/finish lines, a
 * spinner while services build with logs hidden, and the summary table.
 */
import type { BuildEvent, ReleaseManifest } from '../lib/builder/release.js';
import { formatBytes, formatSeconds, table } from './format.js';
import type { Output, Spinner } from './output.js';
import { servicePrefixer } from './prefix.js';

export class BuildRenderer {
  private prefix?: (service: string) => string;
  private readonly known: string[] = [];
  private readonly running = new Set<string>();
  private spinner?: Spinner;
  private done = 0;

  constructor(private readonly out: Output, private readonly options: { showLogs: boolean }) {}

  event(e: BuildEvent): void {
    const { chalk } = this.out;
    switch (e.kind) {
      case 'plan':
        this.prefix = servicePrefixer(e.services, chalk);
        this.known.push(...e.services);
        this.out.info(`Building ${e.services.length} service${e.services.length === 1 ? '' : 's'} (${e.services.join(', ')}) for ${chalk.bold(e.deviceType)} (${e.arch}, ${e.platform}) on ${e.engine}`);
        return;
      case 'warning':
        this.out.warn(e.message);
        return;
      case 'info':
        this.out.info(chalk.dim(e.message));
        return;
      case 'service-start':
        this.register(e.service);
        this.running.add(e.service);
        this.status(`${this.tag(e.service)}${chalk.dim('building')}`);
        return;
      case 'log':
        if (this.options.showLogs) this.out.log(`${this.tag(e.service)}${e.line}`);
        return;
      case 'service-done': {
        this.running.delete(e.service);
        this.done++;
        const r = e.result;
        const cache = r.source === 'image' ? 'pulled/local image' : `${r.cachedSteps}/${r.steps} steps cached`;
        this.status(`${this.tag(e.service)}${chalk.green('done')} ${r.image} ${chalk.dim(`(${formatSeconds(r.buildSeconds)}, ${cache})`)}`);
        return;
      }
      case 'service-failed':
        this.running.delete(e.service);
        this.status(`${this.tag(e.service)}${chalk.red('failed')}`);
        return;
    }
  }

  cancelling(): void {
    this.out.info('Cancelling the builds (Ctrl-C again to quit at once)...');
  }

  summary(m: ReleaseManifest): void {
    this.stop();
    const { chalk } = this.out;
    const rows = m.services.map((s) => [
      s.service,
      s.image,
      formatBytes(s.size),
      s.architecture + (s.variant ? `/${s.variant}` : ''),
      formatSeconds(s.buildSeconds),
      s.source === 'image' ? '-' : `${s.cachedSteps}/${s.steps}`,
    ]);
    this.out.result(table(['SERVICE', 'IMAGE', 'SIZE', 'ARCH', 'TIME', 'CACHED'], rows, (h) => chalk.bold(h)));
    this.out.info(chalk.green(`Built ${m.services.length} service${m.services.length === 1 ? '' : 's'} for ${m.deviceType} (${m.arch}) in ${formatSeconds(m.buildSeconds)}.`));
  }

  stop(): void {
    this.spinner?.stop();
    this.spinner = undefined;
  }

  private register(service: string): void {
    if (!this.known.includes(service)) {
      this.known.push(service);
      this.prefix = undefined;
    }
  }

  private tag(service: string): string {
    this.register(service);
    this.prefix ??= servicePrefixer(this.known.length > 0 ? this.known : [service], this.out.chalk);
    return this.prefix(service);
  }

  /** With logs shown, status is a line; with logs hidden on a TTY, a spinner counts what is left. */
  private status(line: string): void {
    this.out.info(line);
    if (this.options.showLogs || !this.out.terminal.stderrIsTTY) return;
    const text = this.running.size > 0 ? `Building ${[...this.running].join(', ')} (${this.done} done)` : '';
    if (!text) return this.stop();
    if (this.spinner) this.spinner.update(text);
    else this.spinner = this.out.spinner(text);
  }
}
