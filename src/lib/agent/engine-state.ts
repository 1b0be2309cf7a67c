/**
 * What the agent reads from and does to the engine: the snapshot (current state) and the executors
 * of plan steps. All I/O of the reconciliation loop lives here; plan.ts stays pure.
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { ContainerCreateSpec, EngineClient } from '../docker/engine-lite.js';
import type { CurrentContainer, CurrentState, Step, StepAction, TargetApp, TargetService } from './model.js';
import { serviceConfigHash } from './plan.js';
import { parsePort } from '../service/values.js';

export const LABEL = {
  agent: 'io.skiff.agent',
  supervised: 'io.balena.supervised',
  appId: 'io.balena.app-id',
  serviceId: 'io.balena.service-id',
  serviceName: 'io.balena.service-name',
  commit: 'io.skiff.commit',
  releaseId: 'io.skiff.release-id',
  configHash: 'io.skiff.config-hash',
  /** The app's settings and the service's target JSON, to rebuild the target if the database is lost. */
  target: 'io.skiff.target',
} as const;

/** Who the agent is and where things go: passed to every executor (no module singletons). */
export interface EngineContext {
  docker: EngineClient;
  /** Device uuid; labels every object this agent owns. */
  uuid: string;
  deviceType: string;
  arch: string;
  deviceName: string;
  /** Address containers use to reach the device API, e.g. http://172.17.0.1:48484 */
  apiAddress: string;
  apiKey: string;
  /** Host folder for update locks: <locksDir>/<appId>/<service>/updates.lock */
  locksDir: string;
  /** On a real device, the engine socket path to hand to services with the balena-socket feature. */
  engineSocket: string;
  /** The host paths feature labels bind that exist on this device, read once at start ({@link existingHostPaths}), so building a container spec does no I/O. */
  hostPaths: ReadonlySet<string>;
}

const short = (uuid: string) => uuid.slice(0, 7);
export const volumeName = (ctx: EngineContext, appId: number, name: string) => `${short(ctx.uuid)}_${appId}_${name}`;
export const networkName = (ctx: EngineContext, appId: number, name: string) => `${short(ctx.uuid)}_${appId}_${name}`;

/**
 * What the engine runs for this agent. An engine that is starting up accepts connections before
 * it answers, so a snapshot gives up after `timeoutMs` instead of holding its caller forever.
 */
