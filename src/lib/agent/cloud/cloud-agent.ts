/**
 * The agent in cloud mode: registers once, polls its target state, gets the images (by delta from
 * the image a service runs when the server has one, see delta.ts; else pulled through the
 * loopback pull proxy), hands the target to the agent's loop (the same `setTarget` a local-mode push
 * uses, so the planner, update strategies, locks and rollback apply unchanged), and reports.
 *
 * The server is never needed to keep running: the agent's store keeps the target it was given, so
 * a restart without the server starts that release; polls and reports just keep trying, with
 * backoff, and the reports carry only what changed since the last one the server accepted (no
 * queue grows while it is away).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statfsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ServiceDownload, UpdateDownload } from '../../api/deltas.js';
import type { DeviceReportV3 } from '../../api/device-state.js';
import type { EngineClient } from '../../docker/engine-lite.js';
import type { Agent } from '../agent.js';
import { AGENT_VERSION } from '../api.js';
import type { DeviceConfig } from '../config.js';
import type { AgentStore } from '../store.js';
import { InvalidTargetError } from '../target-state.js';
import { CloudHttpError, createCloudClient, type CloudClient } from './client.js';
import { ensureImages } from './images.js';
import { chooseDeltaSource, deltaTmpDir, MAX_DELTA_APPLIES, Slots, updateDownloadOf } from './delta.js';
import type { CloudImage } from './target.js';
import { startPullProxy, type PullProxy } from './pull-proxy.js';
import { sendWith, startLogShipper } from './log-shipper.js';
import { recordRegistration, registerOnce, isRegistered } from './register.js';
import { buildReport, dueReport, metricChanges, reportChanges, type CloudPhase, type Metrics } from './report.js';
import { backoffMs, METRICS_REPORT_INTERVAL_MS, nextDelayMs, pollIntervalMs } from './schedule.js';
import { convertTargetV3, type CloudApp } from './target.js';
import { startEventChannel, type EventChannel } from './events.js';
import { runAction, type HostCommands } from './actions.js';
import { tunnelHandler } from './tunnel.js';

export interface CloudOptions {
  agent: Agent;
  store: AgentStore;
  docker: EngineClient;
  /** config.json as loaded; `apiEndpoint` set. */
  config: DeviceConfig & { apiEndpoint: string };
  configFile: string;
  /** For the storage metric: the file system the agent keeps its state on. */
  dataDir: string;
  /** The device API's port, reported as `api_port`. */
  listenPort: number;
  /** [0, 1); `Math.random` by default. */
  random?: () => number;
  /** How device actions reboot or power off the host (none: those actions are refused). */
  hostCommands?: HostCommands;
  /** Whether tunnel sessions may run a shell on the host (default: the device's development mode). */
  hostShell?: boolean;
}

export interface RunningCloud {
  stop(): Promise<void>;
}

/** A release the agent's rollback rule left: not applied again until the server offers something else. */
interface RolledBack {
  commit: string;
  reason: string;
  /** {@link targetHash} of the target that failed. */
  target: string;
}

const KEY = { apps: 'cloud.apps', lastSet: 'cloud.lastSet', rolledBack: 'cloud.rolledBack', updateDownload: 'cloud.updateDownload' } as const;

/** Whether config.json puts the agent in cloud mode. */
export function isCloudConfig(config: DeviceConfig): config is DeviceConfig & { apiEndpoint: string } {
  return typeof config.apiEndpoint === 'string' && config.apiEndpoint.trim() !== '';
}

/** A hash of a target's JSON with its keys sorted, so the same target compares equal whatever its key order. */
export function targetHash(json: unknown): string {
  const canonical = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canonical);
    if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]));
    return v;
  };
  return createHash('sha256').update(JSON.stringify(canonical(json))).digest('hex');
}

