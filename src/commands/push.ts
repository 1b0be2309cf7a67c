import process from 'node:process';
import { Args, Flags, type Interfaces } from '@oclif/core';
import { CloudCommand } from '../cli/cloud.js';
import { builderFlags, builderRequest } from '../cli/flags.js';
import { SkiffError } from '../lib/errors/errors.js';
import type { Build } from '../lib/api/builds.js';
import type { Release } from '../lib/api/resources.js';
import type { PushResult, PushSession } from '../lib/device/push.js';

/** Flags that only mean something for one of the two paths: given for the other, they are an error rather than ignored. */
const DEVICE_ONLY = ['service', 'system', 'env', 'force', 'nolive', 'projectName', 'dockerHost', 'dockerPort', 'logs'] as const;
const FLEET_ONLY = ['draft', 'release-tag', 'note'] as const;

type PushFlags = Interfaces.InferredFlags<typeof Push.flags>;

export default class Push extends CloudCommand<PushResult | Release | Build> {
  static override summary = 'Push a project to a fleet (the server builds it and makes a release) or to a device on the LAN (built and run there).';
  static override description = `The argument decides, as balena's does: an IP address or a .local name (optionally with :port) is a device on the LAN; anything else is a fleet on the skiff server you are logged in to (--fleet names a fleet explicitly).

To a fleet: the project is checked as 'skiff build' would (compose file, Dockerfiles for the fleet's device type), packed as a tar (.dockerignore applied, never .git) and uploaded; the server builds every service for the fleet's architecture, pushes the images to its registry and makes the release, which devices tracking the fleet start running at once (--draft keeps it a draft). The build's output streams here live; a dropped connection re-attaches by itself without repeating or losing lines, and 'skiff build-logs BUILD' shows any build's output later. --detached returns once the upload is done. Ctrl-C before the release is made cancels the build on the server (no release); after, the release stands. The release is stamped with the project's git commit, and push says when the tree has uncommitted changes. Several pushes to one fleet build one after the other.

To a device: checks the device (a skiff agent, or a balenaOS development device in local mode), builds the project on the device's own engine (port 2375), sets the device's target state, waits until every service runs, then streams the device's logs until Ctrl-C (unless --detached). If a build fails, nothing is sent and the device keeps running its current release. If the new release does not come up (a service exits or turns unhealthy), the agent goes back to the previous release and push says so.`;
  static override examples = [
    '<%= config.bin %> push kiosks',
    '<%= config.bin %> push kiosks --source ./myproject --release-tag version 1.2 --note "new menu"',
    '<%= config.bin %> push --fleet 10.0.0.1-lab --detached --json',
    '<%= config.bin %> push 192.168.1.23',
    '<%= config.bin %> push mydevice.local --source ./myproject --env GREETING=hi --env web:PORT=8080',
    '<%= config.bin %> push 127.0.0.1:48484 --detached --json',
  ];
  static override args = { fleetOrDevice: Args.string({ description: 'Fleet name, or device address (IP or .local name, optionally :port of the device API).', ignoreStdin: true }) };
  static override flags = {
    fleet: Flags.string({ description: 'Push to this fleet, whatever its name looks like.' }),
    source: Flags.string({ char: 's', description: 'Project folder.', default: '.' }),
    detached: Flags.boolean({ char: 'd', description: "Fleet: return once the upload is done (the build goes on). Device: don't stream the device's logs after the push." }),
    nocache: Flags.boolean({ char: 'c', description: "Don't use the layer cache." }),
    pull: Flags.boolean({ description: 'Pull base images again.' }),
    'multi-dockerignore': Flags.boolean({ char: 'G', description: 'Each service uses the .dockerignore in its own build context.' }),
    'noparent-check': Flags.boolean({ description: "Don't fail when the parent folder has a docker-compose.yml but the source has none." }),
    draft: Flags.boolean({ description: "Fleet: leave the release a draft: devices don't get it until 'skiff release finalize'." }),
    'release-tag': Flags.string({ description: 'Fleet: tag the release: pairs of key and value, e.g. --release-tag version 1.2 qa "".', multiple: true }),
    note: Flags.string({ description: 'Fleet: notes for the release.' }),
    service: Flags.string({ description: 'Device: only show logs of this service (repeatable).', multiple: true }),
    system: Flags.boolean({ description: 'Device: only show system logs.' }),
    env: Flags.string({ description: 'Device: environment variable KEY=VALUE for every service, or service:KEY=VALUE for one (repeatable).', multiple: true }),
    force: Flags.boolean({ char: 'f', description: 'Device: replace the running release even while a service holds an update lock.' }),
    nolive: Flags.boolean({ description: "Device: don't watch the project for changes while streaming logs (live updates: a saved file is synced into its service's container, which restarts; a change a RUN step or the Dockerfile depends on rebuilds that service alone)." }),
    projectName: Flags.string({ char: 'n', description: 'Device: name prefix for the images (default: the folder name).' }),
    dockerHost: Flags.string({ description: "Device: the device's engine address (default: the device's address)." }),
    dockerPort: Flags.integer({ description: "Device: the device's engine port (default 2375).", min: 1, max: 65535 }),
    logs: Flags.boolean({ description: "Device: show every line of build output (on a terminal, BuildKit builds show a compact live view per service instead)." }),
    ...builderFlags,
  };

