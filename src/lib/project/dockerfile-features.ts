/**
 * What a Dockerfile asks of the builder, read by Skiff itself: BuildKit-only syntax the classic
 * builder rejects, the secrets its `RUN --mount=type=secret` expect, and a lowering of Dockerfile 1.4
 * syntax (heredocs, `COPY --link`) into instructions the built-in frontend of engine 20.10 (BuildKit
 * 0.8) understands. We cannot ship a newer frontend image (no registry), so we rewrite instead.
 *
 * The parsing follows the Dockerfile reference (docs.docker.com/reference/dockerfile: parser
 * directives, escape, heredocs) and BuildKit's frontend/dockerfile parser and dispatchRun.
 */
import { SkiffError } from '../errors/errors.js';

/** A use of syntax the classic builder rejects, e.g. `{ line: 4, what: 'RUN --mount=type=cache' }`. */
export interface BuildkitOnlyUse {
  /** 1-based line of the instruction's first line. */
  line: number;
  /** The syntax, as a user would write it: `RUN --mount=type=secret`, `COPY --link`, `RUN heredoc (<<EOF)`. */
  what: string;
}

/** A `RUN --mount=type=secret` as BuildKit reads it. */
export interface SecretMount {
  /** The secret's id; BuildKit's default is the basename of `target`. */
  id: string;
  line: number;
  /** `required` / `required=true` → true, `required=false` → false, absent → undefined. */
  required: boolean | undefined;
  target?: string;
}

/** What {@link scanDockerfile} found. */
export interface DockerfileScan {
  /** The `# syntax=` parser directive, only when it is in the directive block at the top. */
  syntax?: { image: string; line: number };
  /** The escape character (`\` unless `# escape=` says `` ` ``). */
  escape: '\\' | '`';
  /** Every BuildKit-only use, in file order. */
  buildkitOnly: BuildkitOnlyUse[];
  secretMounts: SecretMount[];
  /** How many heredocs (`<<EOF` words) RUN/COPY/ADD hold. */
  heredocs: number;
  /** How many COPY/ADD instructions carry `--link` (any value). */
  copyLink: number;
}

interface Flag {
  /** Without the leading `--`, lower case. */
  name: string;
  value?: string;
  raw: string;
}

interface Heredoc {
  /** The end marker, quotes removed. */
  name: string;
  /** The word as written, e.g. `<<-"EOF"`. */
  word: string;
  /** A quoted marker: no expansion. */
  quoted: boolean;
  /** `<<-`: leading tabs are stripped from the body and the end marker. */
  chomp: boolean;
  /** The lines between the instruction and the end marker, each ending in `\n`, raw. */
  body: string;
}

interface Instruction {
  /** The keyword as written (`run`, `RUN`) and upper-cased. */
  keywordRaw: string;
  keyword: string;
  /** 0-based indexes of the first and last physical line, heredoc bodies and end markers included. */
  first: number;
  last: number;
  flags: Flag[];
  /** The text after the flags, continuation lines joined the way BuildKit joins them. */
  args: string;
  heredocs: Heredoc[];
}

interface ParsedDockerfile {
  lines: string[];
  syntax?: { image: string; line: number };
  escape: '\\' | '`';
  instructions: Instruction[];
}

const DIRECTIVE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$/;
const KNOWN_DIRECTIVES = new Set(['syntax', 'escape', 'check']);
const HEREDOC_WORD = /^(\d*)<<(-?)([^<].*)$/;
const HEREDOC_INSTRUCTIONS = new Set(['RUN', 'COPY', 'ADD']);

