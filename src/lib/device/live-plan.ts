/**
 * Live updates, the pure part: which files of a build context reach the image where, and what a
 * change to one of them needs.
 *
 * A file copied into the final stage, with no RUN after the copy, can be synced into the running
 * container (then the service restarts). A file that a RUN step may read (copied before a RUN, or
 * into an earlier stage of a multi-stage build), the Dockerfile itself, a .dockerignore, an archive
 * that ADD unpacks, or a deleted file needs the service rebuilt. A file no COPY/ADD takes is not in
 * the image and needs nothing.
 */
import path from 'node:path';
import { logicalLines, substituteArgs as substitute, unquote } from '../project/dockerfile.js';

export interface CopyInstruction {
  /** 1-based line in the Dockerfile. */
  line: number;
  /** Sources as written, relative to the build context (posix, without a leading './'). */
  sources: string[];
  /** Absolute destination in the image, WORKDIR applied; ends with '/' when written so. */
  dest: string;
  /** Whether the copy lands in the final stage with no RUN after it, i.e. can be synced. */
  syncable: boolean;
  /** Why it cannot be synced, when it cannot. */
  reason?: string;
}

export interface CopyMap {
  copies: CopyInstruction[];
}

/** What a change to a file needs. */
export type LiveAction =
  | { kind: 'ignore' }
  | { kind: 'rebuild'; reason: string }
  /** `dest` is absolute; `destIsDir` undefined means "a directory if it exists as one in the container". */
  | { kind: 'sync'; targets: Array<{ dest: string; destMayBeDir: boolean }> };

const ARCHIVE = /\.(tar|tar\.gz|tgz|tar\.bz2|tbz2?|tar\.xz|txz|tar\.zst)$/i;

