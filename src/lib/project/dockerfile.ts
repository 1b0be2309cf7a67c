/**
 * Which Dockerfile a service builds with, and what it says after template substitution — the way
 * balena resolves it: Dockerfile.<device-type>, then Dockerfile.<arch>, then Dockerfile.template,
 * then Dockerfile. Templates (and the device/arch-specific files) get %%VAR%% substitution.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { SkiffError } from '../errors/errors.js';
import type { BuildTarget } from '../device-types/device-types.js';

export interface ResolvedDockerfile {
  /** Path relative to the build context, posix separators. */
  pathRel: string;
  /** Contents after substitution. */
  contents: string;
  /** True when the contents differ from the file on disk (the build must send the processed text). */
  processed: boolean;
  kind: 'device-type' | 'arch' | 'template' | 'dockerfile' | 'explicit';
}

/** What a template names besides the device type: the service, the fleet or project, the release. */
export interface TemplateNames {
  service: string;
  /** The fleet or project name (`%%BALENA_APP_NAME%%`). */
  appName: string;
  /** `%%BALENA_RELEASE_HASH%%`; balena-cli's local builds say `unavailable`, as there is no release yet. */
  releaseHash?: string;
}

/** What balena-cli substitutes for %%BALENA_RELEASE_HASH%% when a build has no release yet. */
export const NO_RELEASE_HASH = 'unavailable';

/**
 * Template variables, by name without the %% markers: every variable balena documents, under the
 * BALENA_ prefix, the legacy RESIN_ one and our SKIFF_ one. Without `names` only the device-type
 * variables exist.
 */
export function templateVariables(target: BuildTarget, names?: TemplateNames): Record<string, string> {
  const values: Record<string, string> = {
    MACHINE_NAME: target.deviceType.slug,
    ARCH: target.arch,
    ...(names ? { SERVICE_NAME: names.service, APP_NAME: names.appName, RELEASE_HASH: names.releaseHash ?? NO_RELEASE_HASH } : {}),
  };
  const vars: Record<string, string> = {};
  for (const prefix of ['BALENA_', 'RESIN_', 'SKIFF_']) {
    for (const [name, value] of Object.entries(values)) vars[`${prefix}${name}`] = value;
  }
  return vars;
}

const TEMPLATE_VAR = /%%([A-Z_][A-Z0-9_]*)%%/g;

/**
 * Replaces %%VAR%% markers. An unknown marker is an error naming file:line, since the engine would
 * otherwise fail later with a confusing "invalid reference format".
 */
export function processTemplate(text: string, vars: Record<string, string>, where: string): string {
  const lines = text.split('\n');
  return lines
    .map((line, i) =>
      line.replace(TEMPLATE_VAR, (_m, name: string) => {
        const value = vars[name];
        if (value === undefined) {
          throw new SkiffError('project', `unknown template variable %%${name}%%`, {
            where: `${where}:${i + 1}`,
            hint: `use one of ${Object.keys(vars).map((v) => `%%${v}%%`).join(', ')}`,
          });
        }
        return value;
      }),
    )
    .join('\n');
}

/**
 * Finds and reads the Dockerfile for a build context.
 * @param contextDir absolute build context
 * @param explicit `build.dockerfile` from compose (relative to the context), if any
 * @param displayBase folder that `where` paths in messages are relative to (the project folder)
 * @param names service, fleet and release for %%BALENA_SERVICE_NAME%% and the like
 */
export function resolveDockerfile(contextDir: string, explicit: string | undefined, target: BuildTarget, displayBase: string, names?: TemplateNames): ResolvedDockerfile {
  const vars = templateVariables(target, names);
  const show = (rel: string) => path.relative(displayBase, path.join(contextDir, rel)) || rel;
  if (explicit !== undefined) {
    const file = path.join(contextDir, explicit);
    if (!existsSync(file)) {
      throw new SkiffError('project', `Dockerfile '${show(explicit)}' does not exist`, {
        hint: `fix build.dockerfile, or create the file`,
      });
    }
    const raw = readFileSync(file, 'utf8');
    const isTemplate = explicit.endsWith('.template');
    const contents = isTemplate ? processTemplate(raw, vars, show(explicit)) : raw;
    return { pathRel: toPosix(explicit), contents, processed: contents !== raw, kind: 'explicit' };
  }
  const candidates: Array<{ name: string; kind: ResolvedDockerfile['kind']; template: boolean }> = [
    { name: `Dockerfile.${target.deviceType.slug}`, kind: 'device-type', template: true },
    { name: `Dockerfile.${target.arch}`, kind: 'arch', template: true },
    { name: 'Dockerfile.template', kind: 'template', template: true },
    { name: 'Dockerfile', kind: 'dockerfile', template: false },
  ];
  for (const c of candidates) {
    const file = path.join(contextDir, c.name);
    if (!existsSync(file)) continue;
    const raw = readFileSync(file, 'utf8');
    const contents = c.template ? processTemplate(raw, vars, show(c.name)) : raw;
    return { pathRel: c.name, contents, processed: contents !== raw, kind: c.kind };
  }
  throw new SkiffError('project', `no Dockerfile in '${path.relative(displayBase, contextDir) || '.'}'`, {
    hint: `add a Dockerfile (or Dockerfile.template, Dockerfile.${target.deviceType.slug}, Dockerfile.${target.arch})`,
  });
}

