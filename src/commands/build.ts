import process from 'node:process';
import { Args, Flags } from '@oclif/core';
import { SkiffCommand } from '../cli/base-command.js';
import { builderFlags, builderRequest, engineFlags, parseKeyValues } from '../cli/flags.js';
import type { ResolveBuildOptions, ResolvedBuild } from '../lib/builder/build-project.js';
import type { ReleaseManifest } from '../lib/builder/release.js';

export default class Build extends SkiffCommand<ReleaseManifest | ResolvedBuild> {
  static override summary = 'Build a project into a release for a device type, on a local or remote Docker engine.';
  static override description = `Builds every service of the project in [source] (a folder with docker-compose.yml, or a single Dockerfile / Dockerfile.template) for one device type or architecture, in parallel, on a Docker engine. Images are tagged <project>_<service>:<tag>, as balena does.

Dockerfiles are chosen the balena way (Dockerfile.<deviceType>, Dockerfile.<arch>, Dockerfile.template, Dockerfile) and templates get %%BALENA_MACHINE_NAME%%, %%BALENA_ARCH%%, %%BALENA_SERVICE_NAME%%, %%BALENA_APP_NAME%% and %%BALENA_RELEASE_HASH%%. balena.yml build-variables become build args, and every build gets BuildKit's automatic platform args (TARGETARCH, TARGETPLATFORM, BUILDPLATFORM…) as buildx sets them. Building for another architecture runs RUN steps under qemu emulation (see --emulated).

The project's .dockerignore applies to every service in the project folder; with --multi-dockerignore each service uses the one in its own build context (or none), and a build context outside the project folder always uses its own. A Dockerfile the .dockerignore lists is still built, as docker does; COPY does not see it (when that Dockerfile needs nothing of BuildKit, the classic builder is used to keep it so; with BuildKit, COPY sees it and a warning says so). .git and .balena/secrets are never sent.

BuildKit builds whenever the engine has it (--no-buildkit or DOCKER_BUILDKIT=0: the classic builder): cache and secret mounts, heredocs, COPY --chmod/--link. Build secrets come from balena.yml build-secrets (files in .balena/secrets) and --secret, and never enter an image. On a terminal, BuildKit builds show a compact live view per service (--logs prints every line).

The compose file's \${VAR}, \${VAR:-default} and the other compose forms are filled in from the environment and the project's .env before anything is checked. --dry-run prints the project as skiff reads it (services after substitution, image tags, the Dockerfile each service uses and why, build args) and builds nothing, as 'docker compose config' does.`;
  static override examples = [
    '<%= config.bin %> build --deviceType raspberrypi4-64',
    '<%= config.bin %> build ./myproject --arch aarch64 --emulated',
    '<%= config.bin %> build --deviceType intel-nuc --tag v1.2 --json > release.json',
    '<%= config.bin %> build --deviceType raspberrypi3 --dockerHost 192.168.1.23 --dockerPort 2375',
    '<%= config.bin %> build --deviceType raspberrypi4-64 --dry-run',
  ];
  static override args = {
    // Never read from piped stdin: that is `--secret id=x,src=/dev/stdin`'s.
    source: Args.string({ description: 'Project folder (default: the current folder).', default: '.', ignoreStdin: true }),
  };
  static override flags = {
    arch: Flags.string({ char: 'A', description: 'Architecture to build for (rpi, armv7hf, aarch64, amd64, i386).' }),
    deviceType: Flags.string({ char: 'd', description: "Device type to build for, e.g. raspberrypi4-64 ('skiff devices supported' lists them)." }),
    emulated: Flags.boolean({ char: 'e', description: 'Register qemu emulation (binfmt_misc, needs root) when building for another architecture and it is missing.' }),
    dockerfile: Flags.string({ description: 'Alternative Dockerfile name/path, relative to the source folder (single-Dockerfile projects).' }),
    logs: Flags.boolean({ description: "Show every line of build output (the default off a terminal; on one, BuildKit builds show a compact live view per service instead; with --json, print it to stderr)." }),
    nologs: Flags.boolean({ description: 'Hide build output; show only each service starting and finishing.', exclusive: ['logs'] }),
    'multi-dockerignore': Flags.boolean({ char: 'm', description: 'Each service uses the .dockerignore in its own build context.' }),
    'noparent-check': Flags.boolean({ description: "Don't fail when the parent folder has a docker-compose.yml but the source has none." }),
    'registry-secrets': Flags.string({ char: 'R', description: 'YAML or JSON file with credentials for private registries: {"host": {"username": "u", "password": "p"}}.' }),
    'noconvert-eol': Flags.boolean({ description: "Don't convert CRLF line endings to LF in Dockerfiles." }),
    projectName: Flags.string({ char: 'n', description: "Name prefix for the images: the 'project' in project_service:tag (default: the folder name)." }),
    tag: Flags.string({ char: 't', description: "Tag for the images: the 'tag' in project_service:tag.", default: 'latest' }),
    buildArg: Flags.string({ char: 'B', description: "Build argument for every service, NAME=value (repeatable).", multiple: true }),
    'cache-from': Flags.string({ description: 'Comma-separated images to use as layer cache sources.' }),
    nocache: Flags.boolean({ description: "Don't use the layer cache." }),
    pull: Flags.boolean({ description: 'Pull base images again even if they are on the engine.' }),
    squash: Flags.boolean({ description: 'Squash the new layers into one (needs an engine with experimental features).' }),
    'dry-run': Flags.boolean({ description: 'Print the project as it would be built (variables substituted, Dockerfiles chosen, build args) and build nothing; Docker is not contacted.' }),
    ...builderFlags,
    ...engineFlags,
  };

