/**
 * How a build looks: per-service prefixed log lines (coloured on a TTY), start/finish lines, a
 * spinner while services build with logs hidden, BuildKit's live view (build-live-view.ts), and
 * the summary table.
 */
import type { BuildEvent, ReleaseManifest } from '../lib/builder/release.js';
import type { BuilderKind, BuildStepTime } from '../lib/docker/image-build.js';
import { BuildLiveView, fit, type LiveClock } from './build-live-view.js';
import { formatBytes, formatSeconds, table } from './format.js';
import type { Output, Spinner } from './output.js';
import { SERVICE_COLOURS, servicePrefixer } from './prefix.js';

export interface BuildRendererOptions {
  /** Every build output line, prefixed per service (--logs; the default without --nologs). */
  showLogs: boolean;
  /**
   * An interactive stderr and neither --logs nor --nologs nor --json: a BuildKit build draws the
   * live view instead of its log lines; a classic build shows its lines as with `showLogs`.
   */
  live?: boolean;
  /** The live view's clock (tests pass a fake one). */
  clock?: LiveClock;
}

const BUILDER_NAMES = { buildkit: 'BuildKit', classic: 'the classic builder' } as const satisfies { [K in BuilderKind]: string };

/** A step slower than this is worth naming under the summary. */
const SLOW_STEP_SECONDS = 1;

/** The step that took longest without the cache; undefined when none took SLOW_STEP_SECONDS. */
export function slowestStep(steps: readonly BuildStepTime[]): BuildStepTime | undefined {
  let slowest: BuildStepTime | undefined;
  for (const s of steps) if (!s.cached && s.seconds >= SLOW_STEP_SECONDS && s.seconds > (slowest?.seconds ?? 0)) slowest = s;
  return slowest;
}

export class BuildRenderer {
  private prefix?: (service: string) => string;
  private readonly known: string[] = [];
  private readonly running = new Set<string>();
  private spinner?: Spinner;
  private done = 0;
  private builder?: BuilderKind;
  private view?: BuildLiveView;

  constructor(private readonly out: Output, private readonly options: BuildRendererOptions) {}

  /** Log lines print unless hidden (--nologs) or the live view shows the build instead. */
  private get logsShown(): boolean {
    return !this.view && (this.options.showLogs || this.options.live === true);
  }

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
      case 'builder':
        this.builder = e.builder;
        this.out.info(chalk.dim(e.message));
        if (this.options.live && e.builder === 'buildkit' && this.out.terminal.stderrIsTTY && !this.out.json) {
          this.view ??= new BuildLiveView(this.out, {
            nameWidth: () => Math.max(1, ...this.known.map((s) => s.length)),
            name: (service, text) => chalk[SERVICE_COLOURS[Math.max(0, this.known.indexOf(service)) % SERVICE_COLOURS.length] ?? 'cyan'](text),
            ...(this.options.clock ? { clock: this.options.clock } : {}),
          });
        }
        return;
      case 'progress':
        this.view?.progress(e.service, e.progress);
        return;
      case 'service-start':
        this.register(e.service);
        this.running.add(e.service);
        // The live view's block says it builds; a line would only push the view down.
        if (this.view) this.view.start(e.service);
        else this.status(`${this.tag(e.service)}${chalk.dim('building')}`);
        return;
      case 'log':
        if (this.logsShown) this.out.log(`${this.tag(e.service)}${e.line}`);
        return;
      case 'service-done': {
        this.view?.finish(e.service);
        this.running.delete(e.service);
        this.done++;
        const r = e.result;
        const cache = r.source === 'image' ? 'pulled/local image' : `${r.cachedSteps}/${r.steps} steps cached`;
        this.status(`${this.tag(e.service)}${chalk.green('done')} ${r.image} ${chalk.dim(`(${formatSeconds(r.buildSeconds)}, ${cache})`)}`);
        return;
      }
      case 'service-failed':
        this.view?.finish(e.service);
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
    for (const s of m.services) {
      const slow = slowestStep(s.stepTimes ?? []);
      if (slow) this.out.info(chalk.dim(fit(`${s.service}: slowest step ${formatSeconds(slow.seconds)}  ${slow.name}`, this.out.terminal.columns - 1)));
    }
    const kinds = [...new Set(m.services.flatMap((s) => (s.builder ? [s.builder] : [])))];
    if (kinds.length === 0 && this.builder && m.services.some((s) => s.source === 'build')) kinds.push(this.builder);
    const builder = kinds.length > 0 ? ` with ${kinds.map((k) => BUILDER_NAMES[k]).join(' and ')}` : '';
    this.out.info(chalk.green(`Built ${m.services.length} service${m.services.length === 1 ? '' : 's'} for ${m.deviceType} (${m.arch})${builder} in ${formatSeconds(m.buildSeconds)}.`));
  }

  /** Erases the live view and stops the spinner (the build ended, failed or was cancelled). */
  stop(): void {
    this.view?.stop();
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
    if (this.view || this.logsShown || !this.out.terminal.stderrIsTTY) return;
    const text = this.running.size > 0 ? `Building ${[...this.running].join(', ')} (${this.done} done)` : '';
    if (!text) return this.stop();
    if (this.spinner) this.spinner.update(text);
    else this.spinner = this.out.spinner(text);
  }
}