export async function snapshot(ctx: EngineContext, timeoutMs = 20_000): Promise<CurrentState> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the engine did not answer within ${timeoutMs / 1000} s`)), timeoutMs);
    timer.unref();
  });
  return Promise.race([readState(ctx), timeout]).finally(() => clearTimeout(timer));
}

/** Host folder for a service's update lock, bound at /tmp/balena and /tmp/resin. */
export const serviceLockDir = (ctx: EngineContext, app: TargetApp, service: TargetService): string => path.join(ctx.locksDir, String(app.appId), service.serviceName);

/** What a hand-over's new container writes in its lock folder (/tmp/balena) once it has taken over (balena's names). */
export const HANDOVER_FILES = ['handover-complete', 'resin-kill-me'];

async function readState(ctx: EngineContext): Promise<CurrentState> {
  const [containers, images, volumes, networks] = await Promise.all([
    ctx.docker.listContainers({ all: true, filters: { label: [`${LABEL.agent}=${ctx.uuid}`] } }),
    ctx.docker.listImages(),
    ctx.docker.listVolumes({ filters: { label: [`${LABEL.agent}=${ctx.uuid}`] } }),
    ctx.docker.listNetworks({ filters: { label: [`${LABEL.agent}=${ctx.uuid}`] } }),
  ]);
  const current: CurrentContainer[] = [];
  for (const c of containers) {
    const l = c.Labels ?? {};
    const detail = await ctx.docker.getContainer(c.Id).inspect().catch(() => undefined);
    if (!detail) continue; // removed between list and inspect
    current.push({
      containerId: c.Id,
      name: (c.Names?.[0] ?? '').replace(/^\//, ''),
      appId: Number(l[LABEL.appId]),
      serviceId: Number(l[LABEL.serviceId]),
      serviceName: l[LABEL.serviceName] ?? '',
      commit: l[LABEL.commit] ?? '',
      releaseId: l[LABEL.releaseId] ?? '',
      imageId: detail.Image,
      configHash: l[LABEL.configHash] ?? '',
      state: detail.State.Status as CurrentContainer['state'],
      ...(detail.State.Health?.Status ? { health: detail.State.Health.Status as CurrentContainer['health'] } : {}),
      createdAt: detail.Created,
      ...(detail.State.StartedAt && !detail.State.StartedAt.startsWith('0001') ? { startedAt: detail.State.StartedAt } : {}),
      exitCode: detail.State.ExitCode,
    });
  }
  const imageMap: Record<string, string> = {};
  for (const img of images) for (const tag of img.RepoTags ?? []) if (tag !== '<none>:<none>') imageMap[tag] = img.Id;
  // Names without a tag mean :latest, as the engine reads them.
  for (const [tag, id] of Object.entries(imageMap)) if (tag.endsWith(':latest')) imageMap[tag.slice(0, -':latest'.length)] = id;
  const prefix = `${short(ctx.uuid)}_`;
  const parseName = (n: string) => {
    const rest = n.slice(prefix.length);
    const idx = rest.indexOf('_');
    return { appId: Number(rest.slice(0, idx)), name: rest.slice(idx + 1) };
  };
  const locked = new Set<number>();
  const handoverComplete: string[] = [];
  if (existsSync(ctx.locksDir)) {
    for (const app of readdirSync(ctx.locksDir)) {
      const appDir = path.join(ctx.locksDir, app);
      for (const svc of readdirSync(appDir)) {
        if (existsSync(path.join(appDir, svc, 'updates.lock')) || existsSync(path.join(appDir, svc, 'resin-updates.lock'))) locked.add(Number(app));
        if (HANDOVER_FILES.some((f) => existsSync(path.join(appDir, svc, f)))) handoverComplete.push(`${app}/${svc}`);
      }
    }
  }
  return {
    containers: current,
    images: imageMap,
    volumes: (volumes.Volumes ?? []).filter((v) => v.Name.startsWith(prefix)).map((v) => parseName(v.Name)),
    networks: networks.filter((n) => n.Name.startsWith(prefix)).map((n) => parseName(n.Name)),
    locked: [...locked],
    handoverComplete,
  };
}

/** The host paths each balena feature label binds (balena-supervisor's `io.balena.features.*`), by feature. */
const FEATURE_PATHS = {
  dbus: ['/run/dbus:/host/run/dbus'],
  sysfs: ['/sys:/sys'],
  procfs: ['/proc:/proc'],
  'kernel-modules': ['/lib/modules:/lib/modules'],
  firmware: ['/lib/firmware:/lib/firmware'],
  'journal-logs': ['/var/log/journal:/var/log/journal:ro', '/run/log/journal:/run/log/journal:ro', '/etc/machine-id:/etc/machine-id:ro'],
} as const;

/** Which of the host paths feature labels may bind exist here (the engine refuses a bind of a missing one). Reads the disk: call once at start. */
export function existingHostPaths(engineSocket: string): Set<string> {
  const paths = [engineSocket, ...Object.values(FEATURE_PATHS).flat().map((b) => b.split(':')[0] ?? '')];
  return new Set(paths.filter((p) => p !== '' && existsSync(p)));
}

/** Feature labels that grant host access, and what each binds or sets. */
function featureBinds(ctx: EngineContext, labels: Record<string, string>): { binds: string[]; env: Record<string, string> } {
  const on = (name: string) => {
    const v = labels[`io.balena.features.${name}`] ?? labels[`io.resin.features.${name}`];
    return v === '1' || v === 'true';
  };
  const binds: string[] = [];
  const env: Record<string, string> = {};
  if (on('balena-socket') || on('docker-socket')) {
    binds.push(`${ctx.engineSocket}:/var/run/balena.sock`, `${ctx.engineSocket}:/var/run/docker.sock`);
    env.DOCKER_HOST = 'unix:///var/run/balena.sock';
  }
  for (const [feature, paths] of Object.entries(FEATURE_PATHS)) if (on(feature)) binds.push(...paths);
  if (on('supervisor-api') || on('balena-api') || on('resin-api')) {
    env.BALENA_SUPERVISOR_API_KEY = ctx.apiKey;
    env.RESIN_SUPERVISOR_API_KEY = ctx.apiKey;
  }
  return { binds: binds.filter((b) => ctx.hostPaths.has(b.split(':')[0] ?? '')), env };
}

type PortBindings = NonNullable<NonNullable<ContainerCreateSpec['HostConfig']>['PortBindings']>;

/**
 * Published ports and exposed ones. A port without a published part is published on the same
 * host port (`"4000"` → host 4000), as balena's supervisor does: exposing it alone would leave it
 * unreachable from outside the device.
 */
function portBindings(ports: string[], expose: string[]): { exposed: Record<string, object>; bindings: PortBindings } {
  const exposed: Record<string, object> = {};
  const bindings: PortBindings = {};
  for (const p of ports) {
    const spec = parsePort(p);
    if (typeof spec === 'string') continue; // target-state.ts refused it already
    const [from, to] = spec.target;
    const hostFrom = spec.published?.[0] ?? from;
    for (let i = 0; from + i <= to; i++) {
      const key = `${from + i}/${spec.protocol}`;
      exposed[key] = {};
      (bindings[key] ??= []).push({ ...(spec.hostIp ? { HostIp: spec.hostIp } : {}), HostPort: String(hostFrom + i) });
    }
  }
  for (const e of expose) {
    const [range = '', proto = 'tcp'] = e.split('/');
    const [from = 0, to = from] = range.split('-').map(Number);
    for (let port = from; port <= to; port++) exposed[`${port}/${proto}`] = {};
  }
  return { exposed, bindings };
}

/** The engine's container spec for a target service. */
export function containerSpec(ctx: EngineContext, app: TargetApp, service: TargetService, engineImageId: string): ContainerCreateSpec {
  const c = service.config;
  const hash = serviceConfigHash(app, service, engineImageId);
  const features = featureBinds(ctx, c.labels);
  const env: Record<string, string> = {
    ...c.environment,
    ...features.env,
    BALENA: '1', RESIN: '1', SKIFF: '1',
    BALENA_APP_ID: String(app.appId), BALENA_APP_NAME: app.name, BALENA_APP_COMMIT: app.commit,
    BALENA_SERVICE_NAME: service.serviceName, BALENA_DEVICE_UUID: ctx.uuid, BALENA_DEVICE_TYPE: ctx.deviceType,
    BALENA_DEVICE_ARCH: ctx.arch, BALENA_DEVICE_NAME_AT_INIT: ctx.deviceName,
    BALENA_SUPERVISOR_ADDRESS: ctx.apiAddress, BALENA_SUPERVISOR_HOST: new URL(ctx.apiAddress).hostname,
    BALENA_SUPERVISOR_PORT: new URL(ctx.apiAddress).port, BALENA_SUPERVISOR_VERSION: '17.0.0',
    RESIN_APP_ID: String(app.appId), RESIN_APP_NAME: app.name, RESIN_SERVICE_NAME: service.serviceName,
    RESIN_DEVICE_UUID: ctx.uuid, RESIN_DEVICE_TYPE: ctx.deviceType, RESIN_SUPERVISOR_ADDRESS: ctx.apiAddress,
    SKIFF_APP_ID: String(app.appId), SKIFF_APP_NAME: app.name, SKIFF_SERVICE_NAME: service.serviceName,
    SKIFF_DEVICE_UUID: ctx.uuid, SKIFF_DEVICE_TYPE: ctx.deviceType, SKIFF_DEVICE_ARCH: ctx.arch, SKIFF_AGENT_ADDRESS: ctx.apiAddress,
  };
  const lockDir = serviceLockDir(ctx, app, service); // made by the create executor
  const { exposed, bindings } = portBindings(c.ports, c.expose ?? []);
  const networkMode = c.networkMode ?? networkName(ctx, app.appId, c.networks[0] ?? 'default');
  const restart = c.restart.split(':');
  const hc = c.healthcheck;
  const ns = (s?: number) => (s === undefined ? undefined : Math.round(s * 1e9));
  // Only the keys the release sets: an absent one keeps the engine's (or the image's) default.
  const defined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
  return {
    name: `${service.serviceName}_${hash.slice(0, 8)}_${short(ctx.uuid)}`,
    Image: c.image,
    Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    Labels: {
      ...c.labels,
      [LABEL.agent]: ctx.uuid,
      [LABEL.supervised]: 'true',
      [LABEL.appId]: String(app.appId),
      [LABEL.serviceId]: String(service.serviceId),
      [LABEL.serviceName]: service.serviceName,
      [LABEL.commit]: app.commit,
      [LABEL.releaseId]: app.releaseId,
      [LABEL.configHash]: hash,
      [LABEL.target]: JSON.stringify({ app: { name: app.name, commit: app.commit, releaseId: app.releaseId, volumes: app.volumes, networks: app.networks, services: app.services.map((s) => s.serviceName) }, service: service.raw ?? {} }),
    },
    ExposedPorts: exposed,
    ...defined({
      Cmd: c.command,
      Entrypoint: c.entrypoint,
      WorkingDir: c.workingDir,
      User: c.user,
      Hostname: c.hostname,
      Domainname: c.domainname,
      MacAddress: c.macAddress,
      Tty: c.tty,
      OpenStdin: c.stdinOpen,
      StopSignal: c.stopSignal,
      // The engine's own stop uses this, so a kill honours the service's stop_grace_period.
      StopTimeout: c.stopGracePeriodSeconds === undefined ? undefined : Math.ceil(c.stopGracePeriodSeconds),
      Healthcheck: hc ? { Test: hc.test, Interval: ns(hc.intervalSeconds), Timeout: ns(hc.timeoutSeconds), Retries: hc.retries, StartPeriod: ns(hc.startPeriodSeconds) } : undefined,
    }),
    HostConfig: {
      Binds: [
        ...c.volumes.filter((v) => v.includes(':')).map((v) => {
          const [name, target, mode] = v.split(':');
          return `${volumeName(ctx, app.appId, name ?? '')}:${target}${mode ? `:${mode}` : ''}`;
        }),
        `${lockDir}:/tmp/balena`,
        `${lockDir}:/tmp/resin`,
        ...features.binds,
      ],
      Tmpfs: Object.fromEntries(c.tmpfs.map((t) => {
        const colon = t.indexOf(':');
        return colon < 0 ? [t, ''] : [t.slice(0, colon), t.slice(colon + 1)];
      })),
      PortBindings: bindings,
      RestartPolicy: { Name: restart[0] ?? 'always', ...(restart[1] ? { MaximumRetryCount: Number(restart[1]) } : {}) },
      Privileged: c.privileged,
      CapAdd: c.capAdd,
      CapDrop: c.capDrop,
      Devices: c.devices.map((d) => {
        const [host, container = host, perms = 'rwm'] = d.split(':');
        return { PathOnHost: host ?? '', PathInContainer: container ?? '', CgroupPermissions: perms };
      }),
      NetworkMode: networkMode,
      ...defined({
        DeviceCgroupRules: c.deviceCgroupRules,
        Memory: c.memLimitBytes,
        MemoryReservation: c.memReservationBytes,
        ShmSize: c.shmSizeBytes,
        NanoCpus: c.nanoCpus,
        CpuShares: c.cpuShares,
        CpuQuota: c.cpuQuotaMicroseconds,
        CpusetCpus: c.cpuset,
        PidsLimit: c.pidsLimit,
        CgroupParent: c.cgroupParent,
        Sysctls: c.sysctls,
        Ulimits: c.ulimits && Object.entries(c.ulimits).map(([Name, { soft, hard }]) => ({ Name, Soft: soft, Hard: hard })),
        Dns: c.dns,
        DnsSearch: c.dnsSearch,
        DnsOptions: c.dnsOptions,
        ExtraHosts: c.extraHosts,
        ReadonlyRootfs: c.readOnly,
        SecurityOpt: c.securityOpt,
        IpcMode: c.ipc,
        PidMode: c.pid,
        Init: c.init,
        OomKillDisable: c.oomKillDisable,
        OomScoreAdj: c.oomScoreAdj,
        GroupAdd: c.groupAdd,
        LogConfig: c.logging && { Type: c.logging.driver ?? '', Config: c.logging.options },
        Runtime: c.runtime,
        UsernsMode: c.usernsMode,
      }),
    },
    ...(networkMode.startsWith(short(ctx.uuid))
      ? { NetworkingConfig: { EndpointsConfig: { [networkMode]: { Aliases: [service.serviceName, ...(c.networkAliases ?? [])] } } } }
      : {}),
  };
}

export type StepLog = (message: string) => void;

/** The step of one action, e.g. `StepOf<'create'>` is `{ action: 'create'; app; service }`. */
export type StepOf<K extends StepAction> = Extract<Step, { action: K }>;

/** Runs one kind of step. Throws on failure; the loop backs off and plans again. */
export type Executor<K extends StepAction> = (ctx: EngineContext, step: StepOf<K>, current: CurrentState, log: StepLog) => Promise<void>;

/** Stops a container within its StopTimeout (stop_grace_period, else 10 s); 304 means it was already stopped. */
export async function stopContainer(ctx: EngineContext, container: CurrentContainer): Promise<void> {
  await ctx.docker.getContainer(container.containerId).stop().catch((err: { statusCode?: number }) => {
    if (err.statusCode !== 304) throw err;
  });
}

/**
 * One executor per step kind, checked by the compiler: a kind added to the Step union without an
 * executor here does not build (a `switch` in a function returning void would let it do nothing).
 */
export const EXECUTORS = {
  fetch: async ({ docker }, step, current, log) => {
    if (current.images[step.image]) return;
    log(`Downloading image '${step.image}'`);
    try {
      await docker.pull(step.image);
    } catch (err) {
      throw new Error(`image '${step.image}' is not on the engine and could not be pulled: ${(err as Error).message}`);
    }
  },
  createVolume: async (ctx, step, _current, log) => {
    await ctx.docker.createVolume({ Name: volumeName(ctx, step.appId, step.name), Labels: { [LABEL.agent]: ctx.uuid, [LABEL.appId]: String(step.appId) } });
    log(`Creating volume '${step.name}'`);
  },
  createNetwork: async (ctx, step, _current, log) => {
    await ctx.docker.createNetwork({ Name: networkName(ctx, step.appId, step.name), Driver: 'bridge', CheckDuplicate: true, Labels: { [LABEL.agent]: ctx.uuid, [LABEL.appId]: String(step.appId) } });
    log(`Creating network '${step.name}'`);
  },
  removeVolume: async (ctx, step, _current, log) => {
    await ctx.docker.getVolume(volumeName(ctx, step.appId, step.name)).remove();
    log(`Removing volume '${step.name}'`);
  },
  removeNetwork: async (ctx, step, _current, log) => {
    await ctx.docker.getNetwork(networkName(ctx, step.appId, step.name)).remove();
    log(`Removing network '${step.name}'`);
  },
  stop: async (ctx, step, _current, log) => {
    log(`Stopping service '${step.container.serviceName}'`);
    await stopContainer(ctx, step.container);
    log(`Stopped service '${step.container.serviceName}'`);
  },
  kill: async (ctx, step, _current, log) => {
    // A kill is the engine's stop too: the service gets its stop signal and grace period first.
    log(`Killing service '${step.container.serviceName}'`);
    await stopContainer(ctx, step.container);
    log(`Killed service '${step.container.serviceName}'`);
  },
  remove: async ({ docker }, step, current, log) => {
    await docker.getContainer(step.container.containerId).remove({ force: true, v: false });
    if (step.deleteImage && !current.containers.some((c) => c.containerId !== step.container.containerId && c.imageId === step.container.imageId)) {
      // The engine refuses while any container (ours or not) still uses it: then it stays.
      await docker.getImage(step.container.imageId).remove({ force: false }).then(
        () => log(`Deleted the old image of service '${step.container.serviceName}'`),
        () => {},
      );
    }
  },
  create: async (ctx, step, current, log) => {
    const engineImageId = current.images[step.service.config.image] ?? '';
    log(`Installing service '${step.service.serviceName}'`);
    const lockDir = serviceLockDir(ctx, step.app, step.service);
    // The container binds its lock folder; made here so that building the spec stays free of I/O.
    mkdirSync(lockDir, { recursive: true });
    // A hand-over is signalled by the new container: anything left from the last one is stale.
    for (const f of HANDOVER_FILES) rmSync(path.join(lockDir, f), { force: true });
    await ctx.docker.createContainer(containerSpec(ctx, step.app, step.service, engineImageId));
    log(`Installed service '${step.service.serviceName}'`);
  },
  start: async ({ docker }, step, _current, log) => {
    log(`Starting service '${step.container.serviceName}'`);
    await docker.getContainer(step.container.containerId).start().catch((err: { statusCode?: number }) => {
      if (err.statusCode !== 304) throw err; // already running
    });
    log(`Started service '${step.container.serviceName}'`);
  },
  // A wait the planner reports (an update lock, a hand-over): the loop sleeps instead of running it.
  noop: async () => {},
} satisfies { [K in StepAction]: Executor<K> };

/** Runs one step with its kind's executor. Throws on failure; the loop backs off and plans again. */
export function execute<K extends StepAction>(ctx: EngineContext, step: StepOf<K>, current: CurrentState, log: StepLog): Promise<void> {
  // TypeScript cannot correlate the table's entry with the step's own kind; the table's type above is the check.
  const run = EXECUTORS[step.action as K] as Executor<K>;
  return run(ctx, step, current, log);
}

/** Removes an app's volumes (purge); its containers must be gone. */
export async function removeAppVolumes(ctx: EngineContext, current: CurrentState, appId: number): Promise<void> {
  for (const v of current.volumes.filter((x) => x.appId === appId)) {
    await ctx.docker.getVolume(volumeName(ctx, appId, v.name)).remove();
  }
}

/**
 * Rebuilds a local-mode target state from the labels of the containers this agent runs (newest
 * container per service), for when the database is missing or corrupt. Undefined when none run.
 */
export async function targetFromContainers(ctx: EngineContext): Promise<unknown> {
  const containers = await ctx.docker.listContainers({ all: true, filters: { label: [`${LABEL.agent}=${ctx.uuid}`] } });
  type AppMeta = { name: string; commit: string; releaseId: string; volumes: unknown; networks: unknown; services?: string[] };
  const apps: Record<string, { meta: AppMeta; services: Map<string, { id: string; raw: Record<string, unknown> }> }> = {};
  // Oldest first: the newest container's release describes the app. A service whose image did not
  // change keeps its container from an older release, so each service takes its newest container.
  for (const c of [...containers].sort((a, b) => a.Created - b.Created)) {
    const l = c.Labels ?? {};
    let meta: { app?: AppMeta; service?: Record<string, unknown> };
    try {
      meta = JSON.parse(l[LABEL.target] ?? '') as typeof meta;
    } catch {
      continue;
    }
    if (!meta.app || !meta.service) continue;
    const appId = l[LABEL.appId] ?? '1';
    const app = (apps[appId] ??= { meta: meta.app, services: new Map() });
    app.meta = meta.app;
    const name = l[LABEL.serviceName] ?? '';
    app.services.set(name, { id: l[LABEL.serviceId] ?? String(app.services.size + 1), raw: meta.service });
  }
  if (Object.keys(apps).length === 0) return undefined;
  const out: Record<string, unknown> = {};
  for (const [appId, { meta, services }] of Object.entries(apps)) {
    // The release's own service list, where the label has one, leaves out services it removed.
    const names = meta.services ?? [...services.keys()];
    const { services: _list, ...app } = meta;
    out[appId] = { ...app, services: Object.fromEntries(names.flatMap((n) => { const s = services.get(n); return s ? [[s.id, s.raw]] : []; })) };
  }
  return { local: { name: ctx.deviceName, config: {}, apps: out }, dependent: { apps: {}, devices: {} } };
}
