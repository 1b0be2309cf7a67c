/**
 * What the agent reports to its server (`PATCH /device/v3/state`, `StateReportV3`), as pure
 * functions: the full report from the agent's state, the part that changed since the last report
 * the server accepted, and whether it is due. balena-supervisor's rules
 * (`src/api-binder/report.ts`): only changed fields, state at most every 10 s, metrics at most
 * every 300 s; here anything important (a release applied, rejected or rolled back) goes at once.
 */
import type { UpdateDownload } from '../../api/deltas.js';
import type { DeviceReportV3, ServiceReportV3, UpdateStatus } from '../../api/device-state.js';
import type { AgentStatus } from '../agent.js';
import type { CurrentContainer } from '../model.js';
import { METRICS_REPORT_INTERVAL_MS, STATE_REPORT_INTERVAL_MS } from './schedule.js';
import type { CloudApp } from './target.js';

/** The device fields that are metrics: sent at most every {@link METRICS_REPORT_INTERVAL_MS}. */
export const METRIC_KEYS = ['memory_usage', 'memory_total', 'storage_usage', 'storage_total', 'cpu_usage', 'cpu_temp'] as const;
export type MetricKey = (typeof METRIC_KEYS)[number];
export type Metrics = Partial<Pick<DeviceReportV3, MetricKey>>;

/** Where the cloud side is with the target it fetched last. */
export type CloudPhase =
  /** Nothing new: the agent's loop owns the state. */
  | { kind: 'idle' }
  /** Pulling the target's images; percent per service (`<app uuid>/<name>`). */
  | { kind: 'downloading'; progress: Record<string, number> }
  /** The target was refused before anything changed (invalid, or its images could not be pulled). */
  | { kind: 'rejected'; reason: string };

export interface ReportInputs {
  status: AgentStatus;
  lastError?: string;
  /** The commit the agent applied and confirmed up. */
  appliedCommit?: string;
  /** The apps of the last target from the server (empty before the first). */
  apps: CloudApp[];
  /** The commit the agent's loop is applying now (its target), comma-joined per app as the agent keeps it. */
  agentTargetCommit?: string;
  containers: CurrentContainer[];
  phase: CloudPhase;
  /** The release the agent's rollback rule left, with why; undefined when none. */
  rolledBackFrom?: { commit: string; reason: string };
  /** How the last update's images came (delta, pull, present); undefined before the first. */
  updateDownload?: UpdateDownload;
  device: Pick<DeviceReportV3, 'os_version' | 'os_variant' | 'supervisor_version' | 'ip_address' | 'mac_address' | 'api_port'>;
}

/** balena's word for a container state (`Running`, `Exited`, `Installed`, …), as the device API says it. */
export function serviceStatus(state: CurrentContainer['state']): string {
  if (state === 'running') return 'Running';
  if (state === 'exited') return 'Exited';
  if (state === 'created') return 'Installed';
  return state.charAt(0).toUpperCase() + state.slice(1);
}

/** The whole report of the device's state (no metrics): {@link reportChanges} picks what to send. */
export function buildReport(input: ReportInputs): DeviceReportV3 {
  const { phase } = input;
  const applying = phase.kind === 'downloading' || input.status === 'Applying';
  const failed = phase.kind === 'rejected' || input.status === 'Failed';
  const report: DeviceReportV3 = {
    ...input.device,
    status: phase.kind === 'downloading' ? 'Downloading' : input.status,
    update_pending: applying,
    update_failed: failed,
    update_downloaded: phase.kind !== 'downloading',
    update_error: phase.kind === 'rejected' ? clip(phase.reason) : input.status === 'Failed' ? clip(input.lastError ?? 'failed') : null,
    rolled_back_from: input.rolledBackFrom ? { commit: input.rolledBackFrom.commit.slice(0, 100), reason: clip(input.rolledBackFrom.reason) } : null,
    ...(input.updateDownload ? { update_download: input.updateDownload } : {}),
  };
  const apps: NonNullable<DeviceReportV3['apps']> = {};
  for (const app of input.apps) {
    const services: Record<string, ServiceReportV3> = {};
    // Once the release is applied every container of the app is the release's, including those of
    // services it did not change: they keep the commit label of the release that made them.
    const applied = app.commit !== undefined && (input.appliedCommit ?? '').split(',').includes(app.commit);
    for (const name of app.services) {
      const container = input.containers.find((c) => c.appId === app.appId && c.serviceName === name && c.commit === app.commit)
        ?? input.containers.find((c) => c.appId === app.appId && c.serviceName === name);
      const progress = phase.kind === 'downloading' ? phase.progress[`${app.uuid}/${name}`] : undefined;
      if (progress !== undefined && progress < 100) services[name] = { status: 'Downloading', download_progress: progress };
      else services[name] = { status: container && (container.commit === app.commit || applied) ? serviceStatus(container.state) : 'Installing', download_progress: null };
    }
    // The running release is the applied one; the one reported on is the target's.
    const running = input.appliedCommit && input.appliedCommit.split(',').includes(app.commit ?? '') ? app.commit : input.appliedCommit?.split(',')[0];
    apps[app.uuid] = {
      release_uuid: running ?? null,
      ...(app.commit ? { releases: { [app.commit]: { update_status: updateStatus(input, app), services } } } : {}),
    };
  }
  report.apps = apps;
  return report;
}