/** Starts the cloud side; returns at once (registration and polling run in the background). */
export function startCloud(o: CloudOptions): RunningCloud {
  const { agent, store, config } = o;
  const random = o.random ?? Math.random;
  const log = (message: string, isError = false): void => agent.logs.system(message, isError);
  const abort = new AbortController();
  const deltaEndpoint = typeof config.deltaEndpoint === 'string' && config.deltaEndpoint.trim() !== '' ? config.deltaEndpoint.trim() : undefined;
  const client: CloudClient = createCloudClient(config.apiEndpoint, config.uuid, config.deviceApiKey, abort.signal, { deltaEndpoint });
  const deltaSlots = new Slots(MAX_DELTA_APPLIES);
  const deltaTmp = deltaTmpDir(o.dataDir);
  const serverHosts = [new URL(client.apiEndpoint).host, ...(typeof config.registryEndpoint === 'string' ? [config.registryEndpoint.replace(/^[a-z]+:\/\//, '').replace(/\/.*$/, '')] : [])];
  const configInterval = typeof config.appUpdatePollInterval === 'number' ? config.appUpdatePollInterval : undefined;
  const interval = (): number => pollIntervalMs(agent.targetState.local.config as Record<string, string> | undefined, configInterval);

  let stopped = false;
  let wakeSleep: (() => void) | undefined;
  /** Ends the wait between the looks for a newer target during a download (the channel said something changed). */
  let wakeWatch: (() => void) | undefined;
  let phase: CloudPhase = { kind: 'idle' };
  let apps = readJson<CloudApp[]>(store.getValue(KEY.apps)) ?? [];
  let rolledBack = readJson<RolledBack>(store.getValue(KEY.rolledBack));
  /** How the last update's images came (the report's `update_download`), kept across restarts. */
  let updateDownload = readJson<UpdateDownload>(store.getValue(KEY.updateDownload));
  let proxy: PullProxy | undefined;
  let etag: string | undefined;
  /** The rolled-back target last said to be held back: said once, not on every poll that offers it. */
  let toldRolledBack: string | undefined;

  const sleep = (ms: number): Promise<void> => new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      wakeSleep = undefined;
      resolve();
    }
    wakeSleep = done;
  });

  /** Logs a failure once per streak of the same message: a device offline for a week writes one line, not ten thousand. */
  let lastProblem: string | undefined;
  const problem = (message: string): void => {
    if (message !== lastProblem) log(message, true);
    lastProblem = message;
  };
  const recovered = (message: string): void => {
    if (lastProblem !== undefined) log(message);
    lastProblem = undefined;
  };

  const register = async (): Promise<void> => {
    if (isRegistered(config)) return;
    for (let failures = 1; !stopped; failures++) {
      const outcome = await registerOnce(client, config);
      if (outcome.done) {
        const written = recordRegistration(o.configFile, outcome.deviceId);
        Object.assign(config, { registered_at: written.registered_at, ...(outcome.deviceId !== undefined ? { deviceId: outcome.deviceId } : {}) });
        delete config.apiKey;
        recovered('Cloud: server reachable again');
        log(outcome.message);
        return;
      }
      problem(`Cloud: ${outcome.message}; retrying`);
      await sleep(Math.max(backoffMs(failures, interval()), outcome.retryAfterMs ?? 0));
    }
  };

  /** Handles one new target from the server. Throws what should back the poll off (a pull that failed). */
  const apply = async (body: unknown, newEtag: string | undefined): Promise<void> => {
    let converted;
    try {
      converted = convertTargetV3(body, config.uuid, agent.ctx.deviceName);
    } catch (err) {
      if (!(err instanceof InvalidTargetError)) throw err;
      phase = { kind: 'rejected', reason: `invalid target state: ${err.message}` };
      log(`Cloud: refused the target state (nothing changed): ${err.message}`, true);
      etag = newEtag; // the same body would be refused again: wait for another
      return;
    }
    apps = converted.apps;
    store.setValue(KEY.apps, JSON.stringify(apps));
    const hash = targetHash(converted.json);
    if (hash === targetHash(agent.targetState)) {
      phase = { kind: 'idle' };
      etag = newEtag;
      return;
    }
    if (rolledBack?.target === hash) {
      if (toldRolledBack !== hash) log(`Cloud: release ${rolledBack.commit} was rolled back on this device (${rolledBack.reason}); keeping the previous release until the server offers another`, true);
      toldRolledBack = hash;
      phase = { kind: 'idle' };
      etag = newEtag;
      return;
    }
    const commits = converted.apps.map((a) => a.commit ?? '(none)').join(', ');
    log(`Cloud: new target (release ${commits})`);
    const progress: Record<string, number> = {};
    phase = { kind: 'downloading', progress };
    proxy ??= await startPullProxy(client.apiEndpoint, client, (line) => log(`Cloud: ${line}`, true));
    // A pull can take long; a newer target meanwhile cancels it (balena's rule), so a fix deployed
    // over a huge broken release does not wait for it to download.
    const pull = new AbortController();
    const stopPull = (): void => pull.abort();
    abort.signal.addEventListener('abort', stopPull, { once: true });
    const watching = new AbortController();
    const superseded = watchForNewer(hash, newEtag, watching.signal).then((newer) => {
      if (newer) pull.abort();
      return newer;
    });
    const downloads: Array<{ image: CloudImage; download: ServiceDownload }> = [];
    const names = (image: CloudImage): string => image.services.map((s) => s.split('/')[1]).join(', ');
    const proxyHost = proxy.host;
    try {
      await ensureImages(o.docker, converted.images, {
        serverHosts, proxyHost, signal: pull.signal,
        onProgress: (image, percent) => {
          for (const s of image.services) progress[s] = percent;
        },
        onPulled: (image, layers) => log(`Cloud: pulled ${names(image)} (${layers.total === 0 ? 'the engine had it already' : `${layers.downloaded} of ${layers.total} layers downloaded`})`),
        onDownloaded: (image, download) => {
          downloads.push({ image, download });
          if (download.method === 'delta') log(`Cloud: ${names(image)} updated by delta (${download.downloadedBytes} bytes downloaded; a pull: ${download.pullBytes})`);
        },
        delta: {
          context: { client, docker: o.docker, proxyHost, tmpDir: deltaTmp, slots: deltaSlots, random, signal: pull.signal },
          sourceOf: (image) => chooseDeltaSource(image, converted.apps, agent.targetState, agent.currentState?.images, serverHosts),
          onFallback: (image, reason, failed) => log(failed ? `Cloud: delta for ${names(image)} failed (${reason}); pulling instead` : `Cloud: ${names(image)}: ${reason}; pulling`, failed),
        },
      });
    } catch (err) {
      watching.abort();
      const newer = await superseded;
      if (newer && !stopped) {
        log(`Cloud: a newer target arrived while release ${commits} downloaded; taking it instead`);
        return apply(newer.body, newer.etag);
      }
      phase = { kind: 'rejected', reason: (err as Error).message };
      throw err;
    } finally {
      watching.abort();
      abort.signal.removeEventListener('abort', stopPull);
    }
    const newer = await superseded;
    if (newer && !stopped) return apply(newer.body, newer.etag);
    // Only an update that downloaded something replaces the last one's figures (a variable
    // change brings no image).
    if (downloads.some((d) => d.download.method !== 'present')) {
      updateDownload = updateDownloadOf(converted.apps.map((a) => a.commit ?? '').join(','), downloads);
      store.setValue(KEY.updateDownload, JSON.stringify(updateDownload));
    }
    try {
      await agent.setTarget(converted.json);
    } catch (err) {
      // The target parsed above, so what the agent refuses here is an image gone since the pull
      // (another agent on the engine pruned it, say): retried with backoff, the etag not taken.
      phase = { kind: 'rejected', reason: (err as Error).message };
      throw err;
    }
    store.setValue(KEY.lastSet, hash);
    if (rolledBack) {
      rolledBack = undefined;
      store.setValue(KEY.rolledBack, '');
    }
    phase = { kind: 'idle' };
    etag = newEtag;
  };

  /**
   * While a target's images download: polls on, and resolves with a newer target that converts
   * and differs (undefined once `signal` aborts). A poll that fails here is the main loop's to
   * report; this one only looks.
   */
  const watchForNewer = async (hash: string, since: string | undefined, signal: AbortSignal): Promise<{ body: unknown; etag?: string } | undefined> => {
    while (!signal.aborted) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, interval());
        function done(): void {
          clearTimeout(t);
          signal.removeEventListener('abort', done);
          if (wakeWatch === done) wakeWatch = undefined;
          resolve();
        }
        signal.addEventListener('abort', done, { once: true });
        wakeWatch = done;
      });
      if (signal.aborted) return undefined;
      const answer = await client.target(since).catch(() => undefined);
      if (!answer?.changed || signal.aborted) continue;
      try {
        if (targetHash(convertTargetV3(answer.body, config.uuid, agent.ctx.deviceName).json) !== hash) return answer;
      } catch {
        // an invalid newer target does not stop a valid pull; the main loop refuses it after
      }
    }
    return undefined;
  };

  // The event channel (events.ts), once registered: `update` ends the poll's sleep (or, during a
  // poll, makes the next one start at once); `action` runs a device action (actions.ts).
  let nudged = false;
  let channel: EventChannel | undefined;
  const openChannel = (): void => {
    if (stopped) return;
    channel = startEventChannel({
      apiEndpoint: client.apiEndpoint, uuid: config.uuid, deviceApiKey: config.deviceApiKey, log, random,
      onUpdate: () => {
        nudged = true;
        wakeSleep?.();
        wakeWatch?.();
      },
      runAction: (action) => runAction({ agent, uuid: config.uuid, commands: o.hostCommands ?? {} }, action),
      onTunnel: tunnelHandler({ docker: o.docker, agent, hostShell: o.hostShell ?? config.developmentMode, log }),
    });
  };

  const poll = async (): Promise<void> => {
    // What a delta apply killed mid-way left (its folder exists only once a delta was tried).
    if (existsSync(deltaTmp)) {
      await (await import('../../delta/apply-image.js')).cleanDeltaTmp(deltaTmp).catch((err: Error) => log(`Cloud: could not clean ${deltaTmp} (${err.message})`, true));
    }
    await register();
    openChannel();
    let failures = 0;
    while (!stopped) {
      let retryAfter: number | undefined;
      nudged = false;
      try {
        const answer = await client.target(etag);
        recovered('Cloud: server reachable again');
        if (answer.changed) await apply(answer.body, answer.etag);
        failures = 0;
      } catch (err) {
        if (stopped) return;
        failures++;
        retryAfter = err instanceof CloudHttpError ? err.retryAfterMs : undefined;
        problem(`Cloud: ${(err as Error).message}; keeping the current release, retrying`);
      }
      if (!nudged) await sleep(nextDelayMs({ failures, retryAfterMs: retryAfter }, interval(), random()));
    }
  };

  // Reports: every second, work out what changed and whether it is due; at most one in flight.
  let lastAccepted: DeviceReportV3 = {};
  let lastMetrics: Metrics = {};
  let lastStateAt = 0;
  let lastMetricsAt = 0;
  let notBefore = 0;
  let reportFailures = 0;
  let reporting = false;
  /** A change came while a report was in flight: look again when it ends. */
  let tickAgain = false;
  let lastReportProblem: string | undefined;
  const cpu = cpuSampler();
  const device = deviceFacts(o.listenPort);
  const tick = async (): Promise<void> => {
    if (stopped || !isRegistered(config)) return;
    if (reporting) {
      tickAgain = true;
      return;
    }
    reporting = true;
    tickAgain = false;
    try {
      noteRollback();
      const now = Date.now();
      const state = buildReport({
        status: agent.status,
        lastError: agent.lastError,
        appliedCommit: agent.appliedCommit,
        apps,
        agentTargetCommit: Object.values(agent.targetState.local.apps ?? {}).map((a) => a.commit ?? '').join(','),
        containers: agent.currentState?.containers ?? [],
        phase,
        rolledBackFrom: rolledBack && rolledBack.commit !== agent.appliedCommit ? { commit: rolledBack.commit, reason: rolledBack.reason } : undefined,
        updateDownload,
        device: { ...device, ip_address: ipAddresses() },
      });
      const changes = reportChanges(lastAccepted, state);
      const metrics = now - lastMetricsAt >= METRICS_REPORT_INTERVAL_MS ? metricChanges(lastMetrics, sampleMetrics(o.dataDir, cpu)) : {};
      const body = dueReport(changes, metrics, { now, lastStateAt, lastMetricsAt, notBefore });
      if (!body) return;
      try {
        await client.report({ [config.uuid]: body });
      } catch (err) {
        reportFailures++;
        notBefore = Date.now() + Math.max(backoffMs(reportFailures, interval()), err instanceof CloudHttpError ? err.retryAfterMs ?? 0 : 0);
        // An unreachable server is the poll's to say; a server that refuses the report is said here, once.
        if (err instanceof CloudHttpError && err.message !== lastReportProblem) log(`Cloud: ${err.message}; retrying`, true);
        lastReportProblem = err instanceof CloudHttpError ? err.message : lastReportProblem;
        return;
      }
      reportFailures = 0;
      lastReportProblem = undefined;
      const sentState = Object.keys(changes).some((k) => k in body);
      if (sentState) {
        lastAccepted = { ...lastAccepted, ...changes };
        lastStateAt = now;
      }
      const sentMetrics = Object.keys(metrics).filter((k) => k in body);
      if (sentMetrics.length > 0) {
        lastMetrics = { ...lastMetrics, ...metrics };
        lastMetricsAt = now;
      }
    } finally {
      reporting = false;
      if (tickAgain) queueMicrotask(runTick);
    }
  };
  const runTick = (): void => void tick().catch((err: Error) => log(`Cloud: report failed: ${err.message}`, true));

  /** The agent's rollback rule acted on a release the server gave: remember it, across restarts. */
  const noteRollback = (): void => {
    const failed = agent.failedRelease;
    if (!failed || rolledBack?.commit === failed.commit) return;
    const lastSet = store.getValue(KEY.lastSet);
    if (!lastSet) return;
    rolledBack = { commit: failed.commit, reason: failed.reason, target: lastSet };
    store.setValue(KEY.rolledBack, JSON.stringify(rolledBack));
  };

  const timer = setInterval(runTick, 1000);
  // An applied (or failed) release is reported at once, not at the next second's tick: the fleet's
  // dashboard and `skiff push` see it sooner. Same rules (dueReport): only changes, with backoff.
  const stopListening = agent.onChange(runTick);
  const polling = poll().catch((err: Error) => log(`Cloud: stopped polling after an unexpected error: ${err.stack ?? err.message}`, true));
  log(`Cloud mode: server ${client.apiEndpoint}`);
  // Log lines to the server (log-shipper.ts), bounded in memory and on disk in the data dir.
  const shipper = startLogShipper(agent.logs, { send: sendWith(client), ready: () => isRegistered(config), dir: path.join(o.dataDir, 'cloud-logs'), random, log });
  return {
    async stop() {
      stopped = true;
      abort.abort();
      clearInterval(timer);
      stopListening();
      wakeSleep?.();
      await polling;
      await channel?.stop();
      await shipper.stop();
      await proxy?.close();
    },
  };
}

