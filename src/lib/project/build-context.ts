/**
 * The build context a service sends to the engine: its folder as a tar stream, minus what
 * .dockerignore excludes and minus .git, with the resolved (template-processed) Dockerfile.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import type { Ignore } from '@balena/dockerignore';
import type { ResolvedDockerfile } from './dockerfile.js';

/** Paths never sent, whatever .dockerignore says. */
const ALWAYS_EXCLUDED = ['.git'];

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
}

/**
 * Packs the context. A Dockerfile that .dockerignore excludes is still sent, as docker's CLI does:
 * the engine needs it to build, and it leaves the Dockerfile (and .dockerignore) out of what COPY
 * sees when the .dockerignore at the root of the context excludes them. When the rules come from
 * elsewhere (the project root's .dockerignore for a service folder), a .dockerignore naming just
 * those two files takes that place in the tar, so the engine hides the Dockerfile all the same.
 */
export async function packContext(options: ContextStreamOptions): Promise<Readable> {
  const { contextDir, rules, dockerfile } = options;
  const dockerfileAbs = path.join(contextDir, dockerfile.pathRel);
  const dockerignoreAbs = path.join(contextDir, '.dockerignore');
  const dockerfileIgnored = rules.ignores(dockerfileAbs);
  const ownRules = rules.file === dockerignoreAbs;
  // Files the tar gets whatever the rules say, read from disk unless replaced below.
  const kept = new Set(dockerfileIgnored && ownRules ? [dockerfileAbs, dockerignoreAbs] : [dockerfileAbs]);
  const replaceDockerignore = dockerfileIgnored && !ownRules;
  const tar = await import('tar-fs');
  const ignore = (name: string): boolean => {
    if (name === dockerfileAbs && dockerfile.processed) return true; // replaced below
    if (name === dockerignoreAbs && replaceDockerignore) return true; // replaced below
    if (kept.has(name)) return false;
    if (!rules.ignores(name)) return false;
    // A negated pattern can bring back a file inside an excluded folder: keep walking folders then.
    // So must a folder that holds the Dockerfile.
    if (rules.hasNegation || dockerfileAbs.startsWith(`${name}${path.sep}`)) {
      try {
        if (statSync(name).isDirectory()) return false;
      } catch {
        return true;
      }
    }
    return true;
  };
  const pack = tar.pack(contextDir, {
    ignore,
    finalize: false,
    finish(p) {
      if (dockerfile.processed) {
        p.entry({ name: dockerfile.pathRel, mode: 0o644, mtime: new Date(0) }, dockerfile.contents);
      }
      if (replaceDockerignore) {
        p.entry({ name: '.dockerignore', mode: 0o644, mtime: new Date(0) }, `.dockerignore\n${dockerfile.pathRel}\n`);
      }
      p.finalize();
    },
  });
  let total = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      total += chunk.length;
      options.onBytes?.(total);
      cb(null, chunk);
    },
  });
  pack.on('error', (err: Error) => counter.destroy(err));
  return pack.pipe(counter);
}
