/**
 * Compose variable substitution for one string: `$VAR`, `${VAR}`, `${VAR:-default}`,
 * `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `${VAR+alt}` and the `$$`
 * escape, with expressions nested in defaults, messages and alternatives — the rules of
 * compose-spec/compose-go's `template` package. Pure: the caller supplies the variables and turns a
 * problem into an error with its own `file:line`.
 */

/** A variable's value, or undefined when it is not set (set-but-empty is `''`, which differs). */
export type Lookup = (name: string) => string | undefined;

/** Why a template could not be resolved; `column` is 1-based, at the `$` of the expression. */
export type TemplateProblem =
  | { kind: 'invalid'; column: number; message: string }
  | { kind: 'required'; column: number; variable: string; message: string };

/** The resolved text and the variables it used that were not set, or the first problem found. */
export type InterpolateResult =
  | { ok: true; value: string; unset: string[] }
  | { ok: false; problem: TemplateProblem };

type Operator = ':-' | '-' | ':?' | '?' | ':+' | '+';

type Part =
  | { kind: 'text'; text: string }
  | { kind: 'variable'; name: string; column: number; operator?: Operator; argument: Part[] };

class SyntaxProblem {
  constructor(readonly column: number, readonly message: string) {}
}

const NAME_START = /[A-Za-z_]/;
const NAME_REST = /[A-Za-z0-9_]/;
// Longest first, so `:-` is not read as `:` followed by `-`.
const OPERATORS: readonly Operator[] = [':-', ':?', ':+', '-', '?', '+'];

/**
 * Substitutes the variables in `template`.
 *
 * A variable that is not set and has no default becomes `''` and is listed in `unset` (compose warns
 * about it). Defaults, messages and alternatives are only evaluated when used, so `${A:-${B:?}}`
 * with A set is fine. Syntax is checked everywhere, used or not: a typo is a typo.
 *
 * @example
 * interpolate('${RELAY_PORT:-443}:443', (n) => process.env[n])  // { ok: true, value: '443:443', unset: [] }
 * interpolate('${TOKEN:?set it}', () => undefined)             // { ok: false, problem: { kind: 'required', variable: 'TOKEN', message: 'set it', column: 1 } }
 */
export function interpolate(template: string, lookup: Lookup): InterpolateResult {
  let parts: Part[];
  try {
    parts = parse(template);
  } catch (err) {
    if (err instanceof SyntaxProblem) return { ok: false, problem: { kind: 'invalid', column: err.column, message: err.message } };
    throw err;
  }
  const unset = new Set<string>();
  const result = evaluate(parts, lookup, unset);
  if (typeof result !== 'string') return { ok: false, problem: result };
  return { ok: true, value: result, unset: [...unset] };
}

/** Whether the string holds a substitution (`$$` escapes alone do not count); false for bad syntax too. */
export function hasExpression(template: string): boolean {
  if (!template.includes('$')) return false;
  try {
    return parse(template).some((p) => p.kind === 'variable');
  } catch {
    return false;
  }
}

/**
 * One line describing a problem, e.g. `required variable TOKEN is missing a value: set it`, or
 * `invalid variable substitution in 'app:${TAG' at column 5: '${TAG' is not closed` given the text.
 */
export function describeProblem(problem: TemplateProblem, template?: string): string {
  if (problem.kind === 'required') return `required variable ${problem.variable} is missing a value${problem.message ? `: ${problem.message}` : ''}`;
  return `invalid variable substitution${template === undefined ? '' : ` in '${template}'`} at column ${problem.column}: ${problem.message}`;
}

function parse(s: string): Part[] {
  return parseWord(s, 0, false)[0];
}

/**
 * Reads text and expressions from `start`. Inside braces (`nested`) it stops at the `}` that
 * closes the expression; plain `{`…`}` pairs in between stay text, as compose counts them
 * (`${A:-{"json":1}}` defaults to `{"json":1}`).
 */