export interface DockerfileFacts {
  /** Base images named by FROM, with ARG defaults and build args substituted; stages and scratch left out. */
  baseImages: Array<{ image: string; line: number; platform?: string }>;
  /** Whether any stage runs commands (RUN), which needs emulation for a foreign architecture. */
  hasRun: boolean;
}

/**
 * Reads what the build will need from the engine before it starts, so a missing base image or
 * missing emulation is reported up front instead of after a long upload.
 *
 * @param predeclared args FROM lines may use without an ARG (BuildKit's automatic platform args)
 */
export function dockerfileFacts(contents: string, buildArgs: Record<string, string>, predeclared: Record<string, string> = {}): DockerfileFacts {
  const logical = logicalLines(contents);
  // BuildKit declares its platform args for FROM lines itself (`FROM --platform=$BUILDPLATFORM`).
  const args: Record<string, string> = { ...predeclared };
  const stages = new Set<string>();
  const baseImages: DockerfileFacts['baseImages'] = [];
  let hasRun = false;
  let seenFrom = false;
  for (const { text, line } of logical) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(text);
    if (!m) continue;
    const instr = (m[1] ?? '').toUpperCase();
    const rest = (m[2] ?? '').trim();
    if (instr === 'ARG' && !seenFrom) {
      const am = /^([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$/.exec(rest);
      if (am?.[1]) args[am[1]] = buildArgs[am[1]] ?? unquote(am[2] ?? '');
    } else if (instr === 'FROM') {
      seenFrom = true;
      const parts = rest.split(/\s+/);
      let platform: string | undefined;
      while (parts[0]?.startsWith('--')) {
        const flag = parts.shift() ?? '';
        // `--platform=$BUILDPLATFORM` takes its value from an ARG before the first FROM, as the image does.
        if (flag.startsWith('--platform=')) platform = substituteArgs(flag.slice('--platform='.length), args) || undefined;
      }
      const image = substituteArgs(parts[0] ?? '', args);
      const alias = parts[1]?.toUpperCase() === 'AS' ? parts[2] : undefined;
      if (image && image.toLowerCase() !== 'scratch' && !stages.has(image.toLowerCase())) {
        baseImages.push({ image, line, ...(platform ? { platform } : {}) });
      }
      if (alias) stages.add(alias.toLowerCase());
    } else if (instr === 'RUN') {
      hasRun = true;
    }
  }
  return { baseImages, hasRun };
}

/** A Dockerfile's instructions with continuation lines joined, each with its first line number (1-based). */
export function logicalLines(contents: string): Array<{ text: string; line: number }> {
  const out: Array<{ text: string; line: number }> = [];
  let buf = '';
  let start = 0;
  contents.split(/\r?\n/).forEach((raw, i) => {
    if (/^\s*#/.test(raw)) return; // comments, also inside a continued instruction
    if (buf === '') start = i + 1;
    if (/\\\s*$/.test(raw)) {
      buf += `${raw.replace(/\\\s*$/, '')} `;
      return;
    }
    buf += raw;
    if (buf.trim()) out.push({ text: buf, line: start });
    buf = '';
  });
  if (buf.trim()) out.push({ text: buf, line: start });
  return out;
}

/** `$VAR`, `${VAR}` and `${VAR:-default}` from the given values. */
export function substituteArgs(s: string, args: Record<string, string>): string {
  return s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (_m, a?: string, def?: string, b?: string) => {
    const name = a ?? b ?? '';
    const v = args[name];
    return v !== undefined && v !== '' ? v : (def ?? '');
  });
}

export function unquote(s: string): string {
  return s.replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1');
}

function toPosix(p: string): string {
  return p.split(path.sep).join('/');
}

/**
 * The first line (1-based) of the stage after `target`, the stage a build with `--target` ends
 * with: nothing from there on is built. Undefined when `target` is the last stage or not found
 * (the engine then reports it).
 */
export function stageEnd(contents: string, target: string): number | undefined {
  let inTarget = false;
  for (const { text, line } of logicalLines(contents)) {
    const m = /^\s*FROM\s+(.*)$/i.exec(text);
    if (!m) continue;
    if (inTarget) return line;
    const parts = (m[1] ?? '').trim().split(/\s+/).filter((p) => !p.startsWith('--'));
    if (parts[1]?.toUpperCase() === 'AS' && parts[2]?.toLowerCase() === target.toLowerCase()) inTarget = true;
  }
  return undefined;
}

/** `contents` with every line from `line` (1-based) on emptied, so line numbers stay the same. */
export function withoutLinesFrom(contents: string, line: number): string {
  return contents.split('\n').map((l, i) => (i + 1 >= line ? '' : l)).join('\n');
}
