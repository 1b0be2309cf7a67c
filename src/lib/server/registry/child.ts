/**
 * The distribution process: started on loopback with our config, watched, restarted with capped
 * backoff when it dies, stopped with SIGTERM then SIGKILL. Its output goes to the log line by line,
 * prefixed `[registry]`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { SkiffError } from '../../errors/errors.js';

/** Debian's package installs distribution 2.8 under this name. */
export const REGISTRY_BINARY = 'docker-registry';

/** Backoff after an exit: 500 ms doubling to 30 s; a child that ran a minute starts the count again. */
const BACKOFF_FIRST_MS = 500;
const BACKOFF_CAP_MS = 30_000;
const STABLE_MS = 60_000;
/** How long a (re)started child may take to answer `/v2/`. */
const READY_TIMEOUT_MS = 20_000;
/** SIGTERM, then SIGKILL after this long. */
const STOP_GRACE_MS = 10_000;
/** A child that stops answering (hung, not dead) is killed, and so restarted, after 3 missed checks 10 s apart. */
const HEALTH = { intervalMs: 10_000, timeoutMs: 5_000, misses: 3 };

/** A free TCP port on loopback (the OS picks it; the child binds it a moment later). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * True once distribution answers `GET /v2/` (401 under token auth is an answer). Its API version
 * header tells it from another process that took the port between freePort() and the spawn.
 */
function answers(url: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(`${url}/v2/`, { timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      resolve(res.headers['docker-distribution-api-version'] !== undefined);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/** The child's environment: REGISTRY_HTTP_* or REGISTRY_AUTH_* would override the sections we own (other REGISTRY_* variables, e.g. S3 secrets, pass). */
function childEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^REGISTRY_(HTTP|AUTH)(_|$)/.test(k)));
}

/** True while a process runs (a zombie counts as ended). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * A child left running by a server that was killed (SIGKILL gives it no chance to stop it) still
 * holds its port and storage: end it before starting ours. Each server process keeps its child's
 * pid in `<runDir>/registry-<server pid>.child`, so replicas sharing a data dir only end children
 * whose server is gone, and only a process whose command line names that server's config.
 */
