import process from 'node:process';
import { Args, Flags } from '@oclif/core';
import { SkiffCommand } from '../cli/base-command.js';
import type { PushResult, PushSession } from '../lib/device/push.js';

export default class Push extends SkiffCommand<PushResult> {
  static override summary = 'Build a project on a device and run it there, then show its logs.';
  static override description = `Checks the device (a skiff agent, or a balenaOS development device in local mode), builds the project on the device's own engine (port 2375), sets the device's target state, waits until every service runs, then streams the device's logs until Ctrl-C (unless --detached).

If a build fails, nothing is sent and the device keeps running its current release. If the new release does not come up (a service exits or turns unhealthy), the agent goes back to the previous release and push says so.`;
  static override examples = [
    '<%= config.bin %> push 192.168.1.23',
    '<%= config.bin %> push mydevice.local --source ./myproject --env GREETING=hi --env web:PORT=8080',
    '<%= config.bin %> push 127.0.0.1:48484 --detached --json',
  ];
  static override args = { device: Args.string({ description: 'Device address (IP or hostname, optionally :port of the device API).', required: true }) };
  static override flags = {
    source: Flags.string({ char: 's', description: 'Project folder.', default: '.' }),
    detached: Flags.boolean({ char: 'd', description: "Don't stream the device's logs after the push." }),
    service: Flags.string({ description: 'Only show logs of this service (repeatable).', multiple: true }),
    system: Flags.boolean({ description: 'Only show system logs.' }),
    env: Flags.string({ description: 'Environment variable KEY=VALUE for every service, or service:KEY=VALUE for one (repeatable).', multiple: true }),
    force: Flags.boolean({ char: 'f', description: 'Replace the running release even while a service holds an update lock.' }),
    nocache: Flags.boolean({ char: 'c', description: "Don't use the layer cache." }),
    pull: Flags.boolean({ description: 'Pull base images again.' }),
    'multi-dockerignore': Flags.boolean({ char: 'G', description: 'Each service uses the .dockerignore in its own build context.' }),
    nolive: Flags.boolean({ description: "Don't watch the project for changes while streaming logs (live updates: a saved file is synced into its service's container, which restarts; a change a RUN step or the Dockerfile depends on rebuilds that service alone)." }),
    'noparent-check': Flags.boolean({ description: "Don't fail when the parent folder has a docker-compose.yml but the source has none." }),
    projectName: Flags.string({ char: 'n', description: 'Name prefix for the images (default: the folder name).' }),
    dockerHost: Flags.string({ description: "The device's engine address (default: the device's address)." }),
    dockerPort: Flags.integer({ description: "The device's engine port (default 2375).", min: 1, max: 65535 }),
  };

  async run(): Promise<PushResult> {
    const { args, flags } = await this.parse(Push);
    const out = await this.output();
    const [{ openPushSession, deploy }, { BuildRenderer }, { table }] = await Promise.all([import('../lib/device/push.js'), import('../ui/build-renderer.js'), import('../ui/format.js')]);
    // Build output goes to the current renderer: the push's, then one for live rebuilds.
    let renderer = new BuildRenderer(out, { showLogs: !this.jsonEnabled() });
    let result: PushResult;
    let session: PushSession;
    try {
      [session, result] = await this.cancellable(async (signal) => {
        const opened = await openPushSession({
          device: args.device,
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
        streamLogs(new DeviceClient(parseDeviceAddress(args.device)), {
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
