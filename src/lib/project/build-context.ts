/**
 * The build context a service sends to the engine: its folder as a tar stream, minus what
 * .dockerignore excludes and minus .git, with the resolved (template-processed) Dockerfile, and the
 * image's labels in a generated Dockerfile the engine hides from COPY where it can.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import type { Ignore } from '@balena/dockerignore';
import type { ResolvedDockerfile } from './dockerfile.js';

/** Paths never sent, whatever .dockerignore says. */
// balena's build secret files: a build reads them through BuildKit's session, never from the context.
const ALWAYS_EXCLUDED = ['.git', '.balena/secrets'];

export interface IgnoreRules {
  /** Absolute path of the .dockerignore these rules came from, if any. */
  file?: string;
  /** The folder the patterns are relative to. */
  base: string;
  patterns: Array<{ pattern: string; line: number }>;
  hasNegation: boolean;
  /** Whether `absPath` is excluded. */
  ignores(absPath: string): boolean;
  /** 1-based line of the pattern that excludes `absPath`, if one does. */
  excludingLine(absPath: string): number | undefined;
}

/** Reads `<base>/.dockerignore` (absent file: nothing but .git is excluded). */
export async function loadIgnoreRules(base: string): Promise<IgnoreRules> {
  const ignore = await loadIgnoreFactory();
  const file = path.join(base, '.dockerignore');
  const patterns: IgnoreRules['patterns'] = [];
  if (existsSync(file)) {
    readFileSync(file, 'utf8')
      .split(/\r?\n/)
      .forEach((raw, i) => {
        const pattern = raw.trim();
        if (pattern !== '' && !pattern.startsWith('#')) patterns.push({ pattern, line: i + 1 });
      });
  }
  const ig: Ignore = ignore().add(patterns.map((p) => p.pattern));
  const rel = (abs: string) => path.relative(base, abs).split(path.sep).join('/');
  const always = (r: string) => ALWAYS_EXCLUDED.some((x) => r === x || r.startsWith(`${x}/`));
  return {
    file: existsSync(file) ? file : undefined,
    base,
    patterns,
    hasNegation: patterns.some((p) => p.pattern.startsWith('!')),
    ignores(absPath) {
      const r = rel(absPath);
      if (r === '' || r.startsWith('..')) return false;
      return always(r) || ig.ignores(r);
    },
    excludingLine(absPath) {
      const r = rel(absPath);
      if (!ig.ignores(r)) return undefined;
      // The last non-negated pattern that matches on its own is the one to blame.
      for (let i = patterns.length - 1; i >= 0; i--) {
        const p = patterns[i];
        if (p && !p.pattern.startsWith('!') && ignore().add(p.pattern).ignores(r)) return p.line;
      }
      return undefined;
    },
  };
}

type IgnoreFactory = () => Ignore;

/** The package is CommonJS typed as an ES default export; take the factory whichever way it comes. */
async function loadIgnoreFactory(): Promise<IgnoreFactory> {
  const mod = (await import('@balena/dockerignore')) as unknown as { default: IgnoreFactory | { default: IgnoreFactory } };
  return typeof mod.default === 'function' ? mod.default : mod.default.default;
}

export interface ContextStreamOptions {
  contextDir: string;
  rules: IgnoreRules;
  dockerfile: ResolvedDockerfile;
  /** Called as bytes of the tar leave, for the upload size and the 1 GB warning. */
  onBytes?: (total: number) => void;
  /** For messages: paths are shown relative to this folder. */
  displayBase: string;
  service: string;
  /** Labels for the image (see {@link packContext} for how they get there). */
  labels?: Record<string, string>;
  /** The build's target stage, if not the last. */
  target?: string;
  /**
   * For BuildKit, which applies no .dockerignore to a tar context (every file in the tar reaches
   * COPY): the tar holds exactly what the rules keep, plus the Dockerfile, and every label goes
   * through the build API (BuildKit sets labels in the image config, no step each).
   */
  buildkit?: boolean;
  /** Absolute folders never sent, wherever the context lies (the project's `.balena/secrets`, for a context above the project). */
  exclude?: string[];
}

/**
 * The Dockerfile skiff builds with when it can add its LABEL line out of sight: the user's (resolved)
 * Dockerfile plus one LABEL instruction, listed in the tar's .dockerignore so the engine reads it and
 * then leaves it out of what COPY sees (as it does for any Dockerfile .dockerignore lists).
 */
export const LABELLED_DOCKERFILE = '.skiff.Dockerfile';

/** Label keys and values the LABEL line carries quoted as they are (no quote, backslash or line break to escape under any `# escape=` directive). */
const PLAIN_LABEL = /^[\w.\-/:@+=, ]*$/;

/** What {@link packContext} gives the build: the tar, the Dockerfile to name, and the labels left for the build API. */
export interface PackedContext {
  stream: Readable;
  /** The Dockerfile's path in the tar: {@link LABELLED_DOCKERFILE}, or the user's own. */
  dockerfile: string;
  /** Labels the tar's Dockerfile does not carry: the build API adds them (one LABEL step each). */
  apiLabels: Record<string, string>;
}

/**
 * Packs the context. A Dockerfile that .dockerignore excludes is still sent, as docker's CLI does:
 * the engine needs it to build, and it leaves the Dockerfile (and .dockerignore) out of what COPY
 * sees when the .dockerignore at the root of the context excludes them. When the rules come from
 * elsewhere (the project root's .dockerignore for a service folder), a .dockerignore naming just
 * those two files takes that place in the tar, so the engine hides the Dockerfile all the same.
 *
 * The labels go into one LABEL line of a generated Dockerfile ({@link LABELLED_DOCKERFILE}) when
 * the engine can be made to hide it: the tar's .dockerignore is one COPY never sees (none on disk,
 * excluded, or excluding itself), and the build targets the last stage. Otherwise (a .dockerignore
 * that COPY takes, a `target` stage) they go through the build API, a LABEL step each: slower on an
 * uncached build, never a changed file in the image.
 */
