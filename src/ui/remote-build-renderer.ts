/**
 * How a cloud build looks (`skiff push <fleet>`, `skiff build-logs`): the upload as one redrawn
 * bar with speed and ETA (a plain line every few seconds without a TTY), then the server's build
 * exactly as `skiff build` renders a local one (BuildRenderer), the image pushes as `skiff deploy`
 * shows them (PushProgressRenderer), and the release summary.
 */
import type { BuildEventEnvelope, RemoteBuildEvent } from '../lib/api/builds.js';
import type { Release } from '../lib/api/resources.js';
import type { BuildEvent } from '../lib/builder/release.js';
import type { PushEvent } from '../lib/cloud/remote-build.js';
import { BuildRenderer } from './build-renderer.js';
import { formatBytes, formatSeconds, table } from './format.js';
import type { Output } from './output.js';
import { describePush, PushProgressRenderer } from './push-progress.js';

const PLAIN_INTERVAL_MS = 5000;
const BAR_WIDTH = 30;

/** The build's own events: what BuildRenderer draws. */
const BUILD_KINDS = new Set<RemoteBuildEvent['kind']>(['plan', 'builder', 'service-start', 'log', 'service-done', 'service-failed', 'warning', 'info']);

function isBuildEvent(e: RemoteBuildEvent): e is BuildEvent {
  return BUILD_KINDS.has(e.kind);
}

export class RemoteBuildRenderer {
  private readonly builds: BuildRenderer;
  private readonly pushes: PushProgressRenderer;
  private uploadStarted = 0;
  private lastPlain = 0;
  private barDrawn = false;
  private readonly tty: boolean;

  constructor(private readonly out: Output, options: { showLogs: boolean }, private readonly stderr: NodeJS.WritableStream = process.stderr) {
    this.builds = new BuildRenderer(out, options);
    this.pushes = new PushProgressRenderer(out, stderr);
    this.tty = out.terminal.stderrIsTTY && !out.json;
  }

  /** One step of `skiff push <fleet>`. Returns a warning to record (the dirty tree, the project's own). */
  push(e: PushEvent): string | undefined {
    const { chalk } = this.out;
    switch (e.kind) {
      case 'warning':
        this.out.warn(e.message);
        return e.message;
      case 'git':
        if (!e.info.dirty) {
          this.out.info(chalk.dim(`Stamping the release with git commit ${e.info.commit.slice(0, 7)}${e.info.branch ? ` (${e.info.branch})` : ''}`));
          return undefined;
        } else {
          const text = `the project has changes not committed to git: the release is stamped with commit ${e.info.commit.slice(0, 7)} and marked dirty`;
          this.out.warn(text);
          return text;
        }
      case 'packed':
        this.out.info(`Uploading the project: ${e.files} file${e.files === 1 ? '' : 's'}, ${formatBytes(e.bytes)}`);
        this.uploadStarted = performance.now();
        // Without a TTY, a progress line every few seconds from here: a quick upload needs none.
        this.lastPlain = this.uploadStarted;
        return undefined;
      case 'upload-progress':
        this.upload(e.bytes, e.total);
        return undefined;
      case 'uploaded': {
        this.endBar();
        const seconds = (performance.now() - this.uploadStarted) / 1000;
        this.out.info(`Uploaded ${formatBytes(e.build.contextBytes)} in ${formatSeconds(seconds)}; build ${chalk.bold(e.build.id.slice(0, 7))} is on the server (skiff build-logs ${e.build.id.slice(0, 7)} shows its output)`);
        return undefined;
      }
      case 'build':
        this.event(e.envelope);
        return undefined;
      case 'reattach':
        this.out.info(chalk.yellow(`The build's output stream dropped (${e.reason}); re-attaching (attempt ${e.attempt})...`));
        return undefined;
      case 'cancelling':
        this.builds.stop();
        this.out.info(`Cancelling build ${e.build.slice(0, 7)} on the server (Ctrl-C again to quit at once; the build would go on)...`);
        return undefined;
    }
  }

  /** One event of the server's build log. */
  event(envelope: BuildEventEnvelope): void {
    const e = envelope.event;
    const { chalk } = this.out;
    // A live view's snapshot: the server never stores one, and its log lines say the same.
    if (e.kind === 'progress') return;
    if (isBuildEvent(e)) {
      this.builds.event(e);
      return;
    }
    switch (e.kind) {
      case 'queued':
        if (e.position === 0) return;
        this.out.info(chalk.yellow(`Queued behind build ${e.behind ? e.behind.slice(0, 7) : '(another)'}${e.position > 1 ? ` and ${e.position - 1} more` : ''} of this fleet; waiting...`));
        return;
      case 'started':
        this.out.info(chalk.dim(`Build started on ${e.engine}`));
        return;
      case 'push-start':
        this.builds.stop();
        this.pushes.start(e.service, e.image);
        return;
      case 'push-progress':
        this.pushes.progress(e.service, e.bytes, e.total);
        return;
      case 'push-done':
        this.pushes.done(e.service, e.digest);
        return;
      case 'release':
        this.pushes.stop();
        this.out.info(chalk.dim(`Release ${e.release.commit.slice(0, 7)} made`));
        return;
      case 'done':
        this.builds.stop();
        // Why it failed is the command's error line (push, build-logs --follow) or its last word (build-logs).
        if (e.status === 'failed') this.out.info(chalk.red('Build failed'));
        else if (e.status === 'cancelled') this.out.info(chalk.yellow(`Build cancelled${e.error ? `: ${e.error}` : ''}`));
        else this.out.info(chalk.green('Build succeeded'));
        return;
    }
  }

  /** The release as a table of services and images, and what devices do now. */
  summary(release: Release): void {
    this.stop();
    const { chalk } = this.out;
    this.out.result(table(['SERVICE', 'IMAGE', 'SIZE'], release.services.map((s) => [s.name, s.image ?? '-', s.size === null ? '-' : formatBytes(s.size)]), (h) => chalk.bold(h)));
    const commit = release.commit.slice(0, 7);
    this.out.info(chalk.green(release.isFinal
      ? `Release ${commit} created for fleet ${release.fleet}; devices tracking the fleet update now.`
      : `Release ${commit} created for fleet ${release.fleet} as a draft: 'skiff release finalize ${commit}' makes it what devices run.`));
  }

  stop(): void {
    this.endBar();
    this.builds.stop();
    this.pushes.stop();
  }

  private upload(bytes: number, total: number | undefined): void {
    if (this.out.json) return;
    const now = performance.now();
    const seconds = (now - this.uploadStarted) / 1000;
    const text = `Uploading ${describePush(bytes, total ?? 0, seconds)}`;
    if (this.tty) {
      const { chalk } = this.out;
      const fraction = total ? Math.min(1, bytes / total) : 0;
      const filled = Math.round(fraction * BAR_WIDTH);
      this.stderr.write(`\r\u001b[2K${chalk.cyan('█'.repeat(filled))}${chalk.dim('░'.repeat(BAR_WIDTH - filled))} ${text}`);
      this.barDrawn = true;
    } else if (now - this.lastPlain >= PLAIN_INTERVAL_MS) {
      this.lastPlain = now;
      this.out.info(text);
    }
  }

  private endBar(): void {
    if (this.barDrawn) this.stderr.write('\n');
    this.barDrawn = false;
  }
}