async function endStaleChildren(runDir: string): Promise<void> {
  const servers = new Set(readdirSync(runDir).flatMap((name) => /^registry-(\d+)\.(?:child|yml)$/.exec(name)?.[1] ?? []));
  for (const server of servers) {
    if (Number(server) === process.pid || running(Number(server))) continue;
    const pidFile = path.join(runDir, `registry-${server}.child`);
    const configFile = path.join(runDir, `registry-${server}.yml`);
    let childPid = 0;
    let cmdline = '';
    try {
      childPid = Number(readFileSync(pidFile, 'utf8').trim());
      cmdline = Number.isInteger(childPid) && childPid > 1 ? readFileSync(`/proc/${childPid}/cmdline`, 'utf8') : '';
    } catch {
      // No pid file (killed before its child started), or the child is already gone.
    }
    if (cmdline.includes(REGISTRY_BINARY) && cmdline.includes(configFile)) {
      process.kill(childPid, 'SIGKILL');
      const deadline = Date.now() + 5000;
      while (running(childPid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    }
    rmSync(pidFile, { force: true });
    rmSync(configFile, { force: true });
  }
}

/** What a failed start said: Go's panic or fatal line rather than the goroutine stack after it. */
export function failureLines(lines: readonly string[]): string[] {
  const said = lines.filter((l) => /^panic: |level=(?:fatal|panic|error)\b/.test(l));
  return (said.length > 0 ? said : lines).slice(-10);
}

/**
 * A line distribution logs at level=error for a routine answer: a 404 to a HEAD for a blob or
 * manifest, which is how every push asks whether a layer is already there. Logged, one push filled
 * the server's log with "error" lines about nothing.
 */
export function isRoutineRegistryLine(line: string): boolean {
  return /\berr\.code="(?:blob|manifest) unknown"/.test(line) && /\bhttp\.request\.method=HEAD\b/.test(line);
}

/** What a RegistrySupervisor needs: where its files go, how to write the config for a port, where to log. */
export interface SupervisorOptions {
  /** `<dataDir>/run`: this server's config and child pid live here, named by the server's pid. */
  runDir: string;
  /** Writes the config for a port into `file` (called again when the port must change). */
  writeConfig: (port: number, file: string) => Promise<void>;
  log: (line: string) => void;
  /** How often, how patiently and how many times in a row `/v2/` may go unanswered before the child is killed (tests shorten it). */
  health?: { intervalMs: number; timeoutMs: number; misses: number };
}

/** Runs and watches one distribution child. `url` follows the child when a restart needs a new port. */
export class RegistrySupervisor {
  private child: ChildProcess | undefined;
  private port = 0;
  private stopping = false;
  /** Set once the first start answered: from then on an exit means a restart. */
  private supervising = false;
  private failures = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  /** The last lines the child wrote, for the error when it will not start. */
  private lastLines: string[] = [];
  private exited: Promise<void> = Promise.resolve();
  /** True while the current child has answered and not exited: only then is its health checked. */
  private ready = false;
  private healthTimer: NodeJS.Timeout | undefined;
  private missed = 0;
  private checking = false;
  /** This server's files: several servers (replicas) may share one data dir. */
  private readonly pidFile: string;
  readonly configFile: string;
  /** Ends the child if this process exits without stop() (an uncaught error): it must not outlive us. */
  private readonly killOnExit = (): void => {
    this.child?.kill('SIGKILL');
  };

  constructor(private readonly options: SupervisorOptions) {
    this.pidFile = path.join(options.runDir, `registry-${process.pid}.child`);
    this.configFile = path.join(options.runDir, `registry-${process.pid}.yml`);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Process id of the running child (tests use it to kill it), or undefined between runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /**
   * Starts the child and resolves once it answers. Throws SkiffError when the binary is missing or
   * the child exits (or does not answer) before it is ready.
   */
  async start(): Promise<void> {
    mkdirSync(this.options.runDir, { recursive: true, mode: 0o700 });
    await endStaleChildren(this.options.runDir);
    this.port = await freePort();
    await this.options.writeConfig(this.port, this.configFile);
    process.on('exit', this.killOnExit);
    const ready = await this.runOnce();
    if (ready === 'ready') {
      this.supervising = true;
      this.watchHealth();
    } else {
      this.child?.kill('SIGKILL');
      await this.stop();
      const missing = ready === 'missing';
      throw new SkiffError('error', missing ? `cannot run ${REGISTRY_BINARY}: it is not installed` : `the registry did not start (${ready})`, {
        hint: missing ? 'install it with: apt-get install docker-registry' : undefined,
        details: failureLines(this.lastLines),
      });
    }
  }

  /** Spawns the child and waits until it answers, exits, or the timeout passes. */
  private async runOnce(): Promise<'ready' | 'missing' | string> {
    this.lastLines = [];
    const child = spawn(REGISTRY_BINARY, ['serve', this.configFile], { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
    this.child = child;
    this.startedAt = Date.now();
    let exitNote: string | undefined;
    let spawnError: NodeJS.ErrnoException | undefined;
    this.exited = new Promise<void>((resolve) => {
      // A spawn that fails emits 'error' and maybe no 'exit': either one ends this run, once.
      const ended = (note: string): void => {
        if (exitNote !== undefined) return;
        exitNote = note;
        resolve();
        this.onExit(child, note);
      };
      child.once('error', (err: NodeJS.ErrnoException) => {
        spawnError = err;
        ended(`could not run: ${err.message}`);
      });
      child.once('exit', (code, signal) => ended(signal ? `exited with signal ${signal}` : `exited with code ${code}`));
    });
    if (child.pid !== undefined) writeFileSync(this.pidFile, `${child.pid}\n`);
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on('line', (line) => {
        this.lastLines = [...this.lastLines.slice(-49), line];
        if (!isRoutineRegistryLine(line)) this.options.log(`[registry] ${line}`);
      });
    }
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (exitNote !== undefined) return spawnError?.code === 'ENOENT' ? 'missing' : exitNote;
      if (await answers(this.url)) {
        this.ready = exitNote === undefined;
        this.missed = 0;
        return 'ready';
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return `no answer on ${this.url} after ${READY_TIMEOUT_MS / 1000} s`;
  }

  private onExit(child: ChildProcess, what: string): void {
    if (child !== this.child) return;
    this.child = undefined;
    this.ready = false;
    // Before the first start succeeded, start() reports the failure itself.
    if (this.stopping || !this.supervising) return;
    if (Date.now() - this.startedAt > STABLE_MS) this.failures = 0;
    const delay = Math.min(BACKOFF_FIRST_MS * 2 ** this.failures, BACKOFF_CAP_MS);
    this.failures += 1;
    this.options.log(`[registry] ${what}; restarting in ${delay} ms`);
    this.restartTimer = setTimeout(() => void this.restart(), delay);
  }

  private async restart(): Promise<void> {
    this.restartTimer = undefined;
    if (this.stopping) return;
    const result = await this.runOnce();
    if (this.stopping) return;
    if (result === 'ready') {
      this.options.log('[registry] running again');
      return;
    }
    // A child that never answered may have lost its port to another process: take a new one next
    // time. (One that exited was already logged, and its restart planned, by onExit.)
    if (this.child) {
      this.options.log(`[registry] did not start: ${result}`);
      this.child.kill('SIGKILL');
    }
    try {
      this.port = await freePort();
      await this.options.writeConfig(this.port, this.configFile);
    } catch (err) {
      this.options.log(`[registry] cannot write its config: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** Checks `/v2/` now and then; a child that stopped answering is killed, which restarts it. */
  private watchHealth(): void {
    const health = this.options.health ?? HEALTH;
    this.healthTimer = setInterval(() => {
      if (!this.ready || this.checking) return;
      this.checking = true;
      const child = this.child;
      void answers(this.url, health.timeoutMs).then((ok) => {
        this.checking = false;
        if (ok || !this.ready || child !== this.child) {
          this.missed = 0;
          return;
        }
        this.missed += 1;
        if (this.missed < health.misses) return;
        this.missed = 0;
        this.options.log(`[registry] not answering for ${health.misses} checks in a row; killing it`);
        child?.kill('SIGKILL');
      });
    }, health.intervalMs);
    // The server's own handles keep the process alive, not this check.
    this.healthTimer.unref();
  }

  /** Stops the child: SIGTERM, then SIGKILL after 10 s. No restart follows. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.healthTimer) clearInterval(this.healthTimer);
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const killTimer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      child.kill('SIGTERM');
      await this.exited;
      clearTimeout(killTimer);
    }
    process.off('exit', this.killOnExit);
    rmSync(this.pidFile, { force: true });
    rmSync(this.configFile, { force: true });
  }
}