export async function packContext(options: ContextStreamOptions): Promise<PackedContext> {
  const { contextDir, rules, dockerfile } = options;
  const dockerfileAbs = path.join(contextDir, dockerfile.pathRel);
  const dockerignoreAbs = path.join(contextDir, '.dockerignore');
  const labels = options.labels ?? {};
  if (options.buildkit) {
    const replaced = new Map<string, string>(dockerfile.processed ? [[dockerfileAbs, dockerfile.contents]] : []);
    return { stream: countBytes(await packTar(contextDir, rules, new Set([dockerfileAbs]), replaced, options.exclude), options.onBytes), dockerfile: dockerfile.pathRel, apiLabels: labels };
  }
  const inLine = options.target === undefined
    ? Object.entries(labels).filter(([k, v]) => k !== '' && PLAIN_LABEL.test(k) && PLAIN_LABEL.test(v))
    : [];
  const apiLabels = Object.fromEntries(Object.entries(labels).filter(([k]) => !inLine.some(([x]) => x === k)));
  // The .dockerignore the tar would carry as the user wrote it, which COPY sees unless it excludes itself.
  const userIgnore = existsSync(dockerignoreAbs) && !rules.ignores(dockerignoreAbs) ? readFileSync(dockerignoreAbs, 'utf8') : undefined;
  const labelled = inLine.length > 0 && (userIgnore === undefined || (await excludesItself(userIgnore)));
  if (labelled) {
    const line = `LABEL ${inLine.map(([k, v]) => `"${k}"="${v}"`).join(' ')}`;
    const generated = `${dockerfile.contents}${dockerfile.contents.endsWith('\n') ? '' : '\n'}${line}\n`;
    const ignoreText = userIgnore === undefined ? `.dockerignore\n${LABELLED_DOCKERFILE}\n` : `${userIgnore}${userIgnore.endsWith('\n') || userIgnore === '' ? '' : '\n'}${LABELLED_DOCKERFILE}\n`;
    const replaced = new Map<string, string>([[dockerignoreAbs, ignoreText], [path.join(contextDir, LABELLED_DOCKERFILE), generated]]);
    // The user's own Dockerfile goes as any file does (the engine builds from the generated one).
    if (dockerfile.processed && !rules.ignores(dockerfileAbs)) replaced.set(dockerfileAbs, dockerfile.contents);
    return { stream: countBytes(await packTar(contextDir, rules, new Set(), replaced, options.exclude), options.onBytes), dockerfile: LABELLED_DOCKERFILE, apiLabels };
  }
  const dockerfileIgnored = rules.ignores(dockerfileAbs);
  const ownRules = rules.file === dockerignoreAbs;
  // Files the tar gets whatever the rules say, read from disk unless replaced below.
  const kept = new Set(dockerfileIgnored && ownRules ? [dockerfileAbs, dockerignoreAbs] : [dockerfileAbs]);
  const replaced = new Map<string, string>();
  if (dockerfile.processed) replaced.set(dockerfileAbs, dockerfile.contents);
  if (dockerfileIgnored && !ownRules) replaced.set(dockerignoreAbs, `.dockerignore\n${dockerfile.pathRel}\n`);
  return { stream: countBytes(await packTar(contextDir, rules, kept, replaced, options.exclude), options.onBytes), dockerfile: dockerfile.pathRel, apiLabels: labels };
}

/** Whether .dockerignore text excludes the .dockerignore itself (so the engine hides it from COPY). */
async function excludesItself(text: string): Promise<boolean> {
  const ignore = await loadIgnoreFactory();
  const patterns = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  return ignore().add(patterns).ignores('.dockerignore');
}

/**
 * The tar of `contextDir` under `rules`: `kept` files go in whatever the rules say, `replaced` ones
 * (absolute path → text) go in with that text instead of what is on disk (added if absent).
 */
async function packTar(contextDir: string, rules: IgnoreRules, kept: ReadonlySet<string>, replaced: ReadonlyMap<string, string>, exclude: readonly string[] = []): Promise<Readable> {
  const tar = await import('tar-fs');
  const ignore = (name: string): boolean => {
    if (exclude.some((x) => name === x || name.startsWith(`${x}${path.sep}`))) return true;
    if (replaced.has(name)) return true; // added below
    if (kept.has(name)) return false;
    if (!rules.ignores(name)) return false;
    // A negated pattern can bring back a file inside an excluded folder: keep walking folders then.
    // So must a folder that holds a kept file (a replaced one is added whole at the end).
    if (rules.hasNegation || [...kept].some((k) => k.startsWith(`${name}${path.sep}`))) {
      try {
        if (statSync(name).isDirectory()) return false;
      } catch {
        return true;
      }
    }
    return true;
  };
  return tar.pack(contextDir, {
    ignore,
    finalize: false,
    finish(p) {
      for (const [abs, text] of replaced) p.entry({ name: path.relative(contextDir, abs).split(path.sep).join('/'), mode: 0o644, mtime: new Date(0) }, text);
      p.finalize();
    },
  });
}

/** Passes the tar through, counting its bytes for the upload size and the 1 GB warning. */
function countBytes(pack: Readable, onBytes?: (total: number) => void): Readable {
  let total = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      total += chunk.length;
      onBytes?.(total);
      cb(null, chunk);
    },
  });
  pack.on('error', (err: Error) => counter.destroy(err));
  return pack.pipe(counter);
}
