/** Flags shared by commands, named as balena-cli names them so scripts port unchanged. */
import { Flags } from '@oclif/core';
import { SkiffError } from '../lib/errors/errors.js';
import type { BuilderRequest } from '../lib/builder/builder-choice.js';

export const engineFlags = {
  docker: Flags.string({ char: 'P', description: 'Path to a local Docker socket (e.g. /var/run/docker.sock).', helpGroup: 'ENGINE' }),
  dockerHost: Flags.string({ char: 'h', description: 'Docker engine hostname or IP address (dev machine or device). Default: DOCKER_HOST, else the local socket.', helpGroup: 'ENGINE' }),
  dockerPort: Flags.integer({ char: 'p', description: 'Docker engine TCP port (2375 on balenaOS development devices).', min: 1, max: 65535, helpGroup: 'ENGINE' }),
  ca: Flags.string({ description: 'Docker engine TLS certificate authority file.', helpGroup: 'ENGINE' }),
  cert: Flags.string({ description: 'Docker engine TLS certificate file.', helpGroup: 'ENGINE' }),
  key: Flags.string({ description: 'Docker engine TLS key file.', helpGroup: 'ENGINE' }),
};

/** `KEY=VALUE` list flags into a record; a malformed entry is a usage error naming the flag. */
export function parseKeyValues(values: string[] | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values ?? []) {
    const eq = v.indexOf('=');
    if (eq <= 0) throw new SkiffError('usage', `--${flag} '${v}' is not of the form NAME=value`, { hint: `e.g. --${flag} VERSION=1.2` });
    out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
}

/**
 * The builder and build-secret flags of every command that builds (`build`, `deploy`, `push`):
 * `--buildkit`/`--no-buildkit` as docker's `DOCKER_BUILDKIT=1/0`, `--secret` as `docker build --secret`.
 */
export const builderFlags = {
  buildkit: Flags.boolean({
    allowNo: true,
    description: "Build with the engine's BuildKit (the default when the engine has it: cache and secret mounts, heredocs, COPY --chmod); --no-buildkit uses the classic builder. DOCKER_BUILDKIT=0 also chooses the classic builder.",
  }),
  secret: Flags.string({
    description: 'Build secret for RUN --mount=type=secret,id=<id>: id=<id>,src=<file> or id=<id>,env=<VAR> (repeatable). balena.yml build-secrets are read as well. The value never enters an image or the release.',
    multiple: true,
  }),
};

/** `--buildkit` / `--no-buildkit` / neither, as the build code takes it. */
export function builderRequest(buildkit: boolean | undefined): BuilderRequest {
  return buildkit === undefined ? 'auto' : buildkit ? 'buildkit' : 'classic';
}
