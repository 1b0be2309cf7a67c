/**
 * The project's `.env` file, read by compose's rules (compose-spec/compose-go `dotenv`): one
 * `NAME=value` (or `NAME: value`) a line, `export ` allowed in front, `#` comments, values bare,
 * 'single-quoted' (literal) or "double-quoted" (escapes, may span lines), and `${VAR}` substitution
 * in bare and double-quoted values from the process environment and the lines above.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { SkiffError } from '../errors/errors.js';
import { describeProblem, interpolate, type Lookup } from './interpolate.js';
import type { ProjectWarning } from './types.js';

/** What a `.env` sets, and what deserves a warning (variables it uses that are not set, ignored names). */
export interface DotenvResult {
  /** The variables the file sets, in file order. */
  values: Record<string, string>;
  warnings: ProjectWarning[];
}

/** The `.env` beside the compose file, or no values when there is none. */
export function readDotenv(projectDir: string, environment: Lookup): DotenvResult & { file?: string } {
  const file = path.join(projectDir, '.env');
  if (!existsSync(file)) return { values: {}, warnings: [] };
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new SkiffError('project', `cannot read .env: ${(err as Error).message}`, { where: '.env', hint: 'make .env a readable file, or remove it' });
  }
  return { file, ...parseDotenv(text, environment) };
}

const NAME_CHAR = /[\p{L}\p{N}_.\-[\]]/u;
const SPACE = /[ \t\v\f\r\u0085\u00a0]/;

/**
 * Parses `.env` text. `environment` answers first when a value refers to a variable (the process
 * environment wins over the file, as in compose); then come the file's own earlier lines.
 *
 * @param label - how errors name the file, e.g. `.env` → `.env:4: unterminated quoted value`
 * @throws SkiffError('project') with `where` = `label:line` for a line compose would refuse
 */
export function parseDotenv(text: string, environment: Lookup, label = '.env'): DotenvResult {
  const src = text.startsWith('\uFEFF') ? text.slice(1) : text;
  const values: Record<string, string> = {};
  const warnings: ProjectWarning[] = [];
  const warned = new Set<string>();
  let i = 0;
  let line = 1;
  const fail = (at: number, message: string, hint?: string): SkiffError => new SkiffError('project', message, { where: `${label}:${at}`, ...(hint ? { hint } : {}) });
  const lookup: Lookup = (name) => environment(name) ?? values[name];

  const substitute = (value: string, at: number): string => {
    const result = interpolate(value, lookup);
    if (!result.ok) throw fail(at, describeProblem(result.problem, value), result.problem.kind === 'invalid' ? 'write a literal $ as $$' : undefined);
    for (const name of result.unset) {
      if (warned.has(name)) continue;
      warned.add(name);
      warnings.push({ message: `variable ${name} is not set; using an empty string`, where: `${label}:${at}` });
    }
    return result.value;
  };

  while (i < src.length) {
    const c = src[i] ?? '';
    if (c === '\n') {
      line++;
      i++;
      continue;
    }
    if (SPACE.test(c)) {
      i++;
      continue;
    }
    const eol = src.indexOf('\n', i) < 0 ? src.length : src.indexOf('\n', i);
    if (c === '#') {
      i = eol;
      continue;
    }
    const at = line;
    const exported = /^export[ \t]+/.exec(src.slice(i, eol));
    if (exported) i += exported[0].length;

    // The name runs to '=', ':' or the end of the line; a bare name takes its value from the environment.
    let j = i;
    while (j < eol && src[j] !== '=' && src[j] !== ':') {
      const ch = src[j] ?? '';
      if (!SPACE.test(ch) && !NAME_CHAR.test(ch)) {
        throw fail(at, `unexpected character '${ch}' in variable name '${src.slice(i, eol).trim()}'`, 'write NAME=value, with a name of letters, digits, "_", ".", "-"');
      }
      j++;
    }
    const name = src.slice(i, j).trim();
    if (/\s/.test(name)) throw fail(at, `variable name '${name}' contains a space`, 'write NAME=value');
    if (name === '') throw fail(at, `no variable name before '${src[j] ?? ''}'`, 'write NAME=value');
    const ignored = /^\d/.test(name);
    if (ignored) warnings.push({ message: `variable name '${name}' starts with a digit; the line is ignored, as compose does`, where: `${label}:${at}` });

    if (j >= eol) {
      const inherited = environment(name);
      if (inherited !== undefined && !ignored) values[name] = inherited;
      i = eol;
      continue;
    }
    i = j + 1;
    while (i < eol && SPACE.test(src[i] ?? '')) i++;

    let value: string;
    const quote = src[i];
    if (quote === '"' || quote === "'") {
      const [raw, close, lines] = quoted(src, i, quote);
      if (close < 0) throw fail(at, `unterminated quoted value ${src.slice(i, eol).trimEnd()}`, `close it with ${quote}`);
      line += lines;
      const restEnd = src.indexOf('\n', close) < 0 ? src.length : src.indexOf('\n', close);
      const rest = src.slice(close + 1, restEnd).trim();
      if (rest !== '' && !rest.startsWith('#')) throw fail(line, `unexpected '${rest}' after the quoted value of ${name}`, 'put one NAME=value on a line; start a comment with #');
      value = quote === '"' ? substitute(unescape(raw), at) : raw;
      i = restEnd;
    } else {
      // Bare values end at the line's end or at ' #', a comment.
      let raw = src.slice(i, eol);
      const comment = raw.indexOf(' #');
      if (comment >= 0) raw = raw.slice(0, comment);
      value = substitute(raw.trimEnd(), at);
      i = eol;
    }
    if (!ignored) values[name] = value;
  }
  return { values, warnings };
}

/**
 * The text between `open` and its closing quote, with `\<quote>` read as the quote and other
 * backslashes kept for {@link unescape}; the index of the closing quote (-1 if none) and how many
 * newlines the value spans.
 */
function quoted(src: string, open: number, quote: string): [string, number, number] {
  let out = '';
  let lines = 0;
  for (let k = open + 1; k < src.length; k++) {
    const ch = src[k] ?? '';
    if (ch === '\n') lines++;
    if (ch === '\\' && k + 1 < src.length) {
      const next = src[k + 1] ?? '';
      out += next === quote ? next : `\\${next}`;
      if (next === '\n') lines++;
      k++;
      continue;
    }
    if (ch === quote) return [out, k, lines];
    out += ch;
  }
  return [out, -1, lines];
}

const ESCAPES: Record<string, string> = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\', '"': '"' };

/** Double-quoted escapes; `\$` stays a literal dollar (as `$$`, so substitution leaves it). Others keep their backslash. */
function unescape(raw: string): string {
  return raw.replace(/\\(0[0-7]{0,3}|[^])/g, (match, seq: string) => {
    if (seq === '$') return '$$';
    if (seq.startsWith('0')) return String.fromCharCode(parseInt(seq, 8));
    return ESCAPES[seq] ?? match;
  });
}
