/**
 * Live updates while `push` streams logs: watch the project, and for each saved change either sync
 * the file into the running container and restart the service, or rebuild and replace that service
 * alone (see live-plan.ts for which). A change to the compose file or balena.yml re-pushes the
 * whole project. A failed build or release is reported and the device keeps what it runs.
 */
import { createHash } from 'node:crypto';
import { watch, type FSWatcher, readFileSync, statSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { durationSeconds } from '../service/values.js';
import type { Received, StateStatusResponse } from '../device-api/wire.js';
import { SkiffError } from '../errors/errors.js';
import { firstLine } from '../text/lines.js';
import { planServiceBuild } from '../builder/release.js';
import { loadBuildSettings } from '../project/balena-yml.js';
import { loadIgnoreRules, type IgnoreRules } from '../project/build-context.js';
import { loadProject } from '../project/project.js';
import type { ServiceSpec } from '../project/types.js';
import { copyMap, liveAction, type CopyMap } from './live-plan.js';
import { deploy, parseEnvFlags, type PushSession } from './push.js';

export type LiveEvent =
  | { kind: 'live'; message: string }
  | { kind: 'live-error'; message: string }
  /** A change was handled; `seconds` from the first saved change to done. */
  | { kind: 'live-done'; action: 'sync' | 'rebuild' | 'redeploy'; services: string[]; seconds: number };

export interface LiveOptions {
  onEvent: (e: LiveEvent) => void;
  signal: AbortSignal;
  /** Quiet time after the last change before acting (editors write in bursts). */
  debounceMs?: number;
}

interface ServiceWatch {
  spec: ServiceSpec;
  context: string;
  rules: IgnoreRules;
  map: CopyMap;
}

interface FileStamp {
  size: number;
  mtimeMs: number;
  /** Content hash of small files, so a save that changes nothing does nothing. */
  hash?: string;
}

const HASHED_MAX_BYTES = 1024 * 1024;
/** Hashing stops once this much has been read, so a huge project does not stall the start. */
const HASHED_TOTAL_BYTES = 64 * 1024 * 1024;

/** Files at the project root whose change means a new project model: push everything again. */
const PROJECT_FILES = ['docker-compose.yml', 'docker-compose.yaml', 'compose.yaml', 'compose.yml', 'balena.yml', 'balena.yaml', 'skiff.yml', 'skiff.yaml'];

/**
 * How long a live restart lets the service stop before it is killed, unless it set
 * stop_grace_period: none. A process running as PID 1 ignores SIGTERM unless it handles it (node,
 * python and busybox servers don't), so waiting would only add the timeout to every save.
 */
const LIVE_STOP_SECONDS = 0;

/** Watches until `signal` aborts. Resolves when the watcher is closed. */
export async function watchAndUpdate(session: PushSession, options: LiveOptions): Promise<void> {
  const live = new LiveUpdater(session, options);
  try {
    await live.start();
  } catch (err) {
    options.onEvent({ kind: 'live-error', message: `Live updates are off: ${message(err)}` });
    return;
  }
  await new Promise<void>((resolve) => {
    if (options.signal.aborted) resolve();
    options.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  live.close();
}

class LiveUpdater {
  private watcher?: FSWatcher;
  private services: ServiceWatch[] = [];
  private rootRules?: IgnoreRules;
  private readonly stamps = new Map<string, FileStamp>();
  private readonly pending = new Set<string>();
  private firstChangeAt = 0;
  private timer?: NodeJS.Timeout;
  private running = false;
  private hashedBytes = 0;

  constructor(private readonly session: PushSession, private readonly options: LiveOptions) {}

  async start(): Promise<void> {
    await this.analyse();
    this.snapshot(this.session.project.dir);
    this.watcher = watch(this.session.project.dir, { recursive: true }, (_event, name) => {
      if (name) this.changed(name.toString());
    });
    this.watcher.on('error', (err) => this.options.onEvent({ kind: 'live-error', message: `Live updates stopped: cannot watch the project (${err.message})` }));
    const syncable = this.services.filter((s) => s.map.copies.some((c) => c.syncable)).map((s) => s.spec.name);
    this.options.onEvent({ kind: 'live', message: `Watching ${path.relative(process.cwd(), this.session.project.dir) || '.'} for changes${syncable.length > 0 ? ` (synced live: ${syncable.join(', ')}; other changes rebuild their service)` : ' (changes rebuild their service)'}` });
  }

  close(): void {
    this.watcher?.close();
    clearTimeout(this.timer);
  }

  /** Which files each service's image takes, from its Dockerfile. */
  private async analyse(): Promise<void> {
    const { project, target } = this.session;
    const settings = await loadBuildSettings(project.dir);
    this.rootRules = await loadIgnoreRules(project.dir);
    this.services = [];
    for (const spec of project.services) {
      if (!spec.build) continue;
      // The build's own decisions (Dockerfile, template names, args, .dockerignore), so live updates follow what push built.
      const plan = planServiceBuild(project, spec, spec.build, target, settings, { multiDockerignore: this.session.options.multiDockerignore, enginePlatform: target.platform });
      const rules = plan.ignoreDir === project.dir ? this.rootRules : await loadIgnoreRules(plan.ignoreDir);
      this.services.push({ spec, context: spec.build.context, rules, map: copyMap(plan.dockerfile.contents, plan.buildArgs) });
    }
  }

  private snapshot(dir: string): void {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const abs = path.join(dir, e.name);
      if (e.name === '.git' || this.rootRules?.ignores(abs)) continue;
      if (e.isDirectory()) this.snapshot(abs);
      else if (e.isFile()) this.stamp(abs, true);
    }
  }

  private stamp(abs: string, initial = false): FileStamp | undefined {
    try {
      const st = statSync(abs);
      if (!st.isFile()) return undefined;
      const stamp: FileStamp = { size: st.size, mtimeMs: st.mtimeMs };
      if (st.size <= HASHED_MAX_BYTES && (!initial || this.hashedBytes + st.size <= HASHED_TOTAL_BYTES)) {
        if (initial) this.hashedBytes += st.size;
        stamp.hash = createHash('sha1').update(readFileSync(abs)).digest('hex');
      }
      this.stamps.set(abs, stamp);
      return stamp;
    } catch {
      return undefined;
    }
  }

  private changed(rel: string): void {
    if (rel === '.git' || rel.startsWith(`.git${path.sep}`)) return;
    if (this.pending.size === 0) this.firstChangeAt = Date.now();
    this.pending.add(path.join(this.session.project.dir, rel));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.flush(), this.options.debounceMs ?? 75);
  }

  private async flush(): Promise<void> {
    if (this.running || this.options.signal.aborted) return;
    this.running = true;
    try {
      while (this.pending.size > 0 && !this.options.signal.aborted) {
        const started = this.firstChangeAt;
        const paths = [...this.pending];
        this.pending.clear();
        await this.handle(paths, started);
      }
    } finally {
      this.running = false;
    }
  }

  /** Real changes only: a file whose size or time changed, or a file we knew that is gone (not editors' temp files). */
  private realChanges(paths: string[]): Array<{ abs: string; deleted: boolean }> {
    const out: Array<{ abs: string; deleted: boolean }> = [];
    for (const abs of paths) {
      const before = this.stamps.get(abs);
      const now = this.stamp(abs);
      if (!now) {
        let isDir = false;
        try {
          isDir = statSync(abs).isDirectory();
        } catch {
          // gone
        }
        if (before && !isDir) {
          this.stamps.delete(abs);
          out.push({ abs, deleted: true });
        }
      } else if (!before || before.size !== now.size || (before.mtimeMs !== now.mtimeMs && (before.hash === undefined || before.hash !== now.hash))) {
        out.push({ abs, deleted: false });
      }
    }
    return out;
  }

  private async handle(paths: string[], started: number): Promise<void> {
    const changes = this.realChanges(paths);
    if (changes.length === 0) return;
    const { project } = this.session;
    const show = (abs: string) => path.relative(project.dir, abs);
    if (changes.some((c) => path.dirname(c.abs) === project.dir && PROJECT_FILES.includes(path.basename(c.abs)))) {
      await this.redeploy(changes.map((c) => show(c.abs)), started);
      return;
    }
    const rebuild = new Map<string, string>();
    const sync = new Map<string, Array<{ abs: string; dest: string; destMayBeDir: boolean }>>();
    for (const { abs, deleted } of changes) {
      for (const s of this.services) {
        const rel = path.relative(s.context, abs);
        if (rel.startsWith('..') || path.isAbsolute(rel)) continue;
        const posixRel = rel.split(path.sep).join('/');
        if (path.basename(abs) === '.dockerignore' || path.basename(abs).startsWith('Dockerfile')) {
          rebuild.set(s.spec.name, `${show(abs)} changed`);
          continue;
        }
        if (s.rules.ignores(abs)) continue;
        const action = liveAction(s.map, posixRel, deleted);
        if (action.kind === 'rebuild') rebuild.set(s.spec.name, action.reason);
        else if (action.kind === 'sync') {
          const list = sync.get(s.spec.name) ?? [];
          for (const t of action.targets) list.push({ abs, ...t });
          sync.set(s.spec.name, list);
        }
      }
      // The root .dockerignore decides every service's context unless each has its own.
      if (abs === path.join(project.dir, '.dockerignore') && !this.session.options.multiDockerignore) {
        for (const s of this.services) rebuild.set(s.spec.name, '.dockerignore changed');
      }
    }
    for (const name of rebuild.keys()) sync.delete(name);
    if (rebuild.size > 0) await this.rebuild(rebuild, started);
    for (const [service, files] of sync) await this.sync(service, files, started);
  }

  private async sync(service: string, files: Array<{ abs: string; dest: string; destMayBeDir: boolean }>, started: number): Promise<void> {
    const { project, client, engine } = this.session;
    try {
      const status = await client.json<Received<StateStatusResponse>>('GET', '/v2/state/status');
      const containerId = status.containers?.find((c) => c.serviceName === service)?.containerId;
      if (!containerId) throw new SkiffError('releaseFailed', `service '${service}' has no container on the device to sync into`);
      const container = engine.docker.getContainer(containerId);
      const entries: Array<{ abs: string; dest: string }> = [];
      for (const f of files) {
        let dest = f.dest;
        if (f.destMayBeDir && (await isDirectoryIn(container, dest))) dest = path.posix.join(dest, path.basename(f.abs));
        entries.push({ abs: f.abs, dest });
      }
      const tar = await import('tar-fs');
      const byAbs = new Map(entries.map((e) => [e.abs, e.dest]));
      const archive = tar.pack(project.dir, {
        entries: entries.map((e) => path.relative(project.dir, e.abs)),
        map: (header) => ({ ...header, name: (byAbs.get(path.join(project.dir, header.name)) ?? header.name).replace(/^\/+/, '') }),
      });
      await container.putArchive(archive, { path: '/' });
      const spec = project.services.find((s) => s.name === service);
      const grace = spec?.config.stop_grace_period === undefined ? LIVE_STOP_SECONDS : durationSeconds(spec.config.stop_grace_period);
      await container.restart({ t: Math.ceil(typeof grace === 'number' ? grace : LIVE_STOP_SECONDS) });
      const list = entries.map((e) => `${path.relative(project.dir, e.abs)} → ${e.dest}`).join(', ');
      this.options.onEvent({ kind: 'live', message: `${service}: synced ${list}; restarted the service` });
      this.options.onEvent({ kind: 'live-done', action: 'sync', services: [service], seconds: (Date.now() - started) / 1000 });
    } catch (err) {
      this.options.onEvent({ kind: 'live-error', message: `${service}: live sync failed: ${message(err)} The service runs what it ran.` });
    }
  }

  private async rebuild(services: Map<string, string>, started: number): Promise<void> {
    const names = [...services.keys()];
    for (const [name, reason] of services) this.options.onEvent({ kind: 'live', message: `${name}: ${reason}; rebuilding it` });
    try {
      await deploy(this.session, names, this.options.signal);
      await this.analyse();
      this.options.onEvent({ kind: 'live', message: `${names.join(', ')}: rebuilt and replaced (release ${this.session.commit ?? ''})` });
      this.options.onEvent({ kind: 'live-done', action: 'rebuild', services: names, seconds: (Date.now() - started) / 1000 });
    } catch (err) {
      this.options.onEvent({ kind: 'live-error', message: `${names.join(', ')}: ${message(err)} The device keeps its current release.` });
    }
  }

  private async redeploy(files: string[], started: number): Promise<void> {
    this.options.onEvent({ kind: 'live', message: `${files.join(', ')} changed; pushing the whole project again` });
    const { options } = this.session;
    try {
      const project = await loadProject(options.source, { projectName: options.projectName?.toLowerCase(), noParentCheck: options.noParentCheck });
      this.session.env = parseEnvFlags(options.env ?? [], project.services.map((s) => s.name));
      this.session.project = project;
      this.session.release = undefined;
      await deploy(this.session, undefined, this.options.signal);
      await this.analyse();
      this.options.onEvent({ kind: 'live', message: `Release ${this.session.commit ?? ''} runs` });
      this.options.onEvent({ kind: 'live-done', action: 'redeploy', services: project.services.map((s) => s.name), seconds: (Date.now() - started) / 1000 });
    } catch (err) {
      this.options.onEvent({ kind: 'live-error', message: `${message(err)} The device keeps its current release.` });
    }
  }
}

/** One sentence (or two, with the hint) ending in a full stop. */
function message(err: unknown): string {
  return err instanceof SkiffError ? err.toLine() : firstLine((err as Error).message);
}

/** Whether `dest` is a folder in the container (the engine's archive stat). */
async function isDirectoryIn(container: { infoArchive(opts: { path: string }): Promise<unknown> }, dest: string): Promise<boolean> {
  try {
    const res = (await container.infoArchive({ path: dest })) as { headers?: Record<string, string | undefined>; resume?: () => void };
    res.resume?.(); // a HEAD answer: drain it, or its socket stays open and keeps the CLI alive
    const stat = res.headers?.['x-docker-container-path-stat'];
    if (!stat) return false;
    const parsed = JSON.parse(Buffer.from(stat, 'base64').toString('utf8')) as { mode?: number };
    // Go's os.ModeDir is the top bit of a uint32.
    return ((parsed.mode ?? 0) & 0x80000000) !== 0;
  } catch {
    return false;
  }
}
