import process from 'node:process';
import { Args, Flags } from '@oclif/core';
import { CloudCommand } from '../cli/cloud.js';
import type { Build } from '../lib/api/builds.js';

export default class BuildLogs extends CloudCommand<Build> {
  static override summary = "Show a cloud build's output; with --follow, until it ends.";
  static override description = `Prints the output of a build made by 'skiff push <fleet>' or a git push, as 'skiff build' shows a local one: each service's lines, the image pushes and how it ended. With --follow it keeps following a build that is still queued or running until it ends, re-attaching by itself when the connection drops (no line repeated or lost), and exits non-zero when the build failed. With --json, one JSON object per event (NDJSON: {seq, time, event}), then the build's own envelope as the last line.`;
  static override examples = [
    '<%= config.bin %> build-logs 3f2a9c1',
    '<%= config.bin %> build-logs 3f2a9c1 --follow',
    '<%= config.bin %> build-logs 3f2a9c1 --json > build.ndjson',
  ];
  static override args = { build: Args.string({ description: 'Build id (a unique prefix of 7+ characters is enough).', required: true }) };
  static override flags = {
    follow: Flags.boolean({ char: 'f', description: 'Keep following until the build ends.' }),
  };

  async run(): Promise<Build> {
    const { args, flags } = await this.parse(BuildLogs);
    const out = await this.output();
    const [{ followBuild, readBuildEvents }, { RemoteBuildRenderer }, { SkiffError }] = await Promise.all([
      import('../lib/cloud/remote-build.js'), import('../ui/remote-build-renderer.js'), import('../lib/errors/errors.js'),
    ]);
    const client = await this.cloud();
    // The build first: a wrong id or another user's build is "not found" before any stream opens.
    const build = await client.build(args.build);
    const renderer = new RemoteBuildRenderer(out, { showLogs: true });
    const json = this.jsonEnabled();
    const onEvent = (envelope: Parameters<typeof renderer.event>[0]): void => {
      if (json) process.stdout.write(`${JSON.stringify(envelope)}\n`);
      else renderer.event(envelope);
    };
    try {
      if (!flags.follow) {
        await readBuildEvents(client, build.id, { onEvent });
        const now = await client.build(build.id);
        if (now.error) out.info(`${now.status === 'failed' ? 'Failed' : 'Ended'}: ${now.error}`);
        if (now.status === 'queued' || now.status === 'running') out.info(out.chalk.dim(`The build is ${now.status}: --follow keeps showing it until it ends.`));
        return now;
      }
      const done = await this.cancellable((signal) => followBuild(client, build.id, {
        onEvent,
        signal,
        onReattach: (attempt, reason) => out.info(out.chalk.yellow(`The build's output stream dropped (${reason}); re-attaching (attempt ${attempt})...`)),
      }));
      const final = await client.build(build.id);
      if (done.status === 'failed') throw new SkiffError('buildFailed', `build ${build.id.slice(0, 7)} failed${done.error ? `: ${done.error}` : ''}; no release was made`);
      if (done.status === 'cancelled') throw new SkiffError('error', `build ${build.id.slice(0, 7)} was cancelled; no release was made`);
      if (done.release) out.info(out.chalk.green(`Release ${done.release.slice(0, 7)} of fleet ${final.fleet} was made.`));
      return final;
    } finally {
      renderer.stop();
    }
  }
}
