/**
 * The project model: what `skiff build` (and later `push`/`deploy`) reads from a project folder.
 * Paths are absolute unless the name ends in `Rel`.
 */
import type { ServiceJson } from '../service/service-config.js';

/** A problem that does not stop the build, with where it was found (`docker-compose.yml:7`). */
export interface ProjectWarning {
  message: string;
  where?: string;
}

export interface BuildSpec {
  /** Absolute path of the build context (inside the project folder, or outside it as in a monorepo). */
  context: string;
  /** The context relative to the project folder: '.' for the project itself, '../x' outside it. */
  contextRel: string;
  /** The Dockerfile named in compose, relative to the context; absent means "resolve the balena way". */
  dockerfile?: string;
  args: Record<string, string>;
  target?: string;
  labels: Record<string, string>;
  cacheFrom: string[];
  /** 1-based line of the service's `build` key in the compose file (for error messages). */
  line?: number;
}

export interface ServiceSpec {
  name: string;
  build?: BuildSpec;
  /** `image:` from compose: the image to use (no build) or, with build, ignored for tagging. */
  image?: string;
  /**
   * The service's compose keys after validation by the device's own rules and normalisation
   * (environment and labels as maps, ports and volumes as strings, `build` removed): what the
   * device's target state carries, and the agent reads with the same parser.
   */
  config: ServiceJson;
  /** 1-based line where the service is defined. */
  line?: number;
}

export interface ProjectSpec {
  /** Project name: the folder name, lower-cased, as balena does (overridable with --projectName). */
  name: string;
  dir: string;
  /** Absolute path of the compose file, absent for a single-Dockerfile project. */
  composeFile?: string;
  services: ServiceSpec[];
  volumes: Record<string, Record<string, unknown>>;
  networks: Record<string, Record<string, unknown>>;
  warnings: ProjectWarning[];
}