  async run(): Promise<ReleaseManifest | ResolvedBuild> {
    const { args, flags } = await this.parse(Build);
    const out = await this.output();
    // What the project reads as: shared by the dry run and the build, so the two cannot disagree.
    const reading = {
      source: args.source,
      arch: flags.arch,
      deviceType: flags.deviceType,
      dockerfile: flags.dockerfile,
      multiDockerignore: flags['multi-dockerignore'],
      noParentCheck: flags['noparent-check'],
      projectName: flags.projectName,
      tag: flags.tag,
      buildArgs: parseKeyValues(flags.buildArg, 'buildArg'),
      cacheFrom: flags['cache-from']?.split(',').map((s) => s.trim()).filter(Boolean) ?? [],
    } satisfies ResolveBuildOptions;
    if (flags['dry-run']) {
      const [{ resolveBuild }, { renderDryRun }] = await Promise.all([import('../lib/builder/build-project.js'), import('../ui/dry-run-renderer.js')]);
      const resolved = await resolveBuild(reading);
      for (const w of resolved.warnings) await this.warnUser(w);
      await renderDryRun(out, resolved);
      return resolved;
    }
    const [{ buildProject }, { BuildRenderer }] = await Promise.all([import('../lib/builder/build-project.js'), import('../ui/build-renderer.js')]);
    const renderer = new BuildRenderer(out, {
      showLogs: this.jsonEnabled() ? flags.logs : !flags.nologs,
      live: !this.jsonEnabled() && !flags.logs && !flags.nologs && out.terminal.stderrIsTTY,
    });
    const { parseSecretFlags } = await import('../lib/builder/secrets.js');
    const secrets = parseSecretFlags(flags.secret, process.env);
    try {
      const manifest = await this.cancellable((signal) => buildProject({
        ...reading,
        emulated: flags.emulated,
        registrySecrets: flags['registry-secrets'],
        noConvertEol: flags['noconvert-eol'],
        nocache: flags.nocache,
        pull: flags.pull,
        squash: flags.squash,
        builder: builderRequest(flags.buildkit),
        secrets,
        engine: { docker: flags.docker, dockerHost: flags.dockerHost, dockerPort: flags.dockerPort, ca: flags.ca, cert: flags.cert, key: flags.key },
        signal,
        onEvent: (event) => {
          if (event.kind === 'warning') this.warnings.push(event.message);
          renderer.event(event);
        },
      }), () => renderer.cancelling());
      renderer.summary(manifest);
      return manifest;
    } finally {
      renderer.stop();
    }
  }
}