function parseDockerfile(contents: string, where: string): ParsedDockerfile {
  const lines = contents.split('\n').map((l) => l.replace(/\r$/, ''));
  if (lines[0]?.startsWith('\uFEFF')) lines[0] = lines[0].slice(1);
  let escape: '\\' | '`' = '\\';
  let syntax: ParsedDockerfile['syntax'];
  // Directives only count in the unbroken block of `# key=value` comments at the very top; the first
  // other line (a comment, a blank line, an unknown directive, an instruction) ends it.
  for (let i = 0; i < lines.length; i++) {
    const m = DIRECTIVE.exec(lines[i] ?? '');
    const key = m?.[1]?.toLowerCase();
    if (!m || key === undefined || !KNOWN_DIRECTIVES.has(key)) break;
    const value = m[2] ?? '';
    if (key === 'syntax' && !syntax) syntax = { image: value, line: i + 1 };
    if (key === 'escape') {
      if (value !== '\\' && value !== '`') {
        throw new SkiffError('project', `invalid escape directive '${value}'`, { where: `${where}:${i + 1}`, hint: 'use # escape=\\ or # escape=`' });
      }
      escape = value;
    }
  }
  const instructions: Instruction[] = [];
  const isComment = (l: string) => /^\s*#/.test(l);
  const continues = (l: string) => {
    const t = l.replace(/[ \t]+$/, '');
    return t.endsWith(escape) ? t.slice(0, -1) : undefined;
  };
  let i = 0;
  while (i < lines.length) {
    const raw = lines[i] ?? '';
    if (raw.trim() === '' || isComment(raw)) {
      i++;
      continue;
    }
    const first = i;
    let text = raw.replace(/^\s+/, '');
    let cut = continues(text);
    while (cut !== undefined && i + 1 < lines.length) {
      text = cut;
      i++;
      const next = lines[i] ?? '';
      // BuildKit drops comment lines and blank lines inside a continued instruction.
      if (next.trim() === '' || isComment(next)) {
        cut = text;
        continue;
      }
      text += next;
      cut = continues(next) === undefined ? undefined : continues(text);
    }
    if (cut !== undefined) text = cut;
    const km = /^(\S+)\s*([\s\S]*)$/.exec(text);
    const keywordRaw = km?.[1] ?? '';
    const keyword = keywordRaw.toUpperCase();
    const { flags, args } = splitFlags(km?.[2] ?? '', where, first + 1);
    const heredocs: Heredoc[] = [];
    if (HEREDOC_INSTRUCTIONS.has(keyword) && !args.startsWith('[')) {
      for (const word of shellWords(args)) {
        const hm = HEREDOC_WORD.exec(word);
        if (!hm) continue;
        const quoted = /["']/.test(hm[3] ?? '');
        const name = (hm[3] ?? '').replace(/["']/g, '');
        if (name === '') continue;
        const chomp = hm[2] === '-';
        let body = '';
        let closed = false;
        while (i + 1 < lines.length) {
          i++;
          const l = lines[i] ?? '';
          if ((chomp ? l.replace(/^\t+/, '') : l) === name) {
            closed = true;
            break;
          }
          body += `${l}\n`;
        }
        if (!closed) {
          throw new SkiffError('project', `heredoc ${word} opened here is never closed: no line reads ${name}`, {
            where: `${where}:${first + 1}`,
            hint: `add a line reading exactly ${name} after the heredoc's last line`,
          });
        }
        heredocs.push({ name, word, quoted, chomp, body });
      }
    }
    instructions.push({ keywordRaw, keyword, first, last: i, flags, args, heredocs });
    i++;
  }
  return { lines, ...(syntax ? { syntax } : {}), escape, instructions };
}

/** The leading `--name[=value]` words of an instruction, as BuildKit reads them before the arguments. */
function splitFlags(rest: string, where: string, line: number): { flags: Flag[]; args: string } {
  const flags: Flag[] = [];
  let s = rest.replace(/^\s+/, '');
  for (;;) {
    if (!s.startsWith('--')) break;
    const word = shellWords(s)[0] ?? '';
    s = s.slice(word.length).replace(/^\s+/, '');
    if (word === '--') break;
    const eq = word.indexOf('=');
    const name = (eq < 0 ? word.slice(2) : word.slice(2, eq)).toLowerCase();
    const value = eq < 0 ? undefined : word.slice(eq + 1).replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1');
    if (name === 'mount' && !value) {
      throw new SkiffError('project', `--mount needs a value, e.g. --mount=type=cache,target=/root/.cache`, { where: `${where}:${line}`, hint: 'write the mount options after --mount=' });
    }
    flags.push({ name, ...(value !== undefined ? { value } : {}), raw: word });
  }
  return { flags, args: s };
}

/** Whitespace-separated words, quotes kept, whitespace inside quotes not splitting. */
function shellWords(s: string): string[] {
  const words: string[] = [];
  let cur = '';
  let quote = '';
  for (const ch of s) {
    if (quote) {
      cur += ch;
      if (ch === quote) quote = '';
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      cur += ch;
    } else if (/\s/.test(ch)) {
      if (cur) words.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (cur) words.push(cur);
  return words;
}

/** `key=value,key2` options of a `--mount`, as BuildKit's CSV reader splits them. */
function mountOptions(value: string): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>();
  const fields: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of value) {
    if (ch === '"') quoted = !quoted;
    else if (ch === ',' && !quoted) {
      fields.push(cur);
      cur = '';
    } else cur += ch;
  }
  fields.push(cur);
  for (const f of fields) {
    if (f === '') continue;
    const eq = f.indexOf('=');
    if (eq < 0) out.set(f.trim().toLowerCase(), undefined);
    else out.set(f.slice(0, eq).trim().toLowerCase(), f.slice(eq + 1));
  }
  return out;
}

function parseBool(v: string | undefined): boolean | undefined {
  if (v === undefined) return true;
  if (/^(true|1)$/i.test(v)) return true;
  if (/^(false|0)$/i.test(v)) return false;
  return undefined;
}

/**
 * Reads a Dockerfile for the syntax a builder must support and the secrets it mounts.
 * @param contents the Dockerfile's text (after template substitution)
 * @param where its display path, e.g. `web/Dockerfile`; errors say `where:line`
 * @throws SkiffError('project') for a heredoc whose end marker never comes, a `--mount` without a
 *   value, a secret mount with neither `id` nor `target`, or an invalid `# escape=` directive
 */
export function scanDockerfile(contents: string, where: string): DockerfileScan {
  const parsed = parseDockerfile(contents, where);
  const buildkitOnly: BuildkitOnlyUse[] = [];
  const secretMounts: SecretMount[] = [];
  let heredocs = 0;
  let copyLink = 0;
  for (const ins of parsed.instructions) {
    const line = ins.first + 1;
    const k = ins.keyword;
    for (const f of ins.flags) {
      if (k === 'RUN' && f.name === 'mount') {
        const opts = mountOptions(f.value ?? '');
        const type = opts.get('type') ?? 'bind';
        buildkitOnly.push({ line, what: `RUN --mount=type=${type}` });
        if (type === 'secret') {
          const target = opts.get('target') ?? opts.get('dst') ?? opts.get('destination');
          const id = opts.get('id') || (target ? target.replace(/\/+$/, '').split('/').pop() : undefined);
          if (!id) {
            throw new SkiffError('project', 'RUN --mount=type=secret names no secret', { where: `${where}:${line}`, hint: 'add id=<name> (or target=<path>) to the mount' });
          }
          const required = opts.has('required') ? parseBool(opts.get('required')) : undefined;
          secretMounts.push({ id, line, required, ...(target ? { target } : {}) });
        }
      } else if (k === 'RUN' && (f.name === 'network' || f.name === 'security')) {
        buildkitOnly.push({ line, what: `RUN --${f.name}` });
      } else if ((k === 'COPY' || k === 'ADD') && (f.name === 'chmod' || f.name === 'link')) {
        buildkitOnly.push({ line, what: `${k} --${f.name}` });
        if (f.name === 'link') copyLink++;
      } else if ((k === 'COPY' && f.name === 'parents') || (k === 'ADD' && (f.name === 'checksum' || f.name === 'keep-git-dir'))) {
        buildkitOnly.push({ line, what: `${k} --${f.name}` });
      }
    }
    for (const h of ins.heredocs) {
      heredocs++;
      buildkitOnly.push({ line, what: `${k} heredoc (${h.word})` });
    }
  }
  return { ...(parsed.syntax ? { syntax: parsed.syntax } : {}), escape: parsed.escape, buildkitOnly, secretMounts, heredocs, copyLink };
}

interface Stage {
  shell: string[];
  scratch: boolean;
  /** The stage's USER so far (inherited from a parent stage), as written; undefined: root. */
  user?: string;
}

/** Whether a USER value is root (`root`, `0`, with any group). */
function isRootUser(user: string): boolean {
  return /^(root|0)(:.*)?$/.test(user.trim());
}

const DEFAULT_SHELL = ['/bin/sh', '-c'];

/**
 * Rewrites Dockerfile 1.4 syntax that the built-in frontend of engine 20.10 lacks into instructions it
 * understands. The caller decides whether the engine needs it; a Dockerfile with a `# syntax=`
 * directive comes back unchanged, as the frontend it names parses it.
 *
 * - `RUN` heredocs, with BuildKit's dispatchRun semantics: a lone heredoc runs its content in the
 *   stage's shell (exec form `RUN ["/bin/sh","-c","<content>"]`, flags kept); a lone heredoc
 *   starting with `#!` is written to a temporary file, made executable, run and removed, keeping its
 *   exit status; any other command with heredocs goes to the shell whole (command line, bodies and
 *   end markers), which reads heredocs itself. The stage's shell is the last `SHELL` of the stage or
 *   of the stage it builds FROM; a base image's own SHELL is not known here (`/bin/sh -c` is assumed).
 * - `COPY`/`ADD` heredocs become a `RUN` that writes each file with the shell (a quoted marker is
 *   written verbatim; an unquoted one lets the shell expand `$VAR`, with command substitution made
 *   literal, as BuildKit only expands variables), creating parent directories, applying `--chmod`
 *   (default 0644) and `--chown`; a destination ending in `/` (or several sources) gets the
 *   heredoc's name as file name; relative destinations are relative to WORKDIR. This needs a shell
 *   and `cat`, `mkdir`, `chmod` (`chown`) in the stage: a `FROM scratch` stage cannot, and is refused.
 * - `--link` / `--link=<bool>` on COPY/ADD is dropped: the same files, only layer reuse differs.
 *
 * A rewritten instruction goes on its first line and the lines it spanned (continuations, heredoc
 * bodies, end markers) become empty lines, so the engine's "line N" still points at the user's line.
 * Everything else is kept byte for byte.
 *
 * @param options which features to lower
 * @returns the new text and one change per rewritten instruction (1-based line, what was done)
 * @throws SkiffError('project') for a COPY/ADD heredoc in a `FROM scratch` stage, and for what
 *   {@link scanDockerfile} throws for
 */
export function lowerDockerfile(
  contents: string,
  where: string,
  options: { heredocs: boolean; copyLink: boolean },
): { contents: string; changes: Array<{ line: number; what: string }> } {
  const parsed = parseDockerfile(contents, where);
  const changes: Array<{ line: number; what: string }> = [];
  if (parsed.syntax) return { contents, changes };
  const out = contents.split('\n');
  const stages = new Map<string, Stage>();
  let stage: Stage = { shell: DEFAULT_SHELL, scratch: false };
  // `overflow`: lines past the instruction's own go into its last line (later line numbers shift).
  const replace = (ins: Instruction, replacement: string[], overflow = false) => {
    let physical = replacement.flatMap((l) => splitLongLine(l, parsed.escape));
    const span = ins.last - ins.first + 1;
    if (overflow && physical.length > span) physical = [...physical.slice(0, span - 1), physical.slice(span - 1).join('\n')];
    if (physical.length > span) {
      throw new SkiffError('project', `${ins.keyword} heredoc is too long to rewrite for this engine's Dockerfile parser (${MAX_LINE} characters a line)`, {
        where: `${where}:${ins.first + 1}`,
        hint: 'copy the content from a file in the build context instead, or build on an engine with Docker 23+',
      });
    }
    for (let n = ins.first; n <= ins.last; n++) {
      const cr = (out[n] ?? '').endsWith('\r') ? '\r' : '';
      out[n] = `${physical[n - ins.first] ?? ''}${cr}`;
    }
  };
  for (const ins of parsed.instructions) {
    const line = ins.first + 1;
    if (ins.keyword === 'FROM') {
      const words = shellWords(ins.args);
      const image = (words[0] ?? '').toLowerCase();
      const parent = stages.get(image);
      stage = { shell: parent?.shell ?? DEFAULT_SHELL, scratch: image === 'scratch' || (parent?.scratch ?? false), ...(parent?.user !== undefined ? { user: parent.user } : {}) };
      if (words[1]?.toUpperCase() === 'AS' && words[2]) stages.set(words[2].toLowerCase(), stage);
      continue;
    }
    if (ins.keyword === 'USER') {
      stage.user = ins.args.trim();
      continue;
    }
    if (ins.keyword === 'SHELL') {
      try {
        const shell: unknown = JSON.parse(ins.args);
        if (Array.isArray(shell) && shell.every((s): s is string => typeof s === 'string') && shell.length > 0) stage.shell = shell;
      } catch {
        // The engine reports a malformed SHELL itself, with its line.
      }
      continue;
    }
    const isCopy = ins.keyword === 'COPY' || ins.keyword === 'ADD';
    const link = isCopy && options.copyLink ? ins.flags.filter((f) => f.name === 'link') : [];
    const lowerHeredocs = options.heredocs && ins.heredocs.length > 0;
    if (link.length === 0 && !lowerHeredocs) continue;
    const flags = ins.flags.filter((f) => !(isCopy && options.copyLink && f.name === 'link'));
    const flagText = flags.map((f) => `${f.raw} `).join('');
    if (link.length > 0) changes.push({ line, what: `${ins.keyword} --link dropped (same files; only layer reuse differs)` });
    if (!lowerHeredocs) {
      replace(ins, [`${ins.keywordRaw} ${flagText}${ins.args}`]);
      continue;
    }
    if (ins.keyword === 'RUN') {
      const { script, what } = runHeredocScript(ins);
      replace(ins, [`${ins.keywordRaw} ${flagText}${execJson(stage.shell, script, ins, where)}`]);
      changes.push({ line, what: `${what}, run by ${stage.shell.join(' ')}` });
      continue;
    }
    if (stage.scratch) {
      throw new SkiffError('project', `${ins.keyword} heredoc (${ins.heredocs[0]?.word ?? ''}) in a FROM scratch stage needs a newer Dockerfile frontend than this engine has`, {
        where: `${where}:${line}`,
        hint: 'remove the heredoc (copy a file from the build context instead) or build on an engine with Docker 23+',
      });
    }
    const words = shellWords(ins.args);
    const dest = words[words.length - 1] ?? '';
    const sources = words.slice(0, -1);
    const heredocWords = new Set(ins.heredocs.map((h) => h.word));
    const plain = sources.filter((w) => !heredocWords.has(w));
    const intoDir = dest.endsWith('/') || sources.length > 1;
    const chmod = flags.find((f) => f.name === 'chmod')?.value ?? '0644';
    const chown = flags.find((f) => f.name === 'chown')?.value;
    const script = ['set -e', ...ins.heredocs.map((h) => writeFileScript(h, dest, intoDir, chmod, chown))].join('\n');
    const run = `RUN ${execJson(stage.shell, script, ins, where)}`;
    // COPY writes as root whatever USER says; the RUN that stands in for it must too.
    const user = stage.user !== undefined && !isRootUser(stage.user) ? stage.user : undefined;
    const writes = user !== undefined ? ['USER 0:0', run, `USER ${user}`] : [run];
    if (plain.length > 0) {
      // The context files still come with COPY; the heredocs follow on the next line (there is at
      // least the end marker's line to take).
      replace(ins, [`${ins.keywordRaw} ${flagText}${[...plain, dest].join(' ')}`, ...writes], true);
    } else {
      replace(ins, writes, true);
    }
    changes.push({ line, what: `${ins.keyword} heredoc${ins.heredocs.length > 1 ? 's' : ''} written by RUN with ${stage.shell.join(' ')}` });
  }
  return { contents: changes.length > 0 ? out.join('\n') : contents, changes };
}

/** The Dockerfile parser reads physical lines with Go's bufio.Scanner: 64 KiB, newline included. */
const MAX_LINE = 65_535;
/** Linux's MAX_ARG_STRLEN: one argument to exec, such as the script for `sh -c`, at most 128 KiB. */
const MAX_ARG = 131_072;

/** The exec-form JSON of a lowered RUN, refused when the kernel would not take the script as one argument. */
function execJson(shell: string[], script: string, ins: Instruction, where: string): string {
  if (Buffer.byteLength(script, 'utf8') >= MAX_ARG) {
    throw new SkiffError('project', `${ins.keyword} heredoc is too long to rewrite for this engine: the shell would get it as one argument of more than 128 KiB`, {
      where: `${where}:${ins.first + 1}`,
      hint: 'put the content in a file in the build context and COPY (or RUN) that file, or split the heredoc',
    });
  }
  return JSON.stringify([...shell, script]);
}

/** Where a long line is cut, leaving room for the escape character and a CR. */
const CUT_AT = 60_000;

/**
 * A line the engine's parser would refuse as too long, cut into continuation lines it joins back to
 * the same text: each piece but the last ends with the escape character (the parser removes it and
 * nothing else), and no piece after the first may look like a comment or be blank, as the parser
 * drops those inside a continued instruction; so a cut never falls before whitespace or `#`, nor
 * after a `\` or `` ` `` (engine 20.10's parser does not continue a line ending in two escapes).
 */
function splitLongLine(text: string, escape: string): string[] {
  const pieces: string[] = [];
  let rest = text;
  while (rest.length > CUT_AT) {
    let cut = CUT_AT;
    while (cut > 1 && (/[\s#]/.test(rest.charAt(cut)) || /[\\`]/.test(rest.charAt(cut - 1)))) cut--;
    pieces.push(`${rest.slice(0, cut)}${escape}`);
    rest = rest.slice(cut);
  }
  pieces.push(rest);
  return pieces;
}

function stripTabs(body: string): string {
  return body.replace(/^\t+/gm, '');
}

/** A marker for a heredoc of our own that no line of `body` equals. */
function freshMarker(body: string): string {
  const lines = new Set(body.split('\n'));
  let marker = 'SKIFF_EOF';
  for (let n = 1; lines.has(marker); n++) marker = `SKIFF_EOF_${n}`;
  return marker;
}

function runHeredocScript(ins: Instruction): { script: string; what: string } {
  const only = ins.heredocs.length === 1 ? ins.heredocs[0] : undefined;
  if (only && ins.args.trim() === only.word) {
    const data = only.chomp ? stripTabs(only.body) : only.body;
    if (!data.startsWith('#!')) return { script: data, what: `RUN heredoc (${only.word})` };
    // BuildKit mounts the script as an executable file and runs that; a temporary file does the same.
    const marker = freshMarker(data);
    const script = [
      'f="${TMPDIR:-/tmp}/skiff-heredoc-$$"',
      `cat > "$f" <<'${marker}'`,
      `${data}${marker}`,
      'chmod +x "$f"',
      '"$f"',
      's=$?',
      'rm -f "$f"',
      'exit $s',
    ].join('\n');
    return { script, what: `RUN heredoc script (${only.word}) written to a temporary file` };
  }
  const full = ins.heredocs.reduce((acc, h) => `${acc}\n${h.body}${h.name}`, ins.args);
  return { script: full, what: `RUN with heredoc${ins.heredocs.length > 1 ? 's' : ''} (${ins.heredocs.map((h) => h.word).join(' ')})` };
}

/** `"…"` for the shell, `$VAR` still expanded (as BuildKit expands build args in a destination). */
function dq(s: string): string {
  return `"${s.replace(/[\\"`]/g, '\\$&')}"`;
}

function sq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function writeFileScript(h: Heredoc, dest: string, intoDir: boolean, chmod: string, chown: string | undefined): string {
  let data = h.chomp ? stripTabs(h.body) : h.body;
  // The shell would run `$(…)` and backticks in an unquoted heredoc; BuildKit only expands variables.
  if (!h.quoted) data = data.replace(/`/g, '\\`').replace(/\$\(/g, '\\$(');
  const marker = freshMarker(data);
  const place = intoDir
    ? [`mkdir -p ${dq(dest)}`, `f=${dq(`${dest.replace(/\/+$/, '')}/${h.name}`)}`]
    : [`f=${dq(dest)}`, `if [ -d "$f" ]; then f="$f"/${sq(h.name)}; else case "$f" in */*) mkdir -p "\${f%/*}/" ;; esac; fi`];
  return [
    ...place,
    `cat > "$f" <<${h.quoted ? `'${marker}'` : marker}`,
    `${data}${marker}`,
    `chmod ${sq(chmod)} "$f"`,
    ...(chown ? [`chown ${dq(chown)} "$f"`] : []),
  ].join('\n');
}

/**
 * The error for a build without BuildKit (classic builder) of a Dockerfile that needs it: the first
 * BuildKit-only use, as `where:line: RUN --mount=type=cache needs BuildKit, which this build does not
 * use (<reason>)`.
 * @param reason why the build is classic, e.g. `--no-buildkit` or `engine 17.06.0 has no BuildKit`
 * @returns undefined when the Dockerfile needs nothing BuildKit-only
 */
export function classicBuilderError(
  scan: DockerfileScan, where: string, reason: string,
  hint = 'build without --no-buildkit (or with --buildkit) on an engine with BuildKit (Docker 18.09+)',
): SkiffError | undefined {
  const first = scan.buildkitOnly[0];
  if (!first) return undefined;
  return new SkiffError('project', `${first.what} needs BuildKit, which this build does not use (${reason})`, {
    where: `${where}:${first.line}`,
    hint,
  });
}

/**
 * The error for the first secret mount whose id was not given and which is not `required=false`
 * (BuildKit itself fails only for required ones; an optional-by-default mount that silently comes up
 * empty is a surprise worth stopping for).
 * @param given the ids of the secrets the build has
 * @returns undefined when every such mount has its secret
 */
export function missingSecretsError(scan: DockerfileScan, given: string[], where: string): SkiffError | undefined {
  const have = new Set(given);
  const missing = scan.secretMounts.find((m) => m.required !== false && !have.has(m.id));
  if (!missing) return undefined;
  return new SkiffError('project', `the Dockerfile mounts secret '${missing.id}', which was not given`, {
    where: `${where}:${missing.line}`,
    hint: `add it to build-secrets in balena.yml (source under .balena/secrets) or pass --secret id=${missing.id},src=<file>`,
  });
}