function readJson<T>(text: string | undefined): T | undefined {
  if (!text) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}

/** What the device says about itself that does not change while it runs. */
function deviceFacts(apiPort: number): Pick<DeviceReportV3, 'os_version' | 'supervisor_version' | 'api_port'> {
  let osVersion = `${os.type()} ${os.release()}`;
  try {
    const pretty = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1];
    if (pretty) osVersion = pretty;
  } catch {
    // no os-release: the kernel's name will do
  }
  return { os_version: osVersion.slice(0, 100), supervisor_version: AGENT_VERSION, api_port: apiPort };
}

/** The device's addresses, space-separated as balena sends them; container bridges and loopback left out. */
export function ipAddresses(interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces()): string {
  const out: string[] = [];
  for (const [name, infos] of Object.entries(interfaces)) {
    if (/^(docker|br-|veth|lo)/.test(name)) continue;
    for (const info of infos ?? []) if (!info.internal && !info.address.startsWith('fe80:')) out.push(info.address);
  }
  return out.join(' ').slice(0, 1000);
}

/** CPU use between two calls, in percent. */
function cpuSampler(): () => number {
  const times = (): { idle: number; total: number } => {
    let idle = 0;
    let total = 0;
    for (const c of os.cpus()) {
      idle += c.times.idle;
      total += c.times.user + c.times.nice + c.times.sys + c.times.irq + c.times.idle;
    }
    return { idle, total };
  };
  let last = times();
  return () => {
    const now = times();
    const total = now.total - last.total;
    const busy = total - (now.idle - last.idle);
    last = now;
    return total > 0 ? Math.max(0, Math.min(100, Math.round((busy / total) * 100))) : 0;
  };
}

function sampleMetrics(dataDir: string, cpu: () => number): Metrics {
  const metrics: Metrics = { memory_total: os.totalmem(), memory_usage: os.totalmem() - os.freemem(), cpu_usage: cpu() };
  try {
    const fs = statfsSync(dataDir);
    const mib = (blocks: number): number => Math.round((blocks * fs.bsize) / 1024 / 1024);
    metrics.storage_total = mib(fs.blocks);
    metrics.storage_usage = mib(fs.blocks - fs.bfree);
  } catch {
    // no statfs here: storage is left out
  }
  return metrics;
}