function parseWord(s: string, start: number, nested: boolean): [Part[], number] {
  const parts: Part[] = [];
  let text = '';
  let depth = 0;
  let i = start;
  const flush = () => {
    if (text) parts.push({ kind: 'text', text });
    text = '';
  };
  while (i < s.length) {
    const c = s[i];
    if (c === '$') {
      const next = s[i + 1];
      if (next === '$') {
        text += '$';
        i += 2;
      } else if (next !== undefined && NAME_START.test(next)) {
        let j = i + 2;
        while (j < s.length && NAME_REST.test(s[j] ?? '')) j++;
        flush();
        parts.push({ kind: 'variable', name: s.slice(i + 1, j), column: i + 1, argument: [] });
        i = j;
      } else if (next === '{') {
        flush();
        const [part, end] = parseBraced(s, i);
        parts.push(part);
        i = end;
      } else {
        // A lone `$` (before a space, a digit, `}` or the end) is text, as in compose.
        text += '$';
        i += 1;
      }
      continue;
    }
    if (nested && c === '{') depth++;
    if (nested && c === '}') {
      if (depth === 0) {
        flush();
        return [parts, i];
      }
      depth--;
    }
    text += c;
    i++;
  }
  flush();
  return [parts, i];
}

/** `${NAME}` or `${NAME<op>word}` starting at the `$` at `dollar`; returns the part and the index after `}`. */
function parseBraced(s: string, dollar: number): [Part, number] {
  const column = dollar + 1;
  let i = dollar + 2;
  if (i >= s.length) throw new SyntaxProblem(column, "'${' is not closed");
  if (!NAME_START.test(s[i] ?? '')) {
    throw new SyntaxProblem(column, s[i] === '}' ? "'${}' names no variable" : `'${s[i] ?? ''}' cannot start a variable name in '${excerpt(s, dollar)}'`);
  }
  while (i < s.length && NAME_REST.test(s[i] ?? '')) i++;
  const name = s.slice(dollar + 2, i);
  if (i >= s.length) throw new SyntaxProblem(column, `'\${${name}' is not closed`);
  if (s[i] === '}') return [{ kind: 'variable', name, column, argument: [] }, i + 1];
  const operator = OPERATORS.find((op) => s.startsWith(op, i));
  if (!operator) throw new SyntaxProblem(column, `unexpected '${s[i] ?? ''}' after the name in '${excerpt(s, dollar)}' (use :-, -, :?, ?, :+ or +)`);
  const [argument, end] = parseWord(s, i + operator.length, true);
  if (end >= s.length) throw new SyntaxProblem(column, `'\${${name}${operator}…' is not closed`);
  return [{ kind: 'variable', name, column, operator, argument }, end + 1];
}

function excerpt(s: string, from: number): string {
  const close = s.indexOf('}', from);
  const text = close < 0 ? s.slice(from) : s.slice(from, close + 1);
  return text.length > 40 ? `${text.slice(0, 39)}…` : text;
}

function evaluate(parts: Part[], lookup: Lookup, unset: Set<string>): string | TemplateProblem {
  let out = '';
  for (const part of parts) {
    if (part.kind === 'text') {
      out += part.text;
      continue;
    }
    const value = lookup(part.name);
    const isSet = value !== undefined;
    const nonEmpty = isSet && value !== '';
    const argument = () => evaluate(part.argument, lookup, unset);
    let piece: string | TemplateProblem;
    switch (part.operator) {
      case undefined:
        if (!isSet) unset.add(part.name);
        piece = value ?? '';
        break;
      case ':-': piece = nonEmpty ? value : argument(); break;
      case '-': piece = isSet ? value : argument(); break;
      case ':+': piece = nonEmpty ? argument() : (value ?? ''); break;
      case '+': piece = isSet ? argument() : ''; break;
      case ':?':
      case '?': {
        const ok = part.operator === ':?' ? nonEmpty : isSet;
        if (ok) {
          piece = value ?? '';
          break;
        }
        const message = argument();
        if (typeof message !== 'string') return message;
        return { kind: 'required', column: part.column, variable: part.name, message };
      }
    }
    if (typeof piece !== 'string') return piece;
    out += piece;
  }
  return out;
}