  async run(): Promise<PushResult | Release | Build> {
    const { args, flags } = await this.parse(Push);
    if (flags.fleet !== undefined && args.fleetOrDevice !== undefined) {
      throw new SkiffError('usage', `name the fleet once: either as the argument or with --fleet (got '${args.fleetOrDevice}' and --fleet ${flags.fleet})`);
    }
    const target = flags.fleet ?? args.fleetOrDevice;
    if (target === undefined) throw new SkiffError('usage', 'push needs a fleet name or a device address', { hint: 'e.g. skiff push myfleet, or skiff push 192.168.1.23' });
    const { pushTargetKind } = await import('../lib/cloud/remote-build.js');
    const kind = flags.fleet !== undefined ? 'fleet' : pushTargetKind(target);
    const wrong = (kind === 'fleet' ? DEVICE_ONLY : FLEET_ONLY).filter((f) => flags[f] !== undefined && flags[f] !== false);
    if (wrong.length > 0) {
      const what = kind === 'fleet' ? `'${target}' is a fleet name (a device is an IP address or a .local name)` : `'${target}' is a device address`;
      throw new SkiffError('usage', `--${wrong[0]} applies to a push to a ${kind === 'fleet' ? 'device' : 'fleet'}, and ${what}`);
    }
    if (kind === 'fleet' && flags.secret !== undefined) {
      throw new SkiffError('usage', `--secret applies to a push to a device: a fleet's build runs on the server`, {
        hint: 'declare the secret in balena.yml build-secrets (files under .balena/secrets go with the upload and never into an image or the release)',
      });
    }
    return kind === 'fleet' ? this.toFleet(target, flags) : this.toDevice(target, flags);
  }

  private async toFleet(fleet: string, flags: PushFlags): Promise<Release | Build> {
    const [{ pushToFleet }, { parseReleaseTags }, { RemoteBuildRenderer }] = await Promise.all([
      import('../lib/cloud/remote-build.js'), import('../lib/cloud/deploy.js'), import('../ui/remote-build-renderer.js'),
    ]);
    const tags = parseReleaseTags(flags['release-tag']);
    const out = await this.output();
    const renderer = new RemoteBuildRenderer(out, { showLogs: !this.jsonEnabled() });
    try {
      const result = await this.cancellable(async (signal) => pushToFleet({
        client: await this.cloud(),
        fleet,
        source: flags.source,
        draft: flags.draft,
        nocache: flags.nocache,
        pull: flags.pull,
        ...(flags.note ? { notes: flags.note } : {}),
        tags,
        multiDockerignore: flags['multi-dockerignore'],
        noParentCheck: flags['noparent-check'],
        builder: builderRequest(flags.buildkit),
        detached: flags.detached,
        signal,
        onEvent: (e) => {
          const warning = renderer.push(e);
          if (warning) this.warnings.push(warning);
        },
      }));
      if (!result.release) {
        renderer.stop();
        out.info(`The build goes on on the server: 'skiff build-logs ${result.build.id.slice(0, 7)} --follow' shows it.`);
        out.result(result.build.id);
        return result.build;
      }
      renderer.summary(result.release);
      return result.release;
    } finally {
      renderer.stop();
    }
  }