/** The report's texts are bounded (2000 characters, as the server's schema says): an engine's message can be long. */
function clip(text: string): string {
  return text.length > 2000 ? `${text.slice(0, 1999)}…` : text;
}

function updateStatus(input: ReportInputs, app: CloudApp): UpdateStatus {
  const { phase } = input;
  if (phase.kind === 'rejected') return 'rejected';
  if (phase.kind === 'downloading') return 'downloading';
  if (input.rolledBackFrom?.commit === app.commit) return 'aborted';
  const targeted = (input.agentTargetCommit ?? '').split(',').includes(app.commit ?? '');
  if (!targeted) return 'downloaded';
  if (input.status === 'Idle' && (input.appliedCommit ?? '').split(',').includes(app.commit ?? '')) return 'done';
  return 'applying changes';
}

/**
 * The top-level fields of `next` that differ from `last` (the last report the server accepted):
 * what a PATCH carries. `apps` goes whole when any part of it changed, so a service that left the
 * release is not left behind on the server.
 */
export function reportChanges(last: DeviceReportV3, next: DeviceReportV3): DeviceReportV3 {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(next)) {
    if (value === undefined) continue;
    if (JSON.stringify(value) !== JSON.stringify((last as Record<string, unknown>)[key])) out[key] = value;
  }
  return out as DeviceReportV3;
}

/** A change the server should see at once, not after the 10 s throttle: an apply's end, a refusal, a rollback. */
export function isImportant(changes: DeviceReportV3): boolean {
  if (changes.update_error !== undefined || changes.rolled_back_from !== undefined || changes.update_failed !== undefined) return true;
  for (const app of Object.values(changes.apps ?? {})) {
    for (const release of Object.values(app.releases ?? {})) {
      if (release.update_status && release.update_status !== 'downloading' && release.update_status !== 'applying changes') return true;
    }
  }
  return false;
}

export interface ReportTiming {
  now: number;
  /** When the last state report was accepted (0: never). */
  lastStateAt: number;
  /** When metrics were last accepted (0: never). */
  lastMetricsAt: number;
  /** Not before this (a backoff after an error, or the server's Retry-After). */
  notBefore: number;
}

/**
 * What to send now: the state changes (when due: important, or 10 s since the last), and the
 * metrics that changed (when 300 s passed). Undefined when nothing is due.
 */
export function dueReport(stateChanges: DeviceReportV3, metricChanges: Metrics, t: ReportTiming): DeviceReportV3 | undefined {
  if (t.now < t.notBefore) return undefined;
  const stateDue = Object.keys(stateChanges).length > 0 && (isImportant(stateChanges) || t.now - t.lastStateAt >= STATE_REPORT_INTERVAL_MS);
  const metricsDue = Object.keys(metricChanges).length > 0 && t.now - t.lastMetricsAt >= METRICS_REPORT_INTERVAL_MS;
  if (!stateDue && !metricsDue) return undefined;
  return { ...(stateDue ? stateChanges : {}), ...(metricsDue ? metricChanges : {}) };
}

/** The metric fields of `next` that differ from `last`. */
export function metricChanges(last: Metrics, next: Metrics): Metrics {
  const out: Metrics = {};
  for (const key of METRIC_KEYS) if (next[key] !== undefined && next[key] !== last[key]) out[key] = next[key];
  return out;
}
