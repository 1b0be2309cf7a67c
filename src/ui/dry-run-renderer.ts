/**
 * How `skiff build --dry-run` looks on a terminal: one line saying what was resolved for which
 * target, then the project as YAML (what `docker compose config` prints, plus what skiff decides:
 * image tags, the Dockerfile and why, build args). Under --json the command returns the data instead.
 */
import path from 'node:path';
import type { ResolvedBuild, ResolvedService } from '../lib/builder/build-project.js';
import type { Output } from './output.js';

/** Prints a {@link ResolvedBuild} for a person: the summary line on stderr, the YAML on stdout. */
export async function renderDryRun(out: Output, resolved: ResolvedBuild): Promise<void> {
  const { stringify } = await import('yaml');
  const { chalk } = out;
  const targetNote = resolved.targetFrom === 'flags' ? '' : chalk.dim(' (no --deviceType or --arch: this machine\'s architecture; a build uses the engine\'s)');
  out.info(`${resolved.project}: ${resolved.services.length} service${resolved.services.length === 1 ? '' : 's'} for ${chalk.bold(resolved.deviceType)} (${resolved.arch}, ${resolved.platform})${targetNote}; nothing was built`);
  const document = {
    ...(resolved.composeFile ? { 'x-skiff-compose-file': resolved.composeFile } : {}),
    services: Object.fromEntries(resolved.services.map((s) => [s.name, service(s)])),
    ...(Object.keys(resolved.volumes).length > 0 ? { volumes: resolved.volumes } : {}),
    ...(Object.keys(resolved.networks).length > 0 ? { networks: resolved.networks } : {}),
  };
  out.result(stringify(document, { lineWidth: 0 }).trimEnd());
}

/** The service as compose would write it, with skiff's choices under `x-skiff` keys a person can read past. */
function service(s: ResolvedService): Record<string, unknown> {
  if (!s.build) return { image: s.image, ...s.config };
  const b = s.build;
  return {
    'x-skiff-image': s.image,
    build: {
      context: b.context,
      // As compose reads it, relative to the context (the JSON result gives it from the project folder).
      dockerfile: path.posix.relative(b.context, b.dockerfile),
      'x-skiff-dockerfile-rule': b.chosenBecause,
      'x-skiff-template': b.template,
      ...(Object.keys(b.args).length > 0 ? { args: b.args } : {}),
      ...(b.target !== undefined ? { target: b.target } : {}),
      ...(Object.keys(b.labels).length > 0 ? { labels: b.labels } : {}),
      ...(b.cacheFrom.length > 0 ? { cache_from: b.cacheFrom } : {}),
      ...(b.baseImages.length > 0 ? { 'x-skiff-base-images': b.baseImages } : {}),
      ...(b.dockerignore ? { 'x-skiff-dockerignore': b.dockerignore } : {}),
      // Compose's build.secrets: the ids only, never a value.
      ...(b.secrets ? { secrets: b.secrets } : {}),
    },
    ...s.config,
  };
}
