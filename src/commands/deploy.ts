import process from 'node:process';
import { Args, Flags } from '@oclif/core';
import { CloudCommand, short } from '../cli/cloud.js';
import { builderFlags, builderRequest, engineFlags, parseKeyValues } from '../cli/flags.js';
import type { Release } from '../lib/api/resources.js';

export default class Deploy extends CloudCommand<Release> {
  static override summary = "Build a project here and deploy it as a new release of a fleet.";
  static override description = `Builds the project in --source for the fleet's device type on the local Docker engine (or, without --build, uses the images 'skiff build' made, when they are all there for that architecture), creates the release on the server, pushes each service's image to the server's registry with your token, and then makes the release final: devices tracking the fleet's latest release get it.

A project that does not build creates no release. A failed or interrupted (Ctrl-C) push marks the release failed: devices never see a release whose images are not all in the registry. --draft keeps the release a draft ('skiff release finalize' makes it final). When the project is in a git repository, the release is stamped with its current commit ('skiff release info' shows it), and deploy warns when the tree has uncommitted changes. With --json, stdout holds the release.`;
  static override examples = [
    '<%= config.bin %> deploy kiosks',
    '<%= config.bin %> deploy kiosks --source ./app --build --release-tag version 1.2 --note "new menu"',
    '<%= config.bin %> deploy kiosks --draft --json',
  ];
  static override args = { fleet: Args.string({ description: 'Fleet name.', required: true, ignoreStdin: true }) };
  static override flags = {
    source: Flags.string({ char: 's', description: 'Project folder.', default: '.' }),
    build: Flags.boolean({ char: 'b', description: "Build the images even when 'skiff build' made them already." }),
    draft: Flags.boolean({ description: "Leave the release a draft: devices don't get it until 'skiff release finalize'." }),
    'release-tag': Flags.string({ description: 'Tag the release: pairs of key and value, e.g. --release-tag version 1.2 qa "".', multiple: true }),
    note: Flags.string({ description: 'Notes for the release.' }),
    semver: Flags.string({ description: 'A version for the release, e.g. 1.4.0.' }),
    nocache: Flags.boolean({ description: "Don't use the layer cache." }),
    projectName: Flags.string({ char: 'n', description: 'Name prefix for the images (default: the folder name).' }),
    'multi-dockerignore': Flags.boolean({ char: 'm', description: 'Each service uses the .dockerignore in its own build context.' }),
    'noparent-check': Flags.boolean({ description: "Don't fail when the parent folder has a docker-compose.yml but the source has none." }),
    buildArg: Flags.string({ char: 'B', description: 'Build argument for every service, NAME=value (repeatable).', multiple: true }),
    logs: Flags.boolean({ description: 'Show every line of build output (on a terminal, BuildKit builds show a compact live view per service instead).', exclusive: ['nologs'] }),
    nologs: Flags.boolean({ description: 'Hide build output.' }),
    ...builderFlags,
    ...engineFlags,
  };

  async run(): Promise<Release> {
    const { args, flags } = await this.parse(Deploy);
    const [{ deploy, parseReleaseTags }, { BuildRenderer }, { PushProgressRenderer }] = await Promise.all([
      import('../lib/cloud/deploy.js'), import('../ui/build-renderer.js'), import('../ui/push-progress.js'),
    ]);
    const tags = parseReleaseTags(flags['release-tag']);
    const buildArgs = parseKeyValues(flags.buildArg, 'buildArg');
    const out = await this.output();
    const builds = new BuildRenderer(out, {
      showLogs: !this.jsonEnabled() && !flags.nologs,
      live: !this.jsonEnabled() && !flags.logs && !flags.nologs && out.terminal.stderrIsTTY,
    });
    const { parseSecretFlags } = await import('../lib/builder/secrets.js');
    const secrets = parseSecretFlags(flags.secret, process.env);
    const pushes = new PushProgressRenderer(out);
    try {
      const result = await this.cancellable(async (signal) => deploy({
        client: await this.cloud({ signal }),
        fleet: args.fleet,
        source: flags.source,
        build: flags.build,
        draft: flags.draft,
        tags,
        ...(flags.note ? { notes: flags.note } : {}),
        ...(flags.semver ? { semver: flags.semver } : {}),
        engine: { docker: flags.docker, dockerHost: flags.dockerHost, dockerPort: flags.dockerPort, ca: flags.ca, cert: flags.cert, key: flags.key },
        projectName: flags.projectName,
        noParentCheck: flags['noparent-check'],
        multiDockerignore: flags['multi-dockerignore'],
        nocache: flags.nocache,
        buildArgs,
        builder: builderRequest(flags.buildkit),
        secrets,
        signal,
        onEvent: (e) => {
          switch (e.kind) {
            case 'deploy': out.info(out.chalk.dim(e.message)); return;
            case 'push-start': pushes.start(e.service, e.image); return;
            case 'push-progress': pushes.progress(e.service, e.bytes, e.total); return;
            case 'push-done': pushes.done(e.service, e.digest); return;
            default:
              if (e.kind === 'warning') this.warnings.push(e.message);
              builds.event(e);
          }
        },
      }), () => out.info('Stopping the deploy (Ctrl-C again to quit at once)...'));
      const r = result.release;
      out.info(out.chalk.green(`Release ${short(r.commit)} of fleet ${r.fleet} is ${r.isFinal ? 'final: devices tracking the fleet get it' : "a draft: 'skiff release finalize' makes it final"}.`));
      out.result(r.commit);
      return r;
    } finally {
      builds.stop();
      pushes.stop();
    }
  }
}
