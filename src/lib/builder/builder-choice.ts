/**
 * Which builder a build uses: the engine's own BuildKit (`POST /build?version=2`) whenever the
 * engine offers it, the classic builder otherwise or when asked; and what the engine's built-in
 * Dockerfile frontend understands, so Dockerfile 1.4 syntax it lacks can be lowered first.
 */
import { SkiffError } from '../errors/errors.js';
import type { BuilderKind } from '../docker/image-build.js';
import type { EngineFacts } from '../docker/engine.js';

/** What the user asked for: `--buildkit`, `--no-buildkit`, or neither (`auto`). */
export type BuilderRequest = 'auto' | 'buildkit' | 'classic';

/** The builder chosen and the line that says so (printed once per build). */
export interface BuilderChoice {
  builder: BuilderKind;
  /** E.g. `Building with BuildKit (engine 20.10.24)`. */
  message: string;
  /** For the classic builder: why, in words an error line can quote (`--no-buildkit`). */
  reason: string;
  /** For the classic builder: how to get BuildKit instead, for an error about BuildKit-only syntax. */
  hint: string;
}

/** The engine API version BuildKit builds arrived with (Docker 18.09). */
const BUILDKIT_API = [1, 39] as const;

/** `1.41` → [1, 41]; anything unreadable → undefined. */
function apiParts(api: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)/.exec(api);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

/** Whether the engine has BuildKit: API 1.39 (Docker 18.09) or later, on Linux. An unknown API version counts as yes. */
export function engineOffersBuildkit(engine: Pick<EngineFacts, 'apiVersion' | 'os'>): boolean {
  if (engine.os !== undefined && engine.os !== '' && engine.os.toLowerCase() !== 'linux') return false;
  const api = apiParts(engine.apiVersion);
  if (!api) return true;
  return api[0] > BUILDKIT_API[0] || (api[0] === BUILDKIT_API[0] && api[1] >= BUILDKIT_API[1]);
}

/**
 * Whether the engine's built-in Dockerfile frontend reads heredocs and `COPY --link` (Dockerfile
 * 1.4, built into Docker 23.0 and later). Docker 20.10 and balenaEngine (20.10-based) do not.
 */
export function frontendHasHeredocs(engine: Pick<EngineFacts, 'version' | 'balena'>): boolean {
  const m = /^(\d+)\./.exec(engine.version);
  if (!m) return false;
  return Number(m[1]) >= 23;
}

/**
 * Chooses the builder: `--no-buildkit` or `DOCKER_BUILDKIT=0` → classic; `--squash` → classic
 * (BuildKit cannot squash); an engine without BuildKit → classic; `preferClassic` (a reason the
 * caller found, e.g. a Dockerfile .dockerignore hides, when nothing needs BuildKit) → classic;
 * otherwise BuildKit.
 *
 * @param env the process environment (`DOCKER_BUILDKIT`, as docker's own CLI reads it)
 * @throws SkiffError('usage') for `--buildkit` on an engine without BuildKit, or with `--squash`
 */
export function chooseBuilder(
  engine: Pick<EngineFacts, 'version' | 'apiVersion' | 'os'>,
  request: BuilderRequest,
  options: { squash?: boolean; env?: NodeJS.ProcessEnv; preferClassic?: string } = {},
): BuilderChoice {
  const offers = engineOffersBuildkit(engine);
  const engineText = `engine ${engine.version}`;
  const classic = (reason: string, hint: string): BuilderChoice => ({ builder: 'classic', reason, hint, message: `Building with the classic builder (${reason})` });
  const newer = 'build on an engine with BuildKit (Docker 18.09 or later), where --buildkit insists on it';
  // Asked for by flag or variable: say whether the engine could have done BuildKit, so an error
  // about BuildKit-only syntax tells the user which way out there is.
  const asked = (by: string, drop: string): BuilderChoice => classic(`${by}; ${engineText} ${offers ? 'has' : 'has no'} BuildKit`, offers ? drop : newer);
  if (request === 'classic') return asked('--no-buildkit', 'build without --no-buildkit (or with --buildkit)');
  if (request === 'buildkit') {
    if (!offers) {
      throw new SkiffError('usage', `--buildkit: ${engineText} (API ${engine.apiVersion}${engine.os ? `, ${engine.os}` : ''}) has no BuildKit`, {
        hint: 'build without --buildkit, or on an engine with Docker 18.09 or later',
      });
    }
    if (options.squash) throw new SkiffError('usage', '--squash needs the classic builder; BuildKit cannot squash', { hint: 'drop --squash, or use --no-buildkit' });
    return { builder: 'buildkit', reason: '', hint: '', message: `Building with BuildKit (${engineText}, --buildkit)` };
  }
  const env = options.env?.DOCKER_BUILDKIT;
  if (env !== undefined && /^(0|false|no|off)$/i.test(env.trim())) return asked('DOCKER_BUILDKIT=0', 'unset DOCKER_BUILDKIT (or pass --buildkit)');
  if (options.squash) return classic('--squash needs it', 'drop --squash, which BuildKit cannot do');
  if (!offers) return classic(`${engineText} has no BuildKit`, newer);
  if (options.preferClassic) return classic(options.preferClassic, 'pass --buildkit');
  return { builder: 'buildkit', reason: '', hint: '', message: `Building with BuildKit (${engineText})` };
}
