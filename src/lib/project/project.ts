/**
 * Reads a project folder into a ProjectSpec: a compose file with services, or a single Dockerfile
 * (one service, `main`), the way balena reads it.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { SkiffError } from '../errors/errors.js';
import type { ProjectSpec, ProjectWarning } from './types.js';

/** A warning as one line: `docker-compose.yml:7: unknown key 'x'…`. */
export function warningLine(w: ProjectWarning): string {
  return w.where ? `${w.where}: ${w.message}` : w.message;
}

export const COMPOSE_FILES = ['docker-compose.yml', 'docker-compose.yaml', 'compose.yaml', 'compose.yml'];

export interface LoadProjectOptions {
  /** Name prefix for images; defaults to the folder name. */
  projectName?: string;
  /** Alternative Dockerfile for a single-Dockerfile project (relative to the folder). */
  dockerfile?: string;
  /** Skip the check for a compose file in the parent folder. */
  noParentCheck?: boolean;
  /** The variables compose substitutes, over the project's `.env`; defaults to the process environment. */
  environment?: NodeJS.ProcessEnv;
}

export function findComposeFile(dir: string): string | undefined {
  const found = COMPOSE_FILES.filter((f) => existsSync(path.join(dir, f)));
  if (found.length > 1) {
    throw new SkiffError('project', `more than one compose file in '${dir}': ${found.join(', ')}`, { hint: 'keep one of them' });
  }
  return found[0] ? path.join(dir, found[0]) : undefined;
}

/** Image name prefix from a folder name: lower case, only the characters Docker allows. */
export function projectNameFrom(dir: string): string {
  const name = path.basename(path.resolve(dir)).toLowerCase().replace(/[^a-z0-9._-]+/g, '').replace(/^[._-]+/, '');
  return name || 'project';
}

export async function loadProject(source: string, options: LoadProjectOptions = {}): Promise<ProjectSpec> {
  const dir = path.resolve(source);
  if (!existsSync(dir)) throw new SkiffError('usage', `source folder '${source}' does not exist`, { hint: 'pass the project folder as the first argument' });
  if (!statSync(dir).isDirectory()) throw new SkiffError('usage', `source '${source}' is not a folder`, { hint: 'pass the project folder, not a file' });

  const name = options.projectName ?? projectNameFrom(dir);
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(name)) {
    throw new SkiffError('usage', `project name '${name}' is not a valid image name prefix`, { hint: 'use lower-case letters, digits, ".", "_" and "-"' });
  }
  const composeFile = findComposeFile(dir);
  if (!composeFile && !options.noParentCheck) {
    const parentCompose = findComposeFile(path.dirname(dir));
    if (parentCompose && path.dirname(dir) !== dir) {
      throw new SkiffError('project', `'${path.basename(parentCompose)}' found in the parent folder of '${source}'`, {
        hint: 'check that the right source folder was given, or pass --noparent-check',
      });
    }
  }
  if (composeFile) {
    if (options.dockerfile) {
      throw new SkiffError('usage', '--dockerfile applies to single-Dockerfile projects only', { hint: `set build.dockerfile in ${path.basename(composeFile)} instead` });
    }
    const [{ parseCompose }, { readDotenv }] = await Promise.all([import('./compose.js'), import('./dotenv.js')]);
    // Compose's precedence: the process environment wins over the .env in the project folder.
    const environment = options.environment ?? process.env;
    const fromShell = (key: string): string | undefined => (Object.hasOwn(environment, key) ? environment[key] : undefined);
    const dotenv = readDotenv(dir, fromShell);
    const env: Record<string, string> = { ...dotenv.values };
    for (const [key, value] of Object.entries(environment)) if (value !== undefined) env[key] = value;
    const parsed = parseCompose(readFileSync(composeFile, 'utf8'), composeFile, dir, env);
    return { name, dir, composeFile, ...parsed, warnings: [...dotenv.warnings, ...parsed.warnings] };
  }
  const hasDockerfile = options.dockerfile
    ? existsSync(path.join(dir, options.dockerfile))
    : readdirSync(dir).some((f) => f === 'Dockerfile' || f.startsWith('Dockerfile.'));
  if (!hasDockerfile) {
    throw new SkiffError('project', options.dockerfile ? `Dockerfile '${options.dockerfile}' does not exist in '${source}'` : `no docker-compose.yml or Dockerfile in '${source}'`, {
      hint: 'add a docker-compose.yml (several services) or a Dockerfile / Dockerfile.template (one service)',
    });
  }
  return {
    name,
    dir,
    services: [
      {
        name: 'main',
        build: { context: dir, contextRel: '.', args: {}, labels: {}, cacheFrom: [], ...(options.dockerfile ? { dockerfile: options.dockerfile } : {}) },
        // balena's default composition for a single-container project, so devices run it the same way.
        config: {
          privileged: true,
          tty: true,
          restart: 'always',
          network_mode: 'host',
          volumes: ['resin-data:/data'],
          labels: {
            'io.balena.features.kernel-modules': '1',
            'io.balena.features.firmware': '1',
            'io.balena.features.dbus': '1',
            'io.balena.features.supervisor-api': '1',
            'io.balena.features.balena-api': '1',
          },
        },
      },
    ],
    volumes: { 'resin-data': {} },
    networks: {},
    warnings: [],
  };
}