  private async toDevice(device: string, flags: PushFlags): Promise<PushResult> {
    const out = await this.output();
    const [{ openPushSession, deploy }, { BuildRenderer }, { table }] = await Promise.all([import('../lib/device/push.js'), import('../ui/build-renderer.js'), import('../ui/format.js')]);
    // Build output goes to the current renderer: the push's, then one for live rebuilds.
    let renderer = new BuildRenderer(out, { showLogs: !this.jsonEnabled(), live: !this.jsonEnabled() && !flags.logs && out.terminal.stderrIsTTY });
    const { parseSecretFlags } = await import('../lib/builder/secrets.js');
    const secrets = parseSecretFlags(flags.secret, process.env);
    let result: PushResult;
    let session: PushSession;
    try {
      [session, result] = await this.cancellable(async (signal) => {
        const opened = await openPushSession({
          device: device,
          source: flags.source,
          env: flags.env,
          force: flags.force,
          nocache: flags.nocache,
          pull: flags.pull,
          multiDockerignore: flags['multi-dockerignore'],
          noParentCheck: flags['noparent-check'],
          projectName: flags.projectName,
          dockerHost: flags.dockerHost,
          dockerPort: flags.dockerPort,
          builder: builderRequest(flags.buildkit),
          secrets,
          signal,
          onEvent: (e) => {
            if (e.kind === 'device') out.info(out.chalk.dim(e.message));
            else {
              if (e.kind === 'warning') this.warnings.push(e.message);
              renderer.event(e);
            }
          },
        });
        return [opened, await deploy(opened)] as const;
      });
    } finally {
      renderer.stop();
    }
    out.result(table(['SERVICE', 'IMAGE', 'STATUS'], result.services.map((s) => [s.service, s.image, s.status]), (h) => out.chalk.bold(h)));
    out.info(out.chalk.green(`Release ${result.commit} runs on ${result.device} (${result.deviceType}).`));
    if (!flags.detached && !this.jsonEnabled()) {
      const [{ DeviceClient, parseDeviceAddress }, { streamLogs }, { logLineFormatter }, { watchAndUpdate }] = await Promise.all([
        import('../lib/device/client.js'), import('../lib/device/logs.js'), import('../ui/log-line.js'), import('../lib/device/live.js'),
      ]);
      const live = !flags.nolive;
      out.info(out.chalk.dim(`Streaming device logs${live ? ' and watching for changes' : ''} (Ctrl-C to stop; the release keeps running)...`));
      const format = logLineFormatter(out.chalk);
      renderer = new BuildRenderer(out, { showLogs: true });
      // Ctrl-C ends following (and watching): a normal stop; the release keeps running.
      await this.cancellable((signal) => Promise.all([
        streamLogs(new DeviceClient(parseDeviceAddress(device)), {
          follow: true, services: flags.service, system: flags.system, signal,
          onEntry: (e) => process.stdout.write(`${format(e)}\n`),
          onReconnect: (n, reason) => out.info(out.chalk.yellow(`Log stream dropped (${reason}); reconnecting (attempt ${n})...`)),
        }),
        live && watchAndUpdate(session, {
          signal,
          onEvent: (e) => {
            if (e.kind === 'live') out.info(`${out.chalk.cyan('[Live]')} ${e.message}`);
            else if (e.kind === 'live-error') out.info(`${out.chalk.cyan('[Live]')} ${out.chalk.red(e.message)}`);
            else out.info(`${out.chalk.cyan('[Live]')} ${out.chalk.dim(`done in ${e.seconds.toFixed(2)} s`)}`);
          },
        }),
      ]));
      renderer.stop();
    }
    return result;
  }
}
