/** `skiff device info|restart|purge`: one call each over the device API. */
import type { Received, StateStatusResponse, TargetStateResponse } from '../device-api/wire.js';
import { SkiffError } from '../errors/errors.js';
import { DeviceClient, parseDeviceAddress } from './client.js';

export interface DeviceSummary {
  address: string;
  deviceType: string;
  arch: string;
  version: string;
  status: string;
  release: string | null;
  services: Array<{ service: string; status: string; containerId: string }>;
}

async function connect(device: string): Promise<DeviceClient> {
  const client = new DeviceClient(parseDeviceAddress(device));
  await client.check();
  return client;
}

/** The app the device runs (local mode has one). */
async function appId(client: DeviceClient): Promise<number> {
  const t = await client.json<Received<TargetStateResponse>>('GET', '/v2/local/target-state');
  const id = Object.keys(t.state?.local?.apps ?? {})[0];
  if (!id) throw new SkiffError('deviceRefused', 'the device runs no release yet', { hint: "push one first with 'skiff push <device>'" });
  return Number(id);
}

export async function deviceInfo(device: string): Promise<DeviceSummary> {
  const client = await connect(device);
  const info = await client.check();
  const status = await client.json<Received<StateStatusResponse>>('GET', '/v2/state/status');
  return {
    address: client.where,
    deviceType: info.deviceType,
    arch: info.arch,
    version: info.version,
    status: status.appState ?? 'unknown',
    release: status.release ?? null,
    services: (status.containers ?? []).map((c) => ({ service: c.serviceName ?? '', status: c.status ?? 'unknown', containerId: (c.containerId ?? '').slice(0, 12) })).sort((a, b) => a.service.localeCompare(b.service)),
  };
}

/**
 * How long a restart may take before the device is called unreachable (ms): the device answers once
 * the services stopped (each waits out its stop_grace_period, 10 s by default, when its process
 * ignores SIGTERM) and started again.
 */
const RESTART_TIMEOUT_MS = 300_000;

export async function restart(device: string, services: string[]): Promise<{ restarted: string[] }> {
  const client = await connect(device);
  const id = await appId(client);
  if (services.length === 0) {
    await client.request('POST', '/v1/restart', { appId: id }, RESTART_TIMEOUT_MS).then(async (r) => {
      if (!r.ok) throw new SkiffError('deviceRefused', `the device refused to restart: ${await r.text()}`);
    });
    return { restarted: ['*'] };
  }
  for (const s of services) {
    const res = await client.request('POST', `/v2/applications/${id}/restart-service`, { serviceName: s }, RESTART_TIMEOUT_MS);
    if (res.status === 404) throw new SkiffError('usage', `the device runs no service '${s}'`, { hint: "'skiff device info <device>' lists them" });
    if (!res.ok) throw new SkiffError('deviceRefused', `the device refused to restart '${s}': ${await res.text()}`);
  }
  return { restarted: services };
}

export async function purge(device: string): Promise<{ purged: number }> {
  const client = await connect(device);
  const id = await appId(client);
  await client.json('POST', '/v1/purge', { appId: id }, 120_000);
  return { purged: id };
}