/** Reads the COPY/ADD instructions of a Dockerfile (already template-processed). */
export function copyMap(contents: string, buildArgs: Record<string, string> = {}): CopyMap {
  const vars: Record<string, string> = { ...buildArgs };
  const stages: Array<{ copies: Array<Omit<CopyInstruction, 'syncable'> & { archive: boolean }>; runAfter: Set<number>; workdir: string }> = [];
  for (const { text, line } of logicalLines(contents)) {
    const m = /^\s*([A-Za-z]+)\s+([\s\S]*)$/.exec(text);
    if (!m) continue;
    const instr = (m[1] ?? '').toUpperCase();
    const rest = (m[2] ?? '').trim();
    const stage = stages[stages.length - 1];
    if (instr === 'FROM') {
      stages.push({ copies: [], runAfter: new Set(), workdir: '/' });
    } else if ((instr === 'ARG' || instr === 'ENV') && rest) {
      for (const [k, v] of assignments(rest, instr === 'ARG')) vars[k] = instr === 'ARG' ? (buildArgs[k] ?? v) : substitute(v, vars);
    } else if (!stage) {
      continue;
    } else if (instr === 'WORKDIR') {
      const dir = substitute(unquote(rest), vars);
      stage.workdir = path.posix.resolve(stage.workdir, dir);
    } else if (instr === 'RUN') {
      stage.copies.forEach((_c, i) => stage.runAfter.add(i));
    } else if (instr === 'COPY' || instr === 'ADD') {
      const flags = /^(?:--\S+\s+)*/.exec(rest)?.[0] ?? '';
      const words = splitWords(rest.slice(flags.length));
      const fromStage = /(^|\s)--from[=\s]/.test(flags);
      if (fromStage || words.length < 2) continue; // copies from another stage or image: not from the context
      const dest = substitute(words.pop() ?? '', vars);
      const sources = words.map((s) => normaliseSource(substitute(s, vars))).filter((s) => !/^[a-z]+:\/\//i.test(s));
      const absDest = path.posix.resolve(stage.workdir, dest) + (dest.endsWith('/') && dest !== '/' ? '/' : '');
      stage.copies.push({ line, sources, dest: absDest === '/' ? '/' : absDest, archive: instr === 'ADD' && sources.some((s) => ARCHIVE.test(s)) });
    }
  }
  const copies: CopyInstruction[] = [];
  stages.forEach((stage, s) => {
    const final = s === stages.length - 1;
    stage.copies.forEach((c, i) => {
      const reason = !final ? `it is copied into an earlier build stage (line ${c.line})`
        : stage.runAfter.has(i) ? `a RUN step comes after its COPY (line ${c.line})`
        : c.archive ? `ADD unpacks it (line ${c.line})`
        : undefined;
      copies.push({ line: c.line, sources: c.sources, dest: c.dest, syncable: reason === undefined, ...(reason ? { reason } : {}) });
    });
  });
  return { copies };
}

/**
 * What a change to `rel` (a file's path relative to the build context, posix) needs. `deleted`:
 * the file is gone (a sync cannot remove files in every image, so that is a rebuild).
 */
export function liveAction(map: CopyMap, rel: string, deleted = false): LiveAction {
  const targets: Array<{ dest: string; destMayBeDir: boolean }> = [];
  for (const copy of map.copies) {
    const multi = copy.sources.length > 1 || copy.sources.some(isGlob);
    for (const source of copy.sources) {
      const where = matchSource(source, rel);
      if (where === undefined) continue;
      if (!copy.syncable || deleted) return { kind: 'rebuild', reason: deleted ? `'${rel}' was deleted` : `'${rel}' is used by the build: ${copy.reason ?? ''}` };
      if (where.inside !== undefined) {
        // A folder's contents are copied into the destination folder.
        targets.push({ dest: path.posix.join(copy.dest, where.inside), destMayBeDir: false });
      } else if (copy.dest.endsWith('/') || multi) {
        targets.push({ dest: path.posix.join(copy.dest, path.posix.basename(rel)), destMayBeDir: false });
      } else {
        // `COPY a.txt /x`: /x is the file, unless /x is a folder in the image.
        targets.push({ dest: copy.dest, destMayBeDir: true });
      }
    }
  }
  return targets.length > 0 ? { kind: 'sync', targets } : { kind: 'ignore' };
}

/** Where `rel` falls under a COPY source: the file itself (`inside` undefined) or inside a copied folder. */
function matchSource(source: string, rel: string): { inside?: string } | undefined {
  if (source === '.' || source === '') return { inside: rel };
  const pattern = globToRegExp(source.replace(/\/+$/, ''));
  if (pattern.test(rel)) return {};
  // A source naming a folder (or a glob matching one) copies what is inside it.
  const parts = rel.split('/');
  for (let i = parts.length - 1; i > 0; i--) {
    if (pattern.test(parts.slice(0, i).join('/'))) return { inside: parts.slice(i).join('/') };
  }
  return undefined;
}

function isGlob(s: string): boolean {
  return /[*?[]/.test(s);
}

/** Docker's COPY patterns (Go filepath.Match): `*` and `?` stay within one path segment, `[...]` classes. */
export function globToRegExp(glob: string): RegExp {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i] ?? '';
    if (ch === '*') out += '[^/]*';
    else if (ch === '?') out += '[^/]';
    else if (ch === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end === -1) out += '\\[';
      else {
        out += `[${glob.slice(i + 1, end).replace(/^!/, '^').replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else if (ch === '\\' && i + 1 < glob.length) {
      out += `\\${glob[++i] ?? ''}`;
    } else out += ch.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${out}$`);
}

function normaliseSource(s: string): string {
  const posix = path.posix.normalize(s.replace(/\\/g, '/'));
  return posix.replace(/^\.\/+/, '').replace(/^\/+/, '') || '.';
}

/** Words of an instruction: the JSON array form, or whitespace-separated with quotes. */
function splitWords(rest: string): string[] {
  if (rest.startsWith('[')) {
    try {
      const parsed: unknown = JSON.parse(rest);
      if (Array.isArray(parsed) && parsed.every((x) => typeof x === 'string')) return parsed as string[];
    } catch {
      // not JSON: fall through to the shell form
    }
  }
  return (rest.match(/"[^"]*"|'[^']*'|\S+/g) ?? []).map(unquote);
}

function assignments(rest: string, isArg: boolean): Array<[string, string]> {
  const words = splitWords(rest);
  // The old `ENV KEY value with spaces` form.
  if (!isArg && words.length >= 2 && !words[0]?.includes('=')) return [[words[0] ?? '', words.slice(1).join(' ')]];
  return words.map((w) => {
    const eq = w.indexOf('=');
    return eq === -1 ? [w, ''] : [w.slice(0, eq), w.slice(eq + 1)];
  });
}

